import { existsSync } from "node:fs";
import path from "node:path";
import { ArtifactError, UsageError } from "../../errors.js";
import { FILTERED_TABLE } from "../../filter/tables.js";
import { withTable } from "../../io/tables.js";
import { defineCommand, stringOption } from "../command.js";
import { loadPipelineArg } from "../pipeline-arg.js";

interface FilterRecord {
  id: string;
  report: string;
  filtered: string;
  tokens: string[];
  scores: number[];
  kept: boolean[];
  threshold: number;
}

/** Finds filtered.parquet: an explicit --file, else the latest filter output in the catalog. */
async function locate(args: { file?: string; pipeline?: string; workdir?: string }): Promise<string> {
  if (args.file) return path.resolve(args.file);
  let workdir = args.workdir ? path.resolve(args.workdir) : undefined;
  let pipelineName: string | undefined;
  if (args.pipeline) {
    const pipeline = await loadPipelineArg(args.pipeline);
    workdir ??= pipeline.workdir;
    pipelineName = pipeline.name;
  }
  if (!workdir) throw new UsageError("say where the filter output is", { hint: "give a pipeline file, --workdir DIR or --file filtered.parquet" });
  const { Catalog } = await import("../../pipeline/catalog.js");
  const catalog = new Catalog(workdir);
  try {
    const names = pipelineName ? [pipelineName] : [...new Set(catalog.runs({ limit: 1000 }).map((r) => r.pipeline))];
    for (const name of names) {
      const output = catalog.latestOutput(name, "filter");
      const file = output?.files["filtered.parquet"];
      if (file && existsSync(file)) return file;
    }
  } finally {
    catalog.close();
  }
  throw new ArtifactError(`no filter output found in ${workdir}`, { hint: "run a pipeline with a filter stage first (prolearn run <pipeline>)" });
}

/** Finds the sample's row by reading the id column only, then reads that one row. */
async function readRecord(file: string, id: string): Promise<FilterRecord> {
  return withTable(FILTERED_TABLE, file, async (reader) => {
    for await (const { offset, rows } of reader.slices(["id"])) {
      const index = rows.id.indexOf(id);
      if (index < 0) continue;
      const r = await reader.read(["report", "filtered_report", "tokens", "scores", "kept", "threshold"], { offset: offset + index, limit: 1 });
      return {
        id,
        report: r.report[0]!,
        filtered: r.filtered_report[0]!,
        tokens: r.tokens[0]!,
        scores: r.scores[0]!,
        kept: r.kept[0]!,
        threshold: r.threshold[0]!,
      };
    }
    throw new UsageError(`sample ${id} is not in ${file}`, { hint: "only training samples with an available report are filtered" });
  });
}

export function formatFilterRecord(r: FilterRecord): string {
  const width = Math.max(5, ...r.tokens.map((t) => t.length));
  const lines = [
    `${r.id}: ${r.kept.filter(Boolean).length}/${r.tokens.length} tokens kept (threshold ${r.threshold.toFixed(4)})`,
    `  report:   ${r.report}`,
    `  filtered: ${r.filtered}`,
    "",
    `  ${"token".padEnd(width)}  score   kept`,
  ];
  const max = Math.max(...r.scores.filter(Number.isFinite), 1e-9);
  r.tokens.forEach((t, i) => {
    const s = r.scores[i]!;
    const bar = Number.isFinite(s) ? "#".repeat(Math.round((s / max) * 20)) : "";
    lines.push(`  ${t.padEnd(width)}  ${Number.isFinite(s) ? s.toFixed(4) : "  -   "}  ${r.kept[i] ? "yes " : "no  "} ${bar}`);
  });
  return lines.join("\n");
}

export default defineCommand({
  name: "inspect filter",
  summary: "Show a report's tokens with their filter relevance scores and which were kept",
  details:
    "Reads the latest filter output of the pipeline (or of any pipeline in --workdir), or a given filtered.parquet. Human output on stderr; --json prints the record on stdout.",
  positionals: [
    { name: "id", description: "sample id (a training sample with an available report)", required: true },
    { name: "pipeline", description: "pipeline file whose latest filter output to read" },
  ],
  options: {
    workdir: { type: "string", valueName: "DIR", description: "workdir whose catalog to search (default: the pipeline's)" },
    file: { type: "string", valueName: "FILE", description: "read this filtered.parquet directly" },
    json: { type: "boolean", description: "print the record as JSON on stdout", default: false },
  },
  async run(args, io) {
    const file = await locate({ file: stringOption(args, "file"), pipeline: args.positionals[1], workdir: stringOption(args, "workdir") });
    const record = await readRecord(file, args.positionals[0]!);
    io.stderr.write(formatFilterRecord(record) + "\n");
    if (args.options.json) io.stdout.write(JSON.stringify(record, null, 2) + "\n");
  },
});
