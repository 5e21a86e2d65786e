import { readFileSync, writeFileSync } from "node:fs";
import { defineCommand, numberOption, stringOption } from "../command.js";
import { DataError, UsageError } from "../../errors.js";
import { readEmbeddingFile } from "../../io/tables.js";
import { hdbscan } from "../../prototypes/hdbscan.js";

/** One point per row, numeric columns; a first row with any non-number is a header. */
export function readPointsCsv(file: string): { data: Float32Array; n: number; dim: number } {
  const lines = readFileSync(file, "utf8")
    .split(/\r?\n/)
    .filter((l) => l.trim() !== "");
  if (lines.length === 0) throw new DataError("the CSV has no rows", { location: { file } });
  const split = (l: string) => l.split(/[,;\t]/).map((c) => c.trim());
  const isHeader = split(lines[0]!).some((c) => c === "" || !Number.isFinite(Number(c)));
  const rows = isHeader ? lines.slice(1) : lines;
  const dim = split(rows[0] ?? "").length;
  const data = new Float32Array(rows.length * dim);
  rows.forEach((line, i) => {
    const cells = split(line);
    const lineNo = i + (isHeader ? 2 : 1);
    if (cells.length !== dim) throw new DataError(`expected ${dim} values, found ${cells.length}`, { location: { file, line: lineNo } });
    cells.forEach((c, k) => {
      const v = Number(c);
      if (c === "" || !Number.isFinite(v))
        throw new DataError(`"${c}" is not a number`, {
          location: { file, line: lineNo },
          hint: "every column must be numeric; only the first row may be a header",
        });
      data[i * dim + k] = v;
    });
  });
  return { data, n: rows.length, dim };
}

async function readPointsParquet(file: string, column: string | undefined): Promise<{ data: Float32Array; n: number; dim: number }> {
  const { column: name, embeddings, numRows } = await readEmbeddingFile(file, column);
  const missing = embeddings.valid.indexOf(0);
  if (missing >= 0)
    throw new DataError(`column ${name} is null in row ${missing}`, { location: { file, row: missing }, hint: "filter the null rows out first" });
  return { data: embeddings.values, n: numRows, dim: embeddings.dim };
}

export default defineCommand({
  name: "cluster hdbscan",
  summary: "Cluster points (CSV or Parquet) with HDBSCAN; writes one label per input row (-1 = noise)",
  details:
    "CSV input: one point per row, numeric columns, optional header. Parquet input: a FixedSizeList<float32> or List<float> column (as DuckDB/pyarrow write; --column, or the only one). Output CSV columns: label, probability, in input order.",
  positionals: [{ name: "input", description: "points: .csv or .parquet", required: true }],
  options: {
    column: { type: "string", valueName: "NAME", description: "Parquet vector column" },
    "min-cluster-size": { type: "number", valueName: "M", description: "smallest cluster (>= 2)" },
    "min-samples": { type: "number", valueName: "S", description: "core-distance k, the point itself counted (default: min-cluster-size)" },
    metric: { type: "string", choices: ["euclidean", "cosine"], valueName: "euclidean|cosine", description: "distance", default: "euclidean" },
    selection: { type: "string", choices: ["eom", "leaf"], valueName: "eom|leaf", description: "cluster selection", default: "eom" },
    method: {
      type: "string",
      choices: ["auto", "exact", "approximate"],
      valueName: "auto|exact|approximate",
      description: "dense matrix over distinct points, or neighbour graph + MST (auto: exact up to 16,384 distinct points)",
      default: "auto",
    },
    out: { type: "string", valueName: "FILE", description: "labels CSV to write" },
    json: { type: "boolean", description: "print a JSON summary on stdout", default: false },
  },
  async run(args, io) {
    const input = args.positionals[0]!;
    const out = stringOption(args, "out", true);
    const minClusterSize = numberOption(args, "min-cluster-size");
    if (minClusterSize === undefined) throw new UsageError("missing required option --min-cluster-size", { hint: "e.g. --min-cluster-size 5" });
    const metric = stringOption(args, "metric")!;
    if (metric !== "euclidean" && metric !== "cosine") throw new UsageError(`--metric must be euclidean or cosine, got ${metric}`);
    const selection = stringOption(args, "selection")!;
    if (selection !== "eom" && selection !== "leaf") throw new UsageError(`--selection must be eom or leaf, got ${selection}`);
    const method = stringOption(args, "method")!;
    if (method !== "auto" && method !== "exact" && method !== "approximate") throw new UsageError(`--method must be auto, exact or approximate, got ${method}`);
    const points = /\.parquet$/i.test(input) ? await readPointsParquet(input, stringOption(args, "column")) : readPointsCsv(input);
    const started = performance.now();
    const result = await hdbscan(points.data, {
      dim: points.dim,
      minClusterSize,
      minSamples: numberOption(args, "min-samples"),
      metric,
      clusterSelection: selection,
      method,
      log: (line) => io.stderr.write(`${line}\n`),
    });
    const seconds = (performance.now() - started) / 1000;
    const lines = ["label,probability"];
    for (let i = 0; i < points.n; i++) lines.push(`${result.labels[i]},${result.probabilities[i]!.toFixed(6)}`);
    writeFileSync(out, lines.join("\n") + "\n");
    const noise = result.labels.filter((l) => l < 0).length;
    const summary = { input, out, points: points.n, dim: points.dim, clusters: result.numClusters, noise, seconds: Number(seconds.toFixed(3)) };
    if (args.options.json) io.stdout.write(JSON.stringify(summary) + "\n");
    else io.stderr.write(`${points.n} points (${points.dim}-d): ${result.numClusters} clusters, ${noise} noise, ${seconds.toFixed(2)} s -> ${out}\n`);
    return 0;
  },
});
