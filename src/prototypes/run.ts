// The prototypes stage's implementation; its definition (./stage.ts) imports this module when the stage runs.
import { existsSync, readFileSync } from "node:fs";
import path from "node:path";
import { DataError, StageError } from "../errors.js";
import { writeParquetFile } from "../io/parquet.js";
import { readTable } from "../io/tables.js";
import { EMBEDDINGS_TABLE } from "../embed/tables.js";
import { SAMPLES_TABLE } from "../ingest/tables.js";
import type { StageContext } from "../pipeline/stage.js";
import { sha256 } from "../util/hash.js";
import { PACKAGE_VERSION } from "../version.js";
import { assignmentsTable, prototypesTable, writeArtifactManifest, type Lineage } from "./artifact.js";
import { buildPrototypes, type BuildResult, type PairedSamples } from "./build.js";
import { PrototypeSpace } from "./psa.js";
import { ArtifactRegistry } from "./registry.js";
import type { PrototypesParams } from "./stage.js";
import { mulberry32 } from "../util/random.js";

interface EmbeddingRows {
  ids: string[];
  split: string[];
  available: Uint8Array;
  images: Float32Array;
  texts: Float32Array;
  textValid: Uint8Array;
  dim: number;
}

async function readEmbeddings(file: string): Promise<EmbeddingRows> {
  const table = await readTable(EMBEDDINGS_TABLE, file, ["id", "split", "report_available", "image_embedding", "text_embedding"]);
  const { image_embedding: image, text_embedding: text } = table;
  if (image.dim !== text.dim && text.valid.includes(1)) throw new DataError(`image (${image.dim}-d) and text (${text.dim}-d) embeddings differ in width`, { location: { file } });
  return {
    ids: table.id,
    split: table.split,
    available: Uint8Array.from(table.report_available, (v) => (v ? 1 : 0)),
    images: image.values,
    texts: text.dim === image.dim ? text.values : new Float32Array(image.values.length),
    textValid: text.valid,
    dim: image.dim,
  };
}

function select(rows: EmbeddingRows, indices: number[]): PairedSamples {
  const { dim } = rows;
  const images = new Float32Array(indices.length * dim);
  const texts = new Float32Array(indices.length * dim);
  indices.forEach((i, r) => {
    images.set(rows.images.subarray(i * dim, (i + 1) * dim), r * dim);
    texts.set(rows.texts.subarray(i * dim, (i + 1) * dim), r * dim);
  });
  return { ids: indices.map((i) => rows.ids[i]!), dim, images, texts };
}

async function readReports(file: string, ids: string[]): Promise<(string | null)[]> {
  const table = await readTable(SAMPLES_TABLE, file, ["id", "report_normalized", "report_available"]);
  const byId = new Map<string, string | null>();
  for (let i = 0; i < table.numRows; i++) byId.set(table.id[i]!, table.report_available[i] ? table.report_normalized[i]! : null);
  return ids.map((id) => byId.get(id) ?? null);
}

function cosine(a: Float32Array, aOffset: number, b: Float32Array, bOffset: number, dim: number): number {
  let dot = 0;
  let na = 0;
  let nb = 0;
  for (let k = 0; k < dim; k++) {
    const x = a[aOffset + k]!;
    const y = b[bOffset + k]!;
    dot += x * y;
    na += x * x;
    nb += y * y;
  }
  return na > 0 && nb > 0 ? dot / Math.sqrt(na * nb) : 0;
}

export interface UsefulnessCheck {
  samples: number;
  /** Mean cosine of the PSA approximation to the sample's own report embedding. */
  psa: number;
  /** Same for (a) the mean training report embedding and (b) one random prototype response per sample. */
  meanTrainingReport: number;
  randomPrototype: number;
  marginOverMean: number;
  marginOverRandom: number;
  passed: boolean;
}

/**
 * The usefulness check (issue 9): on held-out samples, is PSA's approximated text embedding
 * closer to the sample's own report embedding than the two trivial answers?
 */
export function usefulnessCheck(space: PrototypeSpace, responses: Float32Array, trainingTexts: Float32Array, heldOut: PairedSamples, options: { topK: number; temperature: number; seed: number }): UsefulnessCheck {
  const { dim } = heldOut;
  const n = heldOut.ids.length;
  const mean = new Float32Array(dim);
  const trainRows = trainingTexts.length / dim;
  for (let i = 0; i < trainRows; i++) for (let k = 0; k < dim; k++) mean[k] += trainingTexts[i * dim + k]! / trainRows;
  const approx = space.query(heldOut.images, { topK: options.topK, temperature: options.temperature });
  const random = mulberry32(options.seed ^ 0x5eed);
  let psa = 0;
  let meanScore = 0;
  let randomScore = 0;
  for (let i = 0; i < n; i++) {
    psa += cosine(approx.embeddings, i * dim, heldOut.texts, i * dim, dim);
    meanScore += cosine(mean, 0, heldOut.texts, i * dim, dim);
    const p = Math.floor(random() * space.size);
    randomScore += cosine(responses, p * dim, heldOut.texts, i * dim, dim);
  }
  psa /= n;
  meanScore /= n;
  randomScore /= n;
  return { samples: n, psa, meanTrainingReport: meanScore, randomPrototype: randomScore, marginOverMean: psa - meanScore, marginOverRandom: psa - randomScore, passed: psa > meanScore && psa > randomScore };
}

function upstreamFile(ctx: StageContext<PrototypesParams>, stage: string, name: string): string {
  const file = ctx.inputs[stage]?.files[name];
  if (!file || !existsSync(file)) throw new StageError("prototypes", `input ${stage}/${name} is missing`, { hint: `the ${stage} stage must publish ${name} (docs/data-contracts.md)` });
  return file;
}

export async function runPrototypes(ctx: StageContext<PrototypesParams>) {
  const params = ctx.params;
  const seed = params.seed ?? ctx.pipeline.dataset.seed;
  const embeddingsFile = upstreamFile(ctx, "embed", "embeddings.parquet");
  const rows = await readEmbeddings(embeddingsFile);
  const train: number[] = [];
  const validation: number[] = [];
  let emptyTexts = 0;
  for (let i = 0; i < rows.ids.length; i++) {
    if (!rows.available[i] || !rows.textValid[i]) continue;
    // An all-zero text embedding (a report with no known token) carries no text to cluster or compare.
    let norm = 0;
    for (let k = 0; k < rows.dim; k++) norm += rows.texts[i * rows.dim + k]! ** 2;
    if (!(norm > 0)) {
      emptyTexts++;
      continue;
    }
    if (rows.split[i] === "train") train.push(i);
    else if (rows.split[i] === "val") validation.push(i);
  }
  if (emptyTexts > 0) ctx.log(`${emptyTexts} report(s) have an all-zero text embedding and are left out`, "warn");
  if (train.length === 0) {
    throw new StageError("prototypes", "no training row has an available report with a text embedding", { location: { file: embeddingsFile }, hint: "raise dataset.textAvailability, or check that the embed stage embedded the reports" });
  }
  const samples = select(rows, train);
  if (params.mode === "zones-mean") {
    if (!ctx.inputs.ingest) throw new StageError("prototypes", "mode zones-mean reads the report texts from the ingest stage, which is not in the pipeline", { hint: "add `ingest: {}` under stages" });
    samples.reports = await readReports(upstreamFile(ctx, "ingest", "samples.parquet"), samples.ids);
  }
  ctx.log(`building prototypes from ${train.length} paired training samples (${params.mode})`);
  ctx.emit({ kind: "progress", stage: ctx.stage, task: "prototypes", done: 0, total: 3 });
  const built: BuildResult = await buildPrototypes(samples, {
    mode: params.mode,
    minClusterSize: params.minClusterSize,
    minSamples: params.minSamples,
    metric: params.metric,
    clusterSelection: params.clusterSelection,
    k: params.k,
    noise: params.noise,
    seed,
    restarts: params.restarts,
    log: (message) => ctx.log(message, "warn"),
  });
  ctx.emit({ kind: "progress", stage: ctx.stage, task: "prototypes", done: 1, total: 3 });
  const p = built.prototypes;
  await writeParquetFile(path.join(ctx.outDir, "prototypes.parquet"), prototypesTable(p, samples.ids));
  await writeParquetFile(path.join(ctx.outDir, "assignments.parquet"), assignmentsTable(built.assignments, samples.ids));

  const encoderFile = ctx.inputs.embed?.files["encoder.json"];
  const encoder = encoderFile && existsSync(encoderFile) ? (JSON.parse(readFileSync(encoderFile, "utf8")) as { id?: string; dim?: number; digest?: string }) : {};
  const fingerprintFile = ctx.inputs.ingest?.files["fingerprint.json"];
  const upstream: Record<string, string> = {};
  for (const [stage, input] of Object.entries(ctx.inputs)) upstream[stage] = input.digest;
  const lineage: Lineage = {
    pipeline: ctx.pipeline.name,
    datasetFingerprint: fingerprintFile && existsSync(fingerprintFile) ? sha256(readFileSync(fingerprintFile)) : null,
    upstream,
    encoder: { id: encoder.id ?? null, dim: encoder.dim ?? rows.dim, digest: encoder.digest ?? null },
    params: { ...withoutGate(params), seed },
    seed,
    packageVersion: PACKAGE_VERSION,
    counts: { pairedSamples: train.length, prototypes: p.cluster.length, surrogateLabels: built.numClusters, noise: built.noisePoints, dropped: built.droppedPoints },
  };
  const manifest = await writeArtifactManifest(ctx.outDir, lineage);
  ctx.emit({ kind: "progress", stage: ctx.stage, task: "prototypes", done: 2, total: 3 });

  const space = new PrototypeSpace(p.queries, p.responses, p.dim);
  let usefulness: UsefulnessCheck | { samples: 0; skipped: string };
  if (validation.length === 0) {
    usefulness = { samples: 0, skipped: "no validation sample has an available report with a text embedding" };
    ctx.warn("usefulness-check-skipped", `the usefulness check did not run: ${usefulness.skipped}`);
  } else {
    usefulness = usefulnessCheck(space, p.responses, samples.texts, select(rows, validation), { topK: params.topK, temperature: params.temperature, seed });
    ctx.log(
      `usefulness on ${usefulness.samples} validation samples: cos(PSA, own report) ${usefulness.psa.toFixed(4)}; ` +
        `margin over the mean training report ${usefulness.marginOverMean >= 0 ? "+" : ""}${usefulness.marginOverMean.toFixed(4)}, ` +
        `over a random prototype ${usefulness.marginOverRandom >= 0 ? "+" : ""}${usefulness.marginOverRandom.toFixed(4)}${usefulness.passed ? "" : " (PSA does NOT beat both baselines)"}`,
      usefulness.passed ? "info" : "warn",
    );
    if (!usefulness.passed && params.onUseless === "warn") {
      ctx.warn("prototypes-not-useful", `on ${usefulness.samples} validation samples PSA's approximated text is no closer to an image's own report than ${usefulness.marginOverMean < 0 ? "the mean training report" : "a random prototype"}`, {
        samples: usefulness.samples,
        psa: usefulness.psa,
        marginOverMean: usefulness.marginOverMean,
        marginOverRandom: usefulness.marginOverRandom,
      });
    }
    if (!usefulness.passed && params.onUseless === "fail") {
      throw new DataError(
        `the prototype space is not useful: on ${usefulness.samples} validation samples PSA's approximated text is no closer to an image's own report than ${usefulness.marginOverMean < 0 ? "the mean training report" : "a random prototype"} (margins ${usefulness.marginOverMean.toFixed(4)} / ${usefulness.marginOverRandom.toFixed(4)}); nothing was published`,
        { hint: "image embeddings that cannot find their reports make PSA noise: use encoder: biomedclip (docs/embed.md), or onUseless: warn to train anyway" },
      );
    }
  }

  const registry = ArtifactRegistry.open(ctx.pipeline.workdir);
  let artifact: Awaited<ReturnType<ArtifactRegistry["publish"]>>;
  try {
    artifact = await registry.publish(ctx.pipeline.name, ctx.outDir);
  } finally {
    registry.close();
  }
  ctx.log(`${artifact.isNew ? "published" : "unchanged:"} ${artifact.name}@${artifact.version} (${artifact.digest.slice(0, 12)})`);
  ctx.emit({ kind: "progress", stage: ctx.stage, task: "prototypes", done: 3, total: 3 });
  return {
    mode: params.mode,
    pairedSamples: train.length,
    emptyTexts,
    surrogateLabels: built.numClusters,
    noise: built.noisePoints,
    dropped: built.droppedPoints,
    prototypes: p.cluster.length,
    dim: p.dim,
    usefulness,
    artifact: { name: artifact.name, version: artifact.version, digest: manifest.digest, isNew: artifact.isNew, path: artifact.path },
  };
}

/** The params that shape the artifact (the usefulness gate does not), for its lineage. */
function withoutGate(params: PrototypesParams): Omit<PrototypesParams, "onUseless"> {
  const { onUseless: _gate, ...rest } = params;
  return rest;
}
