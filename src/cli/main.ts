#!/usr/bin/env node
import { COMMANDS } from "./commands/index.js";
import { commandHelp, parseCommandArgs, type CliIO } from "./command.js";
import { CatalogError, ProlearnError, UsageError, didYouMean } from "../errors.js";

export const EXIT_CODES_HELP = `Exit codes:
  0  success
  1  a stage failed, or data, a model, an artifact, the catalog or a service was unusable
     (\`verify\`: a published output is damaged)
  2  bad usage or an invalid pipeline file`;

function topHelp(): string {
  const names = Object.keys(COMMANDS);
  const width = Math.max(...names.map((n) => n.length), 10) + 2;
  return [
    "prolearn: medical segmentation datasets with partial reports -> Parquet, prototype spaces and ProLearn segmenters",
    "",
    "Usage: prolearn <command> [arguments] [options]",
    "",
    "Commands:",
    ...names.map((n) => `  ${n.padEnd(width)}${COMMANDS[n]!.summary}`),
    "",
    "Run `prolearn help <command>` (or `prolearn <command> --help`) for a command's arguments and options.",
    "",
    EXIT_CODES_HELP,
  ].join("\n");
}

/** Finds the longest command name that prefixes argv ("cluster hdbscan" before "cluster"). */
function matchCommand(argv: string[]): { name: string; rest: string[] } | undefined {
  for (let words = Math.min(3, argv.length); words >= 1; words--) {
    const name = argv.slice(0, words).join(" ");
    if (COMMANDS[name]) return { name, rest: argv.slice(words) };
  }
  return undefined;
}

export async function main(argv: string[], io: CliIO): Promise<number> {
  try {
    if (argv.length === 0 || argv[0] === "--help" || argv[0] === "-h") {
      io.stdout.write(topHelp() + "\n");
      return 0;
    }
    if (argv[0] === "--version" || argv[0] === "-V") {
      const { PACKAGE_VERSION } = await import("../version.js");
      io.stdout.write(PACKAGE_VERSION + "\n");
      return 0;
    }
    if (argv[0] === "help") {
      const target = matchCommand(argv.slice(1));
      if (!target) {
        io.stdout.write(topHelp() + "\n");
        return argv.length > 1 ? 2 : 0;
      }
      io.stdout.write(commandHelp(await COMMANDS[target.name]!.load()) + "\n");
      return 0;
    }
    const match = matchCommand(argv);
    if (!match) {
      const groups = Object.keys(COMMANDS).filter((n) => n.startsWith(argv[0] + " "));
      if (groups.length) {
        const subcommands = groups.map((n) => n.slice(argv[0]!.length + 1));
        const given = argv[1] && !argv[1].startsWith("-") ? argv[1] : undefined;
        if (given) {
          const suggestion = didYouMean(given, subcommands);
          throw new UsageError(`unknown subcommand "${argv[0]} ${given}"`, {
            hint: suggestion ? `did you mean "${argv[0]} ${suggestion}"?` : `one of: ${groups.join(", ")}`,
          });
        }
        throw new UsageError(`prolearn ${argv[0]} needs a subcommand`, { hint: `one of: ${groups.join(", ")}` });
      }
      const suggestion = didYouMean(
        argv[0]!,
        Object.keys(COMMANDS).map((n) => n.split(" ")[0]!),
      );
      throw new UsageError(`unknown command "${argv[0]}"`, { hint: suggestion ? `did you mean "${suggestion}"?` : "run prolearn --help" });
    }
    const spec = await COMMANDS[match.name]!.load();
    if (match.rest.includes("--help") || match.rest.includes("-h")) {
      io.stdout.write(commandHelp(spec) + "\n");
      return 0;
    }
    const args = parseCommandArgs(spec, match.rest);
    return (await spec.run(args, io)) ?? 0;
  } catch (error) {
    if (error instanceof ProlearnError) {
      io.stderr.write(`error: ${error.format()}\n`);
      return error.exitCode;
    }
    // Damage SQLite finds only when it reads a page (after the open-time checks passed).
    const sqliteCode = (error as { code?: unknown })?.code;
    if (typeof sqliteCode === "string" && /^SQLITE_(CORRUPT|NOTADB)/.test(sqliteCode)) {
      const damaged = new CatalogError(`the workdir's catalog is damaged (${sqliteCode}: ${(error as Error).message})`, {
        hint: "run `prolearn catalog rebuild --workdir DIR` (DIR: the pipeline's workdir): it keeps the damaged file aside, salvages readable rows and re-registers artifacts from their manifests",
      });
      io.stderr.write(`error: ${damaged.format()}\n`);
      return damaged.exitCode;
    }
    io.stderr.write(`internal error: ${(error as Error)?.stack ?? String(error)}\n`);
    return 1;
  }
}

const isEntry = process.argv[1] && import.meta.url === (await import("node:url")).pathToFileURL((await import("node:fs")).realpathSync(process.argv[1])).href;
if (isEntry) {
  const io: CliIO = { stdout: process.stdout, stderr: process.stderr, interactive: Boolean(process.stderr.isTTY) && !process.env.CI };
  const code = await main(process.argv.slice(2), io);
  process.exitCode = code;
}
