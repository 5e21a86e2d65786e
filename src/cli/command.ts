import { parseArgs } from "node:util";
import { UsageError, didYouMean } from "../errors.js";

export interface OptionSpec {
  /** "number" options are read as text and checked to be finite numbers before the command runs. */
  type: "string" | "number" | "boolean";
  /** The only values a string option takes; anything else is refused with a did-you-mean. */
  choices?: readonly string[];
  description: string;
  /** Shown in help; also applied when the option is absent. */
  default?: string | boolean;
  multiple?: boolean;
  short?: string;
  /** Placeholder in help, e.g. "STAGE". */
  valueName?: string;
}

export interface PositionalSpec {
  name: string;
  description: string;
  required?: boolean;
  variadic?: boolean;
}

/** Where a command writes: human text to stderr, machine output (JSON, paths) to stdout. */
export interface CliIO {
  stdout: NodeJS.WritableStream;
  stderr: NodeJS.WritableStream & { isTTY?: boolean; columns?: number };
  /** True when progress bars may redraw (stderr is a TTY and not in CI). */
  interactive: boolean;
}

export interface ParsedArgs {
  positionals: string[];
  options: Record<string, string | boolean | string[] | undefined>;
}

export interface CommandSpec {
  /** Words that select the command, e.g. "run" or "cluster hdbscan". */
  name: string;
  summary: string;
  /** Extra paragraphs shown by `prolearn help <command>`. */
  details?: string;
  positionals: PositionalSpec[];
  options: Record<string, OptionSpec>;
  /** Returns the exit code (0 when omitted). Throw ProlearnError subclasses for failures. */
  run(args: ParsedArgs, io: CliIO): Promise<number | void>;
}

export function defineCommand(spec: CommandSpec): CommandSpec {
  return spec;
}

export function parseCommandArgs(spec: CommandSpec, argv: string[]): ParsedArgs {
  const options: Record<string, { type: "string" | "boolean"; multiple?: boolean; short?: string }> = {};
  for (const [name, o] of Object.entries(spec.options)) {
    options[name] = { type: o.type === "boolean" ? "boolean" : "string", ...(o.multiple ? { multiple: true } : {}), ...(o.short ? { short: o.short } : {}) };
  }
  let parsed: ReturnType<typeof parseArgs>;
  try {
    parsed = parseArgs({ args: argv, options, allowPositionals: true, strict: true });
  } catch (error) {
    const message = (error as Error).message;
    const unknown = /Unknown option '(-{1,2}[^']+)'/.exec(message)?.[1];
    const suggestion = unknown ? didYouMean(unknown.replace(/^-+/, ""), Object.keys(spec.options)) : undefined;
    throw new UsageError(`prolearn ${spec.name}: ${message.split(". ")[0]}`, {
      hint: suggestion ? `did you mean --${suggestion}? (prolearn help ${spec.name})` : `see prolearn help ${spec.name}`,
    });
  }
  const values = parsed.values as Record<string, string | boolean | string[] | undefined>;
  for (const [name, o] of Object.entries(spec.options)) if (values[name] === undefined && o.default !== undefined) values[name] = o.default;
  for (const [name, o] of Object.entries(spec.options)) {
    const given = values[name];
    for (const value of Array.isArray(given) ? given : typeof given === "string" ? [given] : []) {
      if (o.type === "number" && (value.trim() === "" || !Number.isFinite(Number(value)))) {
        throw new UsageError(`prolearn ${spec.name}: --${name} expects a number, got "${value}"`, { hint: `see prolearn help ${spec.name}` });
      }
      if (o.choices && !o.choices.includes(value)) {
        const suggestion = didYouMean(value, o.choices);
        throw new UsageError(`prolearn ${spec.name}: --${name} must be one of ${o.choices.join(", ")}, got "${value}"`, {
          hint: suggestion ? `did you mean --${name} ${suggestion}?` : `see prolearn help ${spec.name}`,
        });
      }
    }
  }
  const required = spec.positionals.filter((p) => p.required);
  if (parsed.positionals.length < required.length) {
    throw new UsageError(`prolearn ${spec.name}: missing <${required[parsed.positionals.length]!.name}>`, { hint: `usage: ${usageLine(spec)}` });
  }
  const variadic = spec.positionals.some((p) => p.variadic);
  if (!variadic && parsed.positionals.length > spec.positionals.length) {
    throw new UsageError(`prolearn ${spec.name}: unexpected argument "${parsed.positionals[spec.positionals.length]}"`, { hint: `usage: ${usageLine(spec)}` });
  }
  return { positionals: parsed.positionals, options: values };
}

export function usageLine(spec: CommandSpec): string {
  const pos = spec.positionals.map((p) => (p.required ? `<${p.name}${p.variadic ? "..." : ""}>` : `[${p.name}${p.variadic ? "..." : ""}]`));
  return `prolearn ${spec.name} ${pos.join(" ")}${Object.keys(spec.options).length ? " [options]" : ""}`.replace(/\s+/g, " ").trim();
}

export function commandHelp(spec: CommandSpec): string {
  const lines = [`Usage: ${usageLine(spec)}`, "", spec.summary];
  if (spec.details) lines.push("", spec.details);
  if (spec.positionals.length) {
    lines.push("", "Arguments:");
    for (const p of spec.positionals) lines.push(`  ${p.name.padEnd(24)} ${p.description}`);
  }
  if (Object.keys(spec.options).length) {
    lines.push("", "Options:");
    for (const [name, o] of Object.entries(spec.options)) {
      const flag = `${o.short ? `-${o.short}, ` : ""}--${name}${o.type !== "boolean" ? ` <${o.valueName ?? "value"}>` : ""}`;
      const meta = [
        o.choices ? o.choices.join(" | ") : o.type,
        o.default !== undefined ? `default: ${String(o.default)}` : undefined,
        o.multiple ? "repeatable" : undefined,
      ]
        .filter(Boolean)
        .join(", ");
      lines.push(`  ${flag.padEnd(30)} ${o.description} (${meta})`);
    }
  }
  return lines.join("\n");
}

/** Reads a string option, throwing a UsageError if it is required and absent. */
export function stringOption(args: ParsedArgs, name: string, required: true): string;
export function stringOption(args: ParsedArgs, name: string, required?: false): string | undefined;
export function stringOption(args: ParsedArgs, name: string, required = false): string | undefined {
  const value = args.options[name];
  if (Array.isArray(value)) return value[value.length - 1];
  if (typeof value === "string") return value;
  if (required) throw new UsageError(`missing required option --${name}`);
  return undefined;
}

export function numberOption(args: ParsedArgs, name: string, fallback?: number): number | undefined {
  const raw = stringOption(args, name);
  if (raw === undefined) return fallback;
  const value = Number(raw);
  if (!Number.isFinite(value)) throw new UsageError(`--${name} expects a number, got "${raw}"`);
  return value;
}
