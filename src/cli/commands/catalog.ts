import { existsSync, statSync } from "node:fs";
import path from "node:path";
import { UsageError } from "../../errors.js";
import { defineCommand, stringOption } from "../command.js";
import { salvageCatalog } from "../../pipeline/catalog-rebuild.js";
import { ArtifactRegistry } from "../../prototypes/registry.js";
import { loadPipelineArg } from "../pipeline-arg.js";

/**
 * `prolearn catalog rebuild`: the recovery for a lost or damaged catalog.sqlite. The old file is
 * kept aside, readable rows are salvaged, and the artifact registry is rebuilt from the artifact
 * manifests in the workdir. Published stage outputs need no catalog to be reused: the next run
 * finds them in the store by cache key.
 */
export const rebuild = defineCommand({
  name: "catalog rebuild",
  summary: "Recover a lost or damaged catalog: keep it aside, salvage readable rows, re-register artifacts from their manifests",
  details:
    "The old catalog.sqlite (and its -wal / -shm files) is renamed to catalog.sqlite.damaged-<time>, never deleted. Rows still readable from it (runs, stage runs, outputs, artifact versions and aliases) are copied into a fresh catalog; then every verified artifact folder under artifacts/prototypes/ that is not registered is registered again under the pipeline name in its manifest. Aliases and run history that could not be read are gone: re-promote aliases with `prolearn artifacts promote`. Exit 0 when the catalog was rebuilt, 1 when an artifact folder failed verification (it is listed, not registered).",
  positionals: [{ name: "pipeline", description: "pipeline file whose workdir to rebuild (or --workdir)" }],
  options: {
    workdir: { type: "string", valueName: "DIR", description: "workdir holding catalog.sqlite (default: .prolearn, or the pipeline's)" },
    json: { type: "boolean", description: "machine output (JSON) on stdout", default: false },
  },
  async run(args, io) {
    const pipelineFile = args.positionals[0];
    const workdir = path.resolve(stringOption(args, "workdir") ?? (pipelineFile ? (await loadPipelineArg(pipelineFile)).workdir : ".prolearn"));
    if (!existsSync(workdir) || !statSync(workdir).isDirectory()) {
      throw new UsageError(`no workdir ${workdir}`, { hint: "pass the workdir a pipeline ran in (--workdir DIR), or the pipeline file" });
    }
    const { catalog, report } = salvageCatalog(workdir);
    let result: Awaited<ReturnType<ArtifactRegistry["registerFromManifests"]>>;
    try {
      const registry = new ArtifactRegistry(catalog.db, workdir);
      result = await registry.registerFromManifests();
    } finally {
      catalog.close();
    }
    const summary = {
      workdir,
      keptAs: report.keptAs,
      salvaged: report.salvaged,
      unreadable: report.unreadable,
      registered: result.registered,
      skipped: result.skipped,
    };
    if (args.options.json) io.stdout.write(JSON.stringify(summary, null, 2) + "\n");
    else {
      const lines = [`rebuilt the catalog of ${workdir}`];
      lines.push(report.keptAs ? `  the old catalog is kept as ${report.keptAs}` : "  there was no catalog file; a new one was created");
      const copied = Object.entries(report.salvaged).filter(([, n]) => n > 0);
      if (report.keptAs) lines.push(`  salvaged: ${copied.length ? copied.map(([t, n]) => `${n} ${t}`).join(", ") : "no rows"}`);
      for (const [table, why] of Object.entries(report.unreadable)) lines.push(`  unreadable: ${table}: ${why}`);
      lines.push(
        `  registered again from manifests: ${result.registered.length ? result.registered.map((r) => `${r.name}@${r.version} (${r.digest.slice(0, 12)})`).join(", ") : "none"}`,
      );
      for (const s of result.skipped) lines.push(`  NOT registered (failed verification): ${s.dir}\n      ${s.problems.join("\n      ")}`);
      if (!report.salvaged.artifact_aliases)
        lines.push("  aliases were not recovered: set them again with `prolearn artifacts promote NAME@VERSION --alias ALIAS`");
      io.stderr.write(lines.join("\n") + "\n");
    }
    return result.skipped.length ? 1 : 0;
  },
});
