import { existsSync, readdirSync, readFileSync, realpathSync, statSync } from "node:fs";
import path from "node:path";
import { z } from "zod";
import { LineCounter, parseDocument, isMap, isScalar, type Node as YamlNode, type Pair } from "yaml";
import { PipelineSpecError, UsageError, didYouMean, type SpecIssue } from "../errors.js";
import { inputStages, type StageDefinition } from "./stage.js";

export const DATASET_KINDS = ["qata-cov19", "mosmeddata-plus", "kvasir-seg"] as const;
export type DatasetKind = (typeof DATASET_KINDS)[number];

/** On-disk layouts in the wild (METHOD.md §6); `auto` detects one and says which. */
export const DATASET_LAYOUTS = ["auto", "kaggle", "lvit", "lvit-csv", "guideseg", "sgseg", "prolearn", "kvasir"] as const;
export type DatasetLayout = (typeof DATASET_LAYOUTS)[number];

export const datasetSchema = z
  .strictObject({
    kind: z.enum(DATASET_KINDS).describe("Which dataset this is."),
    root: z.string().min(1).describe("Dataset folder; relative paths resolve from the pipeline file."),
    layout: z.enum(DATASET_LAYOUTS).default("auto").describe("On-disk layout; `auto` detects it."),
    reports: z.string().min(1).optional().describe("A file or folder of reports, for layouts that keep them apart (Kvasir MedVLSM JSON, a CSV)."),
    reportKey: z.string().min(1).default("p6").describe("Kvasir MedVLSM prompt key used as the report."),
    textAvailability: z.number().min(0).max(1).default(1).describe("Fraction of the training split that keeps its report (0..1)."),
    seed: z.number().int().min(0).default(42).describe("Seed for splits, report subsets and training."),
  })
  .describe("The dataset to ingest.");

export const scheduleSchema = z.union([
  z.string().min(1).describe("A cron expression (5 or 6 fields), in UTC."),
  z.strictObject({
    cron: z.string().min(1).describe("A cron expression (5 or 6 fields)."),
    timezone: z.string().default("UTC").describe("IANA time zone the cron expression is read in."),
    overlap: z.enum(["skip", "queue"]).default("skip").describe("What to do when the previous run is still going."),
  }),
]);

export type StageRegistry = ReadonlyMap<string, StageDefinition>;

/** The one source of the pipeline schema: the TS types and schemas/pipeline.schema.json derive from it. */
export function buildPipelineSchema(registry: StageRegistry) {
  const stageShape: Record<string, z.ZodType> = {};
  for (const [name, stage] of registry) stageShape[name] = (stage.params as z.ZodType).optional().describe(stage.description);
  return z
    .strictObject({
      $schema: z.string().optional(),
      name: z
        .string()
        .regex(/^[A-Za-z0-9][A-Za-z0-9._-]*$/, "use letters, digits, '.', '_' or '-'")
        .describe("Pipeline name; versions of its artifacts are counted per name."),
      workdir: z.string().optional().describe("Where caches, the catalog and outputs live (default: .prolearn next to the pipeline file)."),
      dataset: datasetSchema,
      stages: z.strictObject(stageShape).describe("Stage name -> its params. Only the stages listed run."),
      schedule: scheduleSchema.optional().describe("Run this pipeline on a schedule (see `prolearn scheduler`)."),
    })
    .describe("A prolearn pipeline.");
}

/**
 * What a pipeline file holds, before validation. `Stages` is the stage-name -> params-input map;
 * for the built-in registry it is derived from it (src/stages.ts: `PipelineInput`), here it stays
 * open so a custom registry validates the same way.
 */
export type PipelineInput<Stages = Record<string, unknown>> = {
  name: string;
  workdir?: string;
  dataset: z.input<typeof datasetSchema>;
  stages: Stages;
  schedule?: z.input<typeof scheduleSchema>;
};

export interface ResolvedSchedule {
  cron: string;
  timezone: string;
  overlap: "skip" | "queue";
}

export interface ResolvedPipeline {
  name: string;
  /** Absolute path of the pipeline file, when it came from one. */
  file?: string;
  /** Folder relative paths were resolved from. */
  baseDir: string;
  workdir: string;
  dataset: Omit<z.output<typeof datasetSchema>, "root" | "reports"> & { root: string; reports?: string };
  /** Stage name -> resolved params, in the registry's (topological) order. */
  stages: Record<string, unknown>;
  schedule?: ResolvedSchedule;
}

/** Typed helper for pipelines written in TypeScript; validated the same way as YAML files. */
export function definePipeline<Stages = Record<string, unknown>>(input: PipelineInput<Stages>): PipelineInput<Stages> {
  return input;
}

/** Validates a pipeline object and resolves paths and defaults. */
export function resolvePipeline(
  input: unknown,
  registry: StageRegistry,
  options: { file?: string; baseDir?: string; lineOf?: (keyPath: (string | number)[]) => number | undefined } = {},
): ResolvedPipeline {
  const schema = buildPipelineSchema(registry);
  const parsed = schema.safeParse(input);
  const file = options.file ? path.resolve(options.file) : undefined;
  if (!parsed.success) {
    throw new PipelineSpecError(
      file,
      parsed.error.issues.flatMap((issue) => toSpecIssues(issue, registry, options.lineOf)),
    );
  }
  const value = parsed.data;
  const baseDir = options.baseDir ?? (file ? path.dirname(file) : process.cwd());
  const stages: Record<string, unknown> = {};
  const issues: SpecIssue[] = [];
  for (const [name, stage] of registry) {
    const params = (value.stages as Record<string, unknown>)[name];
    if (params === undefined) continue;
    stages[name] = params;
    for (const dep of inputStages(stage, "required")) {
      if (!(dep in (value.stages as Record<string, unknown>))) {
        issues.push({
          keyPath: `stages.${name}`,
          message: `stage ${name} needs stage ${dep}, which is not in the pipeline`,
          hint: `add \`${dep}: {}\` under stages`,
          line: options.lineOf?.(["stages", name]),
        });
      }
    }
  }
  const dataset = value.dataset;
  const workdir = path.resolve(baseDir, value.workdir ?? ".prolearn");
  const root = path.resolve(baseDir, dataset.root);
  issues.push(...workdirIssues(workdir, root, value.workdir !== undefined, options.lineOf));
  if (issues.length) throw new PipelineSpecError(file, issues);
  return {
    name: value.name,
    file,
    baseDir,
    workdir,
    dataset: { ...dataset, root, reports: dataset.reports ? path.resolve(baseDir, dataset.reports) : undefined },
    stages,
    schedule:
      value.schedule === undefined
        ? undefined
        : typeof value.schedule === "string"
          ? { cron: value.schedule, timezone: "UTC", overlap: "skip" }
          : value.schedule,
  };
}

/**
 * The workdir must be a folder (or not exist yet) and must not lie inside the dataset root:
 * ingest would read the workdir's own files as dataset files (and quarantine them), and every
 * run would change the dataset's digest.
 */
function workdirIssues(
  workdir: string,
  root: string,
  explicit: boolean,
  lineOf: ((keyPath: (string | number)[]) => number | undefined) | undefined,
): SpecIssue[] {
  const keyPath = explicit ? "workdir" : "";
  const line = explicit ? lineOf?.(["workdir"]) : undefined;
  const where = explicit ? "" : " (the default: .prolearn next to the pipeline file)";
  if (existsSync(workdir) && !statSync(workdir).isDirectory()) {
    return [
      { keyPath, line, message: `workdir ${workdir}${where} exists and is not a folder`, hint: "point workdir at a folder (it is created when missing)" },
    ];
  }
  const inside = (child: string, parent: string) => {
    const relative = path.relative(parent, child);
    return relative === "" || (!relative.startsWith("..") && !path.isAbsolute(relative));
  };
  if (inside(workdir, root) || inside(realPathOfNearest(workdir), realPathOfNearest(root))) {
    return [
      {
        keyPath,
        line,
        message: `workdir ${workdir}${where} is inside the dataset root ${root}: ingest would read the workdir's own files as dataset files`,
        hint: "set workdir to a folder outside dataset.root, e.g. next to it",
      },
    ];
  }
  return [];
}

/** The real path of a path's nearest existing ancestor, with the rest appended (symbolic links resolved). */
function realPathOfNearest(target: string): string {
  let existing = target;
  const rest: string[] = [];
  while (!existsSync(existing)) {
    const parent = path.dirname(existing);
    if (parent === existing) return target;
    rest.unshift(path.basename(existing));
    existing = parent;
  }
  try {
    return path.join(realpathSync(existing), ...rest);
  } catch {
    return target;
  }
}

/** Reads and validates a YAML (or JSON) pipeline file; problems name the line of the key. */
export function loadPipelineFile(file: string, registry: StageRegistry, overrides: Record<string, unknown> = {}): ResolvedPipeline {
  const absolute = path.resolve(file);
  let text: string;
  try {
    text = readFileSync(absolute, "utf8");
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === "ENOENT") throw missingPipelineFile(file, absolute);
    if (code === "EISDIR") throw new UsageError(`${file} is a folder, not a pipeline file`, { hint: "pass a .yaml, .json, .js or .ts pipeline file" });
    throw new PipelineSpecError(absolute, [{ keyPath: "", message: `cannot read the file: ${(error as Error).message}` }]);
  }
  const lineCounter = new LineCounter();
  // The yaml package's own duplicate-key check compares every key with every other (quadratic:
  // minutes for a map of 64k keys); duplicates are found below with one pass per map instead.
  const doc = parseDocument(text, { lineCounter, prettyErrors: false, uniqueKeys: false });
  if (doc.errors.length) {
    throw new PipelineSpecError(
      absolute,
      doc.errors.map((e) => ({
        keyPath: "",
        line: e.linePos?.[0]?.line ?? lineCounter.linePos(e.pos[0]).line,
        message: `YAML syntax: ${e.message.split("\n")[0]}`,
      })),
    );
  }
  const duplicates = duplicateKeys(doc.contents as YamlNode | null, [], lineCounter);
  if (duplicates.length) throw new PipelineSpecError(absolute, duplicates);
  let data: unknown;
  try {
    // The yaml package refuses documents whose aliases expand past a limit (a "billion laughs"
    // bomb) with a ReferenceError: a problem of the file, not of prolearn.
    data = doc.toJS({ maxAliasCount: 1000 }) as unknown;
  } catch (error) {
    throw new PipelineSpecError(absolute, [
      { keyPath: "", message: `YAML: ${(error as Error).message}`, hint: "aliases (*name) may repeat a node a bounded number of times; write the values out" },
    ]);
  }
  for (const [key, value] of Object.entries(overrides)) setPath(data, key.split("."), value);
  // Key -> pair per YAML map, built once per map on first lookup: a file with many unknown keys
  // is answered in linear time (a search per key made it quadratic).
  const pairsByMap = new Map<YamlNode, Map<string, Pair>>();
  const pairOf = (map: YamlNode & { items: Pair[] }, key: string): Pair | undefined => {
    let index = pairsByMap.get(map);
    if (!index) {
      index = new Map();
      for (const p of map.items) if (isScalar(p.key) && !index.has(String(p.key.value))) index.set(String(p.key.value), p);
      pairsByMap.set(map, index);
    }
    return index.get(key);
  };
  const lineOf = (keyPath: (string | number)[]) => {
    let node: YamlNode | null | undefined = doc.contents as YamlNode | null;
    let line: number | undefined;
    for (const key of keyPath) {
      if (!isMap(node)) break;
      const pair = pairOf(node as YamlNode & { items: Pair[] }, String(key));
      if (!pair) break;
      const keyNode = pair.key as YamlNode;
      if (keyNode.range) line = lineCounter.linePos(keyNode.range[0]).line;
      node = pair.value as YamlNode | null;
    }
    return line;
  };
  return resolvePipeline(data, registry, { file: absolute, lineOf });
}

/** Keys given twice in one YAML map, anywhere in the document; one pass over each map. */
function duplicateKeys(node: YamlNode | null | undefined, keyPath: string[], lineCounter: LineCounter): SpecIssue[] {
  const issues: SpecIssue[] = [];
  const visit = (current: unknown, at: string[]) => {
    if (isMap(current)) {
      const seen = new Set<string>();
      for (const pair of current.items) {
        const key = isScalar(pair.key) ? String(pair.key.value) : undefined;
        if (key !== undefined) {
          if (seen.has(key)) {
            const range = (pair.key as YamlNode).range;
            issues.push({
              keyPath: [...at, key].join("."),
              line: range ? lineCounter.linePos(range[0]).line : undefined,
              message: `duplicate key "${key}"`,
              hint: "a key may appear once per map",
            });
          }
          seen.add(key);
        }
        visit(pair.value, key === undefined ? at : [...at, key]);
      }
    } else if (current && typeof current === "object" && "items" in current && Array.isArray((current as { items: unknown[] }).items)) {
      (current as { items: unknown[] }).items.forEach((item, i) => visit(item, [...at, String(i)]));
    }
  };
  visit(node, keyPath);
  return issues;
}

/** Keys that reach an object's prototype instead of a property: never set through --set. */
const FORBIDDEN_KEYS = new Set(["__proto__", "constructor", "prototype"]);

/** Sets a dotted key (e.g. from `--set dataset.textAvailability=0.1`) on a plain object. */
export function setPath(target: unknown, keys: string[], value: unknown): void {
  const dotted = keys.join(".");
  for (const key of keys) {
    if (key === "") throw new UsageError(`--set ${dotted}: empty key`, { hint: "keys are dotted names, e.g. --set dataset.textAvailability=0.1" });
    if (FORBIDDEN_KEYS.has(key))
      throw new UsageError(`--set ${dotted}: key "${key}" is not allowed`, { hint: "pipeline keys are names like dataset.seed or stages.embed.dim" });
  }
  if (typeof target !== "object" || target === null) return;
  let node = target as Record<string, unknown>;
  for (const key of keys.slice(0, -1)) {
    // Only own properties are walked into: an inherited one is never written through.
    if (!Object.hasOwn(node, key) || typeof node[key] !== "object" || node[key] === null) node[key] = {};
    node = node[key] as Record<string, unknown>;
  }
  node[keys[keys.length - 1]!] = value;
}

function toSpecIssues(
  issue: z.core.$ZodIssue,
  registry: StageRegistry,
  lineOf: ((keyPath: (string | number)[]) => number | undefined) | undefined,
): SpecIssue[] {
  const basePath = issue.path.map((p) => (typeof p === "symbol" ? String(p) : p));
  if (issue.code === "unrecognized_keys") {
    return issue.keys.map((key) => {
      const keyPath = [...basePath, key];
      const candidates = knownKeysAt(basePath, registry);
      const suggestion = didYouMean(key, candidates);
      return {
        keyPath: keyPath.join("."),
        line: lineOf?.(keyPath),
        message: `unknown key "${key}"`,
        hint: suggestion ? `did you mean "${suggestion}"?` : candidates.length ? `known keys: ${candidates.join(", ")}` : undefined,
      };
    });
  }
  let message = issue.message;
  if (issue.code === "invalid_type" && issue.message.includes("received undefined")) message = `missing required key (${issue.expected})`;
  return [{ keyPath: basePath.join("."), line: lineOf?.(basePath) ?? lineOf?.(basePath.slice(0, -1)), message }];
}

function knownKeysAt(keyPath: (string | number)[], registry: StageRegistry): string[] {
  const root = ["name", "workdir", "dataset", "stages", "schedule"];
  if (keyPath.length === 0) return root;
  if (keyPath.length === 1 && keyPath[0] === "dataset") return Object.keys(datasetSchema.shape);
  if (keyPath.length === 1 && keyPath[0] === "stages") return [...registry.keys()];
  if (keyPath.length === 2 && keyPath[0] === "stages") {
    const stage = registry.get(String(keyPath[1]));
    const shape = (stage?.params as unknown as { shape?: Record<string, unknown> } | undefined)?.shape;
    return shape ? Object.keys(shape) : [];
  }
  return [];
}

/** "the file does not exist", with the pipeline files of that folder (or of pipelines/) as a hint. */
export function missingPipelineFile(file: string, absolute = path.resolve(file)): UsageError {
  const dir = path.dirname(absolute);
  const nearby = (existsSync(dir) ? readdirSync(dir) : []).filter((name) => /\.(ya?ml|json|m?js|ts)$/.test(name));
  const suggestion = didYouMean(path.basename(file), nearby);
  const hint = suggestion
    ? `did you mean ${path.join(path.dirname(file), suggestion)}?`
    : nearby.length
      ? `pipeline files in ${path.dirname(file)}: ${nearby.slice(0, 8).join(", ")}`
      : existsSync("pipelines")
        ? "the examples are in pipelines/ (e.g. pipelines/demo.yaml)"
        : "pass the path of a pipeline YAML/JSON file";
  return new UsageError(`pipeline file ${file} does not exist`, { hint });
}
