import { readdirSync } from "node:fs";
import path from "node:path";
import { defineCommand, stringOption } from "../command.js";
import { Catalog, requireCatalog } from "../../pipeline/catalog.js";
import { FileDigester } from "../../pipeline/file-digest.js";
import { DAMAGED_DIR, OutputStore } from "../../pipeline/store.js";
import { ArtifactRegistry } from "../../prototypes/registry.js";
import { loadPipelineArg } from "../pipeline-arg.js";

/**
 * `prolearn verify [<pipeline>]`: re-hashes every published output in the workdir's store (and
 * every registered artifact) against its manifest. Runs check sizes and, through the size+mtime
 * stat cache, hashes on every reuse; this command also finds a change that kept both (same size,
 * mtime put back). Damaged files are dropped from the stat cache, so the next run re-hashes them,
 * sees the damage and recomputes the output.
 */
export default defineCommand({
  name: "verify",
  summary: "Re-hash every published output and artifact in a workdir; exit 1 if any is damaged",
  details:
    "With a pipeline file: its workdir, only the stages of that pipeline. Each damaged output is named with what is wrong. Recovery: run the pipeline again (`prolearn run <pipeline>`): a damaged output is a cache miss, recomputed and published in its place; the damaged copy is moved to <workdir>/damaged/store/<stage>/. A tampered artifact: move its folder away and run again (see `prolearn artifacts verify`).",
  positionals: [{ name: "pipeline", description: "pipeline file (default: every output in --workdir)" }],
  options: {
    workdir: { type: "string", valueName: "DIR", description: "workdir to check when no pipeline is given", default: ".prolearn" },
    json: { type: "boolean", description: "machine output (JSON) on stdout", default: false },
  },
  async run(args, io) {
    const pipeline = args.positionals[0] ? await loadPipelineArg(args.positionals[0]) : undefined;
    const workdir = pipeline?.workdir ?? path.resolve(stringOption(args, "workdir")!);
    requireCatalog(workdir);
    const catalog = new Catalog(workdir);
    const digester = new FileDigester(catalog.fileStatCache());
    const outputs: { stage: string; cacheKey: string; ok: boolean; problems: string[] }[] = [];
    let artifacts: { name: string; version: number; ok: boolean; problems: string[] }[] = [];
    try {
      const store = new OutputStore(workdir, digester);
      const storeRoot = path.join(workdir, "store");
      const list = (dir: string) => {
        try {
          return readdirSync(dir)
            .filter((e) => !e.startsWith("."))
            .sort();
        } catch {
          return [];
        }
      };
      const stages = list(storeRoot).filter((stage) => !pipeline || stage in pipeline.stages);
      for (const stage of stages) {
        for (const cacheKey of list(path.join(storeRoot, stage))) {
          const entry = await store.check(stage, cacheKey, { full: true });
          if (entry.state === "damaged") {
            digester.forget(list(entry.dir).map((f) => path.join(entry.dir, f)));
            outputs.push({ stage, cacheKey, ok: false, problems: entry.problems });
          } else outputs.push({ stage, cacheKey, ok: true, problems: [] });
        }
      }
      const registry = new ArtifactRegistry(catalog.db, workdir);
      artifacts = (await registry.verify())
        .filter((r) => !pipeline || r.name === pipeline.name)
        .map((r) => ({ name: r.name, version: r.version, ok: r.ok, problems: r.problems }));
    } finally {
      catalog.close();
    }
    const damaged = outputs.filter((o) => !o.ok).length + artifacts.filter((a) => !a.ok).length;
    if (args.options.json) io.stdout.write(JSON.stringify({ workdir, ok: damaged === 0, outputs, artifacts }, null, 2) + "\n");
    else {
      const lines: string[] = [];
      for (const o of outputs) {
        lines.push(`${o.ok ? "ok      " : "DAMAGED "} ${o.stage}/${o.cacheKey}`);
        for (const p of o.problems) lines.push(`    ${p}`);
      }
      for (const a of artifacts) {
        lines.push(`${a.ok ? "ok      " : "TAMPERED"} artifact ${a.name}@${a.version}`);
        for (const p of a.problems) lines.push(`    ${p}`);
      }
      if (!outputs.length && !artifacts.length) lines.push(`nothing published in ${workdir}`);
      io.stdout.write(lines.join("\n") + "\n");
      if (damaged) {
        const run = pipeline?.file ? `prolearn run ${pipeline.file}` : "prolearn run <pipeline>";
        io.stderr.write(
          `${damaged} damaged: run the pipeline again (${run}); a damaged output is recomputed and its copy moved to ${path.join(workdir, DAMAGED_DIR, "store")}/` +
            `${artifacts.some((a) => !a.ok) ? "; a tampered artifact folder must be moved away first (it is never overwritten in place)" : ""}\n`,
        );
      } else
        io.stderr.write(
          `all ${outputs.length} output${outputs.length === 1 ? "" : "s"} and ${artifacts.length} artifact${artifacts.length === 1 ? "" : "s"} intact\n`,
        );
    }
    return damaged ? 1 : 0;
  },
});
