import { writeFileSync } from "node:fs";
import path from "node:path";
import { Binary, Bool, Field, FixedSizeList, Float32, Float64, Int32, List, Table, Utf8, vectorFromArray, type DataType } from "apache-arrow";
import sharp from "sharp";
import { z } from "zod";
import { EMBEDDINGS_TABLE } from "../../src/embed/tables.js";
import { EXAMPLES_TABLE, METRICS_TABLE, PER_IMAGE_TABLE } from "../../src/evaluate/tables.js";
import { FILTERED_TABLE } from "../../src/filter/tables.js";
import { ORPHANS_TABLE, QUARANTINE_TABLE, SAMPLES_TABLE } from "../../src/ingest/tables.js";
import type { TableContract } from "../../src/io/columns.js";
import { writeParquetFile } from "../../src/io/parquet.js";
import { ASSIGNMENTS_TABLE, PROTOTYPES_TABLE } from "../../src/prototypes/tables.js";
import { defineStage, type StageDefinition } from "../../src/pipeline/stage.js";
import type { StageRegistry } from "../../src/pipeline/spec.js";
import { mulberry32 as rng } from "../../src/util/random.js";

export { rng };

/**
 * Synthetic stage outputs that follow docs/data-contracts.md, for report tests: generated chest
 * X-ray-like images with lung masks, reports, token scores, clustered embeddings, a training
 * history, test metrics and predictions. Every number a test asserts is computed here.
 */

function table(columns: Record<string, { values: unknown[]; type: DataType }>): Table {
  return new Table(Object.fromEntries(Object.entries(columns).map(([name, c]) => [name, vectorFromArray(c.values as never[], c.type)])));
}

const SIZE = 64;

/** A grey chest-like image and a lesion mask (0/1) inside one lung; `lesion` 0 gives an empty mask. */
export async function syntheticXray(seed: number, lesion = 1): Promise<{ image: Buffer; mask: Buffer; truth: Uint8Array }> {
  const random = rng(seed);
  const pixels = Buffer.alloc(SIZE * SIZE);
  const truth = new Uint8Array(SIZE * SIZE);
  const cx = SIZE * (random() < 0.5 ? 0.32 : 0.68);
  const cy = SIZE * (0.4 + random() * 0.2);
  const r = SIZE * (0.08 + random() * 0.08) * lesion;
  for (let y = 0; y < SIZE; y++) {
    for (let x = 0; x < SIZE; x++) {
      const lungL = ((x - SIZE * 0.32) / (SIZE * 0.17)) ** 2 + ((y - SIZE * 0.5) / (SIZE * 0.33)) ** 2 < 1;
      const lungR = ((x - SIZE * 0.68) / (SIZE * 0.17)) ** 2 + ((y - SIZE * 0.5) / (SIZE * 0.33)) ** 2 < 1;
      let v = 150 + 60 * Math.sin((y / SIZE) * Math.PI) - (lungL || lungR ? 95 : 0) + random() * 18;
      const inLesion = r > 0 && (x - cx) ** 2 + (y - cy) ** 2 < r * r;
      if (inLesion) v += 55;
      pixels[y * SIZE + x] = Math.max(0, Math.min(255, Math.round(v)));
      truth[y * SIZE + x] = inLesion ? 1 : 0;
    }
  }
  const image = await sharp(pixels, { raw: { width: SIZE, height: SIZE, channels: 1 } })
    .png()
    .toBuffer();
  const mask = await sharp(Buffer.from(truth), { raw: { width: SIZE, height: SIZE, channels: 1 } })
    .png()
    .toBuffer();
  return { image, mask, truth };
}

const ZONES = ["upper left lung", "middle left lung", "lower left lung", "upper right lung", "lower right lung"];

export interface DemoFacts {
  splits: Record<string, { samples: number; withReport: number; reportAvailable: number; emptyMasks: number }>;
  quarantine: Record<string, number>;
  filteredReports: number;
  tokens: number;
  keptTokens: number;
  threshold: number;
  clusters: number;
  prototypes: number;
  noise: number;
  assigned: number;
  epochs: number;
  bestEpoch: number;
  finalValDice: number;
  metrics: { model: string; dice: number; iou: number; dice_pooled: number; iou_pooled: number; images: number }[];
  examples: number;
}

interface Sample {
  id: string;
  split: string;
  report: string | null;
  available: boolean;
  zone: number;
  lesion: number;
}

/** The demo dataset's rows: 40 train (half with a usable report), 10 val, 10 test. */
export function demoSamples(): Sample[] {
  const random = rng(7);
  const samples: Sample[] = [];
  for (let i = 0; i < 60; i++) {
    const split = i < 40 ? "train" : i < 50 ? "val" : "test";
    const zone = i % 3;
    const lesion = i % 13 === 5 ? 0 : 1;
    const hasReport = !(split !== "train" && i % 7 === 0);
    const count = 1 + Math.floor(random() * 2);
    const report = hasReport
      ? lesion
        ? `Bilateral pulmonary infection, ${count === 1 ? "one infected area" : "two infected areas"}, ${ZONES[zone]}.`
        : "No pulmonary infection, zero infected areas."
      : null;
    const available = hasReport && (split !== "train" || i % 2 === 0);
    samples.push({ id: `covid_${1000 + i}`, split, report, available, zone, lesion });
  }
  return samples;
}

export function demoFacts(): DemoFacts {
  const samples = demoSamples();
  const splits: DemoFacts["splits"] = {};
  for (const s of samples) {
    const f = (splits[s.split] ??= { samples: 0, withReport: 0, reportAvailable: 0, emptyMasks: 0 });
    f.samples++;
    if (s.report !== null) f.withReport++;
    if (s.available) f.reportAvailable++;
    if (!s.lesion) f.emptyMasks++;
  }
  const paired = samples.filter((s) => s.split === "train" && s.available);
  const filtered = paired.map((s) => scoreTokens(s.report!, s.zone));
  const assigned = paired.length;
  const noise = paired.filter((_, i) => i % 9 === 4).length;
  return {
    splits,
    quarantine: { "unreadable-image": 2, "missing-mask": 1, "empty-mask": samples.filter((s) => !s.lesion).length },
    filteredReports: paired.length,
    tokens: filtered.reduce((a, f) => a + f.tokens.length, 0),
    keptTokens: filtered.reduce((a, f) => a + f.kept.filter(Boolean).length, 0),
    threshold: 0.04,
    clusters: 3,
    prototypes: 6,
    noise,
    assigned,
    epochs: 12,
    bestEpoch: 10,
    finalValDice: history()[11]!.valDice,
    metrics: [
      { model: "prolearn", dice: 0.8123, iou: 0.7011, dice_pooled: 0.8244, iou_pooled: 0.7121, images: 10 },
      // evaluate's names (docs/training.md): the image-only U-Net is `unet`, one row per seed.
      { model: "unet", dice: 0.7719, iou: 0.6502, dice_pooled: 0.7801, iou_pooled: 0.6633, images: 10 },
    ],
    examples: 4,
  };
}

const THRESHOLD = 0.04;

/** Words score by how much they say about location and extent; fillers score low. */
function scoreTokens(report: string, seed: number): { tokens: string[]; scores: number[]; kept: boolean[] } {
  const words = report
    .toLowerCase()
    .replace(/([.,])/g, " $1")
    .split(/\s+/)
    .filter(Boolean);
  const random = rng(seed + words.length);
  const raw = words.map((w) =>
    /left|right|upper|lower|middle|bilateral|infection|two|one|zero/.test(w) ? 0.6 + random() * 0.4 : /[.,]/.test(w) ? 0.02 : 0.05 + random() * 0.1,
  );
  const sum = raw.reduce((a, b) => a + b, 0);
  const scores = raw.map((r) => r / sum);
  return { tokens: words, scores, kept: scores.map((s) => s > THRESHOLD) };
}

function history() {
  // The train stage's history.json records (src/segmenter/loop.ts EpochRecord); valDice is null without a val split.
  return [...Array(12).keys()].map((i) => ({
    epoch: i + 1,
    loss: 1.1 * Math.exp(-i / 4) + 0.18,
    learningRate: 1e-4 * (0.5 + 0.5 * Math.cos((Math.PI * i) / 12)),
    valDice: 0.82 - 0.62 * Math.exp(-i / 3),
    valIou: 0.7 - 0.55 * Math.exp(-i / 3),
    seconds: 1.5 + (i % 3) * 0.1,
  }));
}

export async function writeIngestOutputs(dir: string): Promise<void> {
  const samples = demoSamples();
  const rows = await Promise.all(samples.map(async (s, i) => ({ s, ...(await syntheticXray(100 + i, s.lesion)) })));
  const utf8 = (values: unknown[]) => ({ values, type: new Utf8() });
  await writeParquetFile(
    path.join(dir, "samples.parquet"),
    table({
      id: utf8(rows.map((r) => r.s.id)),
      dataset: utf8(rows.map(() => "qata-cov19")),
      split: utf8(rows.map((r) => r.s.split)),
      image: { values: rows.map((r) => r.image), type: new Binary() },
      mask: { values: rows.map((r) => r.mask), type: new Binary() },
      width: { values: rows.map(() => SIZE), type: new Int32() },
      height: { values: rows.map(() => SIZE), type: new Int32() },
      report: utf8(rows.map((r) => r.s.report)),
      report_normalized: utf8(rows.map((r) => r.s.report)),
      report_available: { values: rows.map((r) => r.s.available), type: new Bool() },
      // The text budget: every available train and val report; test reports never.
      report_in_budget: { values: rows.map((r) => r.s.available && r.s.split !== "test"), type: new Bool() },
      image_format: utf8(rows.map(() => "png")),
      image_sha256: utf8(rows.map((r) => `sha-image-${r.s.id}`)),
      mask_sha256: utf8(rows.map((r) => `sha-mask-${r.s.id}`)),
      source_image: utf8(rows.map((r) => `images/${r.s.split}/images/${r.s.id}.png`)),
      source_mask: utf8(rows.map((r) => `images/${r.s.split}/masks/mask_${r.s.id}.png`)),
      mask_empty: { values: rows.map((r) => !r.s.lesion), type: new Bool() },
      mask_coverage: { values: rows.map((r) => r.truth.reduce((a, b) => a + b, 0) / r.truth.length), type: new Float64() },
    }),
    { rowGroupSize: 16 },
  );
  const quarantine = [
    { source: "images/train/images/covid_9001.png", reason: "unreadable-image", kept: false },
    { source: "images/test/images/covid_9002.png", reason: "unreadable-image", kept: false },
    { source: "images/valid/images/covid_9003.png", reason: "missing-mask", kept: false },
    ...samples.filter((s) => !s.lesion).map((s) => ({ source: `images/${s.split}/masks/mask_${s.id}.png`, reason: "empty-mask", kept: true })),
  ];
  await writeParquetFile(
    path.join(dir, "quarantine.parquet"),
    table({
      source: utf8(quarantine.map((q) => q.source)),
      reason: utf8(quarantine.map((q) => q.reason)),
      detail: utf8(quarantine.map((q) => `synthetic ${q.reason}`)),
      scope: utf8(quarantine.map(() => "image")),
      id: utf8(quarantine.map(() => null)),
      row: { values: quarantine.map(() => null), type: new Int32() },
      kept: { values: quarantine.map((q) => q.kept), type: new Bool() },
    }),
  );
  writeFileSync(path.join(dir, "fingerprint.json"), JSON.stringify({ layout: "sgseg", images: samples.length, digest: "a1b2c3d4" }));
}

export async function writeFilterOutputs(dir: string): Promise<void> {
  const paired = demoSamples().filter((s) => s.split === "train" && s.available);
  const scored = paired.map((s) => ({ s, ...scoreTokens(s.report!, s.zone) }));
  await writeParquetFile(
    path.join(dir, "filtered.parquet"),
    table({
      id: { values: scored.map((r) => r.s.id), type: new Utf8() },
      report: { values: scored.map((r) => r.s.report), type: new Utf8() },
      filtered_report: { values: scored.map((r) => r.tokens.filter((_, i) => r.kept[i]).join(" ")), type: new Utf8() },
      tokens: { values: scored.map((r) => r.tokens), type: new List(new Field("item", new Utf8(), true)) },
      scores: { values: scored.map((r) => r.scores), type: new List(new Field("item", new Float32(), true)) },
      kept: { values: scored.map((r) => r.kept), type: new List(new Field("item", new Bool(), true)) },
      threshold: { values: scored.map(() => THRESHOLD), type: new Float32() },
    }),
  );
}

export const DIM = 16;

function clusterCentre(cluster: number): number[] {
  const random = rng(500 + cluster);
  return [...Array(DIM).keys()].map(() => random() * 4 - 2);
}

function embedding(seed: number, cluster: number, spread = 0.35): number[] {
  const random = rng(seed);
  return clusterCentre(cluster).map((c) => c + (random() - 0.5) * 2 * spread);
}

export async function writeEmbedOutputs(dir: string): Promise<void> {
  const samples = demoSamples();
  const vector = new FixedSizeList(DIM, new Field("item", new Float32(), false));
  await writeParquetFile(
    path.join(dir, "embeddings.parquet"),
    table({
      id: { values: samples.map((s) => s.id), type: new Utf8() },
      split: { values: samples.map((s) => s.split), type: new Utf8() },
      report_available: { values: samples.map((s) => s.available), type: new Bool() },
      image_embedding: { values: samples.map((s, i) => embedding(2000 + i, s.zone, 0.8)), type: vector },
      text_embedding: {
        values: samples.map((s, i) => (s.available ? embedding(3000 + i, s.zone) : null)),
        type: new FixedSizeList(DIM, new Field("item", new Float32(), false)),
      },
    }),
  );
  writeFileSync(path.join(dir, "encoder.json"), JSON.stringify({ id: "synthetic", dim: DIM, digest: "synthetic", preprocessing: {} }));
}

export async function writePrototypeOutputs(dir: string): Promise<void> {
  const samples = demoSamples();
  const paired = samples.filter((s) => s.split === "train" && s.available);
  const assignments = paired.map((s, i) => ({ id: s.id, cluster: i % 9 === 4 ? -1 : s.zone, subcluster: i % 2 }));
  const prototypes: { cluster: number; subcluster: number; sampleId: string; size: number; query: number[]; response: number[] }[] = [];
  for (let cluster = 0; cluster < 3; cluster++) {
    for (let sub = 0; sub < 2; sub++) {
      const members = assignments.filter((a) => a.cluster === cluster && a.subcluster === sub);
      const first = members[0]!;
      const index = samples.findIndex((s) => s.id === first.id);
      prototypes.push({
        cluster,
        subcluster: sub,
        sampleId: first.id,
        size: members.length,
        query: embedding(2000 + index, cluster, 0.8),
        response: embedding(3000 + index, cluster),
      });
    }
  }
  const vector = () => new FixedSizeList(DIM, new Field("item", new Float32(), false));
  await writeParquetFile(
    path.join(dir, "prototypes.parquet"),
    table({
      prototype_id: { values: prototypes.map((_, i) => i), type: new Int32() },
      cluster: { values: prototypes.map((p) => p.cluster), type: new Int32() },
      subcluster: { values: prototypes.map((p) => p.subcluster), type: new Int32() },
      sample_id: { values: prototypes.map((p) => p.sampleId), type: new Utf8() },
      size: { values: prototypes.map((p) => p.size), type: new Int32() },
      query: { values: prototypes.map((p) => p.query), type: vector() },
      response: { values: prototypes.map((p) => p.response), type: vector() },
    }),
  );
  await writeParquetFile(
    path.join(dir, "assignments.parquet"),
    table({
      id: { values: assignments.map((a) => a.id), type: new Utf8() },
      cluster: { values: assignments.map((a) => a.cluster), type: new Int32() },
      probability: { values: assignments.map((a) => (a.cluster < 0 ? 0 : 0.9)), type: new Float32() },
      subcluster: { values: assignments.map((a) => (a.cluster < 0 ? -1 : a.subcluster)), type: new Int32() },
    }),
  );
  writeFileSync(path.join(dir, "manifest.json"), JSON.stringify({ clusters: 3, k: 2 }));
}

export async function writeTrainOutputs(dir: string): Promise<void> {
  writeFileSync(path.join(dir, "history.json"), JSON.stringify({ epochs: history(), bestEpoch: 10 }));
  writeFileSync(path.join(dir, "model.json"), JSON.stringify({ architecture: "synthetic" }));
  writeFileSync(path.join(dir, "weights.bin"), Buffer.alloc(16));
}

export async function writeEvaluateOutputs(dir: string): Promise<void> {
  const facts = demoFacts();
  await writeParquetFile(
    path.join(dir, "metrics.parquet"),
    table({
      model: { values: facts.metrics.map((m) => m.model), type: new Utf8() },
      seed: { values: facts.metrics.map(() => 7), type: new Int32() },
      dice: { values: facts.metrics.map((m) => m.dice), type: new Float32() },
      iou: { values: facts.metrics.map((m) => m.iou), type: new Float32() },
      dice_pooled: { values: facts.metrics.map((m) => m.dice_pooled), type: new Float32() },
      iou_pooled: { values: facts.metrics.map((m) => m.iou_pooled), type: new Float32() },
      images: { values: facts.metrics.map((m) => m.images), type: new Int32() },
      text_availability: { values: facts.metrics.map(() => 0.5), type: new Float32() },
    }),
  );
  const tests = demoSamples()
    .filter((s) => s.split === "test" && s.lesion)
    .slice(0, facts.examples);
  const rows = await Promise.all(
    tests.map(async (s) => {
      const index = demoSamples().findIndex((x) => x.id === s.id);
      const { image, mask, truth } = await syntheticXray(100 + index, s.lesion);
      // The prediction: the truth shifted two pixels right, as probabilities 0..255.
      const probabilities = Buffer.alloc(SIZE * SIZE);
      for (let i = 0; i < truth.length; i++) probabilities[i] = truth[i - 2] ? 230 : 20;
      const prediction = await sharp(probabilities, { raw: { width: SIZE, height: SIZE, channels: 1 } })
        .png()
        .toBuffer();
      for (let i = 0; i < truth.length; i++) probabilities[i] = truth[i + SIZE * 3] || truth[i + SIZE * 4] ? 200 : 10;
      const baseline = await sharp(probabilities, { raw: { width: SIZE, height: SIZE, channels: 1 } })
        .png()
        .toBuffer();
      return { id: s.id, image, mask, prediction, baseline, dice: 0.9 - index / 1000 };
    }),
  );
  await writeParquetFile(
    path.join(dir, "examples.parquet"),
    table({
      id: { values: rows.map((r) => r.id), type: new Utf8() },
      image: { values: rows.map((r) => r.image), type: new Binary() },
      mask: { values: rows.map((r) => r.mask), type: new Binary() },
      prediction: { values: rows.map((r) => r.prediction), type: new Binary() },
      baseline_prediction: { values: rows.map((r) => r.baseline), type: new Binary() },
    }),
  );
  await writeParquetFile(
    path.join(dir, "per_image.parquet"),
    table({
      id: { values: rows.map((r) => r.id), type: new Utf8() },
      model: { values: rows.map(() => "prolearn"), type: new Utf8() },
      seed: { values: rows.map(() => 7), type: new Int32() },
      dice: { values: rows.map((r) => r.dice), type: new Float32() },
      iou: { values: rows.map((r) => r.dice - 0.1), type: new Float32() },
      intersection: { values: rows.map(() => 100), type: new Int32() },
      predicted_pixels: { values: rows.map(() => 120), type: new Int32() },
      truth_pixels: { values: rows.map(() => 110), type: new Int32() },
    }),
  );
}

const noParams = z.strictObject({});

/** The real stages' table declarations: the engine checks the synthetic files against them before publishing. */
const DECLARED_TABLES: Record<string, readonly TableContract[]> = {
  ingest: [SAMPLES_TABLE, QUARANTINE_TABLE, ORPHANS_TABLE],
  filter: [FILTERED_TABLE],
  embed: [EMBEDDINGS_TABLE],
  prototypes: [PROTOTYPES_TABLE, ASSIGNMENTS_TABLE],
  evaluate: [METRICS_TABLE, PER_IMAGE_TABLE, EXAMPLES_TABLE],
};

function demoStage(
  name: string,
  inputs: string[],
  outputs: string[],
  write: (dir: string) => Promise<void>,
  summary: () => Record<string, unknown>,
): StageDefinition {
  return defineStage({
    name,
    version: "1",
    description: `synthetic ${name} outputs for report tests`,
    params: noParams,
    inputs,
    outputs,
    tables: DECLARED_TABLES[name],
    async run(ctx) {
      await write(ctx.outDir);
      return summary();
    },
  }) as StageDefinition;
}

/**
 * Stages with the real names and output files that write the synthetic outputs above, so a test
 * runs the real engine (cache keys, catalog, publish) and gets a real run to report on.
 */
export function demoRegistry(): StageRegistry {
  const facts = demoFacts();
  const stages = [
    demoStage(
      "ingest",
      [],
      ["samples.parquet", "quarantine.parquet", "orphans.parquet", "fingerprint.json"],
      async (dir) => {
        await writeIngestOutputs(dir);
        const none = { values: [], type: new Utf8() };
        await writeParquetFile(
          path.join(dir, "orphans.parquet"),
          table({ report_key: none, report_file: none, row: { values: [], type: new Int32() }, split: none, report: none }),
        );
      },
      () => ({ samples: 60, quarantined: 3 }),
    ),
    demoStage("filter", ["ingest"], ["filtered.parquet"], writeFilterOutputs, () => ({
      reports: facts.filteredReports,
      keptFraction: facts.keptTokens / facts.tokens,
    })),
    demoStage("embed", ["ingest"], ["embeddings.parquet", "encoder.json"], writeEmbedOutputs, () => ({ rows: 60, dim: DIM })),
    demoStage("prototypes", ["embed"], ["prototypes.parquet", "assignments.parquet", "manifest.json"], writePrototypeOutputs, () => ({
      clusters: 3,
      prototypes: 6,
    })),
    demoStage("train", ["prototypes"], ["model.json", "weights.bin", "history.json"], writeTrainOutputs, () => ({ epochs: 12, bestValDice: 0.8 })),
    demoStage("evaluate", ["train"], ["metrics.parquet", "per_image.parquet", "examples.parquet"], writeEvaluateOutputs, () => ({ dice: 0.8123 })),
  ];
  return new Map(stages.map((s) => [s.name, s]));
}

export function demoPipelineYaml(stages: string[] = ["ingest", "filter", "embed", "prototypes", "train", "evaluate"]): string {
  return `name: report-demo\ndataset:\n  kind: qata-cov19\n  root: data\n  textAvailability: 0.5\nstages:\n${stages.map((s) => `  ${s}: {}`).join("\n")}\n`;
}

/** The demo registry whose prototypes stage fails its usefulness check as the real one does: it publishes and warns. */
export function demoRegistryWithWarning(): StageRegistry {
  const registry = new Map(demoRegistry());
  const prototypes = registry.get("prototypes")!;
  registry.set("prototypes", {
    ...prototypes,
    run: async (ctx) => {
      const summary = await prototypes.run!(ctx);
      ctx.warn(
        "prototypes-not-useful",
        "on 12 validation samples PSA's approximated text is no closer to an image's own report than the mean training report",
        { samples: 12, marginOverMean: -0.0123, marginOverRandom: 0.0456 },
      );
      return summary;
    },
  });
  return registry;
}
