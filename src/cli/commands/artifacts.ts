import { existsSync } from "node:fs";
import path from "node:path";
import { defineCommand, stringOption, type ParsedArgs } from "../command.js";
import { UsageError } from "../../errors.js";
import { catalogState } from "../../pipeline/catalog.js";
import { ArtifactRegistry, CATALOG_FILE } from "../../prototypes/registry.js";
import { loadPipelineArg } from "../pipeline-arg.js";

/**
 * `prolearn artifacts list|show|promote|verify|export`: the prototype-space registry in a
 * workdir's catalog. The workdir comes from --workdir or from a pipeline file (--pipeline).
 */
const workdirOptions = {
  workdir: { type: "string" as const, valueName: "DIR", description: "workdir holding catalog.sqlite (default: .prolearn, or the pipeline's)" },
  pipeline: { type: "string" as const, valueName: "FILE", description: "pipeline file whose workdir to use" },
  json: { type: "boolean" as const, description: "machine output (JSON) on stdout", default: false },
};

async function openRegistry(args: ParsedArgs): Promise<ArtifactRegistry> {
  return openExisting(await registryWorkdir(args));
}

/** Only runs create a catalog: a mistyped --workdir must not leave an empty one behind. */
function openExisting(workdir: string): ArtifactRegistry {
  if (catalogState(workdir).state === "absent") {
    throw new UsageError(`no catalog in ${workdir} (${CATALOG_FILE} is missing)`, {
      hint: "pass the workdir a pipeline ran in (--workdir DIR), or the pipeline file (--pipeline FILE)",
    });
  }
  return ArtifactRegistry.open(workdir);
}

async function registryWorkdir(args: ParsedArgs, pipelineFile = stringOption(args, "pipeline")): Promise<string> {
  return path.resolve(stringOption(args, "workdir") ?? (pipelineFile ? (await loadPipelineArg(pipelineFile)).workdir : ".prolearn"));
}

/** Every other command takes a pipeline file where this one takes a name: accept the file too. */
function looksLikePipelineFile(value: string | undefined): value is string {
  return value !== undefined && /\.(ya?ml|json)$/i.test(value) && existsSync(value);
}

function write(io: { stdout: NodeJS.WritableStream }, value: unknown) {
  io.stdout.write(JSON.stringify(value, null, 2) + "\n");
}

export const list = defineCommand({
  name: "artifacts list",
  summary: "List published prototype spaces: name, version, digest, aliases",
  positionals: [{ name: "name", description: "only this pipeline name (or a pipeline file: its name, in its workdir)" }],
  options: workdirOptions,
  async run(args, io) {
    let name = args.positionals[0];
    let workdir: string;
    if (looksLikePipelineFile(name)) {
      const pipeline = await loadPipelineArg(name);
      workdir = stringOption(args, "workdir") ? await registryWorkdir(args) : pipeline.workdir;
      name = pipeline.name;
    } else workdir = await registryWorkdir(args);
    const registry = openExisting(workdir);
    try {
      const versions = registry.list(name);
      if (args.options.json)
        write(
          io,
          versions.map(({ manifest, ...v }) => ({ ...v, prototypes: manifest.lineage.counts.prototypes })),
        );
      else {
        if (!versions.length) {
          const names = [...new Set(registry.list().map((v) => v.name))];
          io.stderr.write(
            `no artifacts${name ? ` named "${name}"` : ""} registered in ${workdir}${names.length ? ` (registered: ${names.join(", ")})` : ""}\n`,
          );
        }
        for (const v of versions)
          io.stdout.write(
            `${v.name}@${v.version}  ${v.digest.slice(0, 12)}  ${v.created}  ${v.manifest.lineage.counts.prototypes ?? "?"} prototypes${v.aliases.length ? `  [${v.aliases.join(", ")}]` : ""}\n`,
          );
      }
      return 0;
    } finally {
      registry.close();
    }
  },
});

export const show = defineCommand({
  name: "artifacts show",
  summary: "Show one artifact's lineage manifest, path and alias history",
  positionals: [{ name: "ref", description: "NAME, NAME@VERSION, NAME@ALIAS or a digest prefix", required: true }],
  options: workdirOptions,
  async run(args, io) {
    const registry = await openRegistry(args);
    try {
      const v = registry.resolve(args.positionals[0]!);
      write(io, {
        name: v.name,
        version: v.version,
        digest: v.digest,
        path: v.path,
        created: v.created,
        aliases: v.aliases,
        aliasHistory: registry.aliasHistory(v.name),
        manifest: v.manifest,
      });
      return 0;
    } finally {
      registry.close();
    }
  },
});

export const promote = defineCommand({
  name: "artifacts promote",
  summary: "Point an alias (e.g. production) at NAME@VERSION; the move is recorded in the alias history",
  positionals: [{ name: "ref", description: "NAME@VERSION (or NAME@ALIAS)", required: true }],
  options: { ...workdirOptions, alias: { type: "string", valueName: "ALIAS", description: "alias to set, e.g. production" } },
  async run(args, io) {
    const alias = stringOption(args, "alias");
    if (!alias) throw new UsageError("missing --alias", { hint: "e.g. prolearn artifacts promote qata@3 --alias production" });
    const registry = await openRegistry(args);
    try {
      const event = registry.promote(args.positionals[0]!, alias);
      if (args.options.json) write(io, event);
      else io.stderr.write(`${event.name}@${alias} -> version ${event.version}${event.previousVersion !== null ? ` (was ${event.previousVersion})` : ""}\n`);
      return 0;
    } finally {
      registry.close();
    }
  },
});

export const verify = defineCommand({
  name: "artifacts verify",
  summary: "Recompute the digests of published artifacts and report any tampering (exit 1 if any)",
  positionals: [{ name: "ref", description: "one artifact (default: all)" }],
  options: workdirOptions,
  async run(args, io) {
    const registry = await openRegistry(args);
    try {
      const reports = await registry.verify(args.positionals[0]);
      if (args.options.json) write(io, reports);
      else {
        for (const r of reports) {
          io.stdout.write(`${r.ok ? "ok      " : "TAMPERED"} ${r.name}@${r.version}  ${r.dir}\n`);
          for (const p of r.problems) io.stdout.write(`    ${p}\n`);
        }
        if (!reports.length) io.stderr.write("no artifacts registered\n");
      }
      return reports.every((r) => r.ok) ? 0 : 1;
    } finally {
      registry.close();
    }
  },
});

export const exportCommand = defineCommand({
  name: "artifacts export",
  summary: "Write Q.npy, R.npy, prototypes.parquet and manifest.json to a folder, for other programs",
  positionals: [
    { name: "ref", description: "NAME, NAME@VERSION or NAME@ALIAS", required: true },
    { name: "dir", description: "new (or empty) folder to write", required: true },
  ],
  options: workdirOptions,
  async run(args, io) {
    const registry = await openRegistry(args);
    try {
      const result = await registry.export(args.positionals[0]!, path.resolve(args.positionals[1]!));
      if (args.options.json)
        write(io, { dir: result.dir, files: result.files, name: result.version.name, version: result.version.version, digest: result.version.digest });
      else io.stdout.write(`${result.dir}\n`);
      return 0;
    } finally {
      registry.close();
    }
  },
});
