import { mkdir, mkdtemp } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { Binary, Bool, Int32, Table, Utf8, vectorFromArray } from "apache-arrow";
import sharp from "sharp";
import { writeParquetFile } from "../../src/io/parquet.js";
import type { ResolvedPipeline } from "../../src/pipeline/spec.js";
import type { InputArtifact, RowCache, StageContext, StageSummary } from "../../src/pipeline/stage.js";
import { STAGES } from "../../src/stages.js";
import { deriveSeed, mulberry32 } from "../../src/segmenter/prng.js";
import { sha256 } from "../../src/util/hash.js";

/**
 * A QaTa-like fixture generated in code: grey 64x64 "chest X-rays" with two dark lungs, bright
 * lesions in 1-3 of six zones (upper/middle/lower x left/right, by image side), the masks of
 * those lesions, and a report generated from the mask ("Bilateral pulmonary infection, two
 * infected areas, upper left lung and lower right lung."). Zone words carry the information;
 * the other words appear in every report.
 */
export const ZONE_WORDS = new Set(["upper", "middle", "lower", "left", "right"]);
export const FILLER_WORDS = new Set(["pulmonary", "infection", "infected", "areas", "area", "lung", "and", "unilateral", "bilateral"]);

export interface FixtureSample {
  id: string;
  split: "train" | "val" | "test";
  image: Uint8Array;
  mask: Uint8Array;
  report: string;
  reportAvailable: boolean;
  /** Within the text budget (report_in_budget): train as reportAvailable; val: `valInBudget` of them; test: never. */
  reportInBudget: boolean;
  zones: number[];
}

const ROWS = ["upper", "middle", "lower"];
const SIDES = ["left", "right"];
const NUMBERS = ["zero", "one", "two", "three"];

export async function makeFixture(
  options: { counts?: { train: number; val: number; test: number }; size?: number; seed?: number; textAvailability?: number; decoys?: boolean } = {},
): Promise<FixtureSample[]> {
  const size = options.size ?? 64;
  const counts = options.counts ?? { train: 48, val: 12, test: 16 };
  const random = mulberry32(deriveSeed(options.seed ?? 7, "fixture"));
  const samples: FixtureSample[] = [];
  let n = 0;
  for (const split of ["train", "val", "test"] as const) {
    for (let k = 0; k < counts[split]; k++) {
      const zoneCount = 1 + Math.floor(random() * 3);
      const zones: number[] = [];
      while (zones.length < zoneCount) {
        const z = Math.floor(random() * 6);
        if (!zones.includes(z)) zones.push(z);
      }
      zones.sort((a, b) => a - b);
      const pixels = new Uint8Array(size * size);
      const mask = new Uint8Array(size * size);
      const lungs = [
        { cx: size * 0.3, cy: size * 0.5, rx: size * 0.17, ry: size * 0.38 },
        { cx: size * 0.7, cy: size * 0.5, rx: size * 0.17, ry: size * 0.38 },
      ];
      const lesions = zones.map((z) => {
        const side = z % 2;
        const row = Math.floor(z / 2);
        const lung = lungs[side]!;
        const top = lung.cy - lung.ry;
        const bandHeight = (2 * lung.ry) / 3;
        return {
          cx: lung.cx + (random() - 0.5) * lung.rx * 0.6,
          cy: top + bandHeight * (row + 0.5) + (random() - 0.5) * bandHeight * 0.3,
          r: size * (0.06 + random() * 0.04),
        };
      });
      // Decoys: lesion-like blobs in one unnamed zone, outside the mask. Only the report tells
      // them apart, so a guided model must read the zone words (and the guide's attention
      // learns to score them).
      const free = [0, 1, 2, 3, 4, 5].filter((z) => !zones.includes(z));
      const decoyZone = free[Math.floor(random() * free.length)];
      const decoys = (options.decoys ?? false) && decoyZone !== undefined ? [decoyZone] : [];
      const decoyBlobs = decoys.map((z) => {
        const lung = lungs[z % 2]!;
        const bandHeight = (2 * lung.ry) / 3;
        return {
          cx: lung.cx + (random() - 0.5) * lung.rx * 0.6,
          cy: lung.cy - lung.ry + bandHeight * (Math.floor(z / 2) + 0.5),
          r: size * (0.06 + random() * 0.04),
        };
      });
      for (let y = 0; y < size; y++) {
        for (let x = 0; x < size; x++) {
          let value = 150 + (random() - 0.5) * 30;
          const inLung = lungs.some((l) => ((x - l.cx) / l.rx) ** 2 + ((y - l.cy) / l.ry) ** 2 <= 1);
          if (inLung) value = 60 + (random() - 0.5) * 30;
          const inLesion = lesions.some((l) => (x - l.cx) ** 2 + (y - l.cy) ** 2 <= l.r ** 2);
          if (inLesion && inLung) {
            value = 150 + (random() - 0.5) * 40;
            mask[y * size + x] = 1;
          }
          if (inLung && !inLesion && decoyBlobs.some((l) => (x - l.cx) ** 2 + (y - l.cy) ** 2 <= l.r ** 2)) value = 150 + (random() - 0.5) * 40;
          pixels[y * size + x] = Math.max(0, Math.min(255, Math.round(value)));
        }
      }
      const zoneText = zones.map((z) => `${ROWS[Math.floor(z / 2)]} ${SIDES[z % 2]} lung`);
      const sides = new Set(zones.map((z) => z % 2));
      const report = `${sides.size === 2 ? "Bilateral" : "Unilateral"} pulmonary infection, ${NUMBERS[zones.length]} infected area${zones.length === 1 ? "" : "s"}, ${zoneText.join(" and ")}.`;
      const id = `covid_${++n}`;
      const availability = options.textAvailability ?? 1;
      samples.push({
        id,
        split,
        image: new Uint8Array(
          await sharp(pixels, { raw: { width: size, height: size, channels: 1 } })
            .png()
            .toBuffer(),
        ),
        mask: new Uint8Array(
          await sharp(mask, { raw: { width: size, height: size, channels: 1 } })
            .png()
            .toBuffer(),
        ),
        report,
        reportAvailable: split !== "train" || random() < availability,
        reportInBudget: false,
        zones,
      });
    }
  }
  // The budget: every available training report, and the same share of validation reports.
  const val = samples.filter((s) => s.split === "val");
  const valInBudget = Math.round((options.textAvailability ?? 1) * val.length);
  for (const s of samples) s.reportInBudget = s.split === "train" ? s.reportAvailable : s.split === "val" ? val.indexOf(s) < valInBudget : false;
  return samples;
}

/** samples.parquet in the ingest contract (docs/data-contracts.md). */
export function samplesTable(samples: readonly FixtureSample[], size = 64): Table {
  return new Table({
    id: vectorFromArray(
      samples.map((s) => s.id),
      new Utf8(),
    ),
    dataset: vectorFromArray(
      samples.map(() => "qata-cov19"),
      new Utf8(),
    ),
    split: vectorFromArray(
      samples.map((s) => s.split),
      new Utf8(),
    ),
    image: vectorFromArray(
      samples.map((s) => s.image),
      new Binary(),
    ),
    mask: vectorFromArray(
      samples.map((s) => s.mask),
      new Binary(),
    ),
    width: vectorFromArray(
      samples.map(() => size),
      new Int32(),
    ),
    height: vectorFromArray(
      samples.map(() => size),
      new Int32(),
    ),
    report: vectorFromArray(
      samples.map((s) => s.report),
      new Utf8(),
    ),
    report_normalized: vectorFromArray(
      samples.map((s) => s.report),
      new Utf8(),
    ),
    report_available: vectorFromArray(
      samples.map((s) => s.reportAvailable),
      new Bool(),
    ),
    report_in_budget: vectorFromArray(
      samples.map((s) => s.reportInBudget),
      new Bool(),
    ),
    image_sha256: vectorFromArray(
      samples.map((s) => sha256(s.image)),
      new Utf8(),
    ),
    mask_sha256: vectorFromArray(
      samples.map((s) => sha256(s.mask)),
      new Utf8(),
    ),
    source_image: vectorFromArray(
      samples.map((s) => `images/${s.id}.png`),
      new Utf8(),
    ),
    source_mask: vectorFromArray(
      samples.map((s) => `masks/${s.id}.png`),
      new Utf8(),
    ),
    mask_empty: vectorFromArray(
      samples.map((s) => s.zones.length === 0),
      new Bool(),
    ),
  });
}

export async function scratchDir(label: string): Promise<string> {
  return mkdtemp(path.join(os.tmpdir(), `prolearn-train-${label}-`));
}

export function pipelineFor(workdir: string, overrides: Partial<ResolvedPipeline["dataset"]> = {}): ResolvedPipeline {
  return {
    name: "train-test",
    baseDir: workdir,
    workdir,
    dataset: { kind: "qata-cov19", root: workdir, layout: "prolearn", reportKey: "p6", textAvailability: 1, seed: 42, ...overrides },
    stages: {},
  };
}

export function memoryRowCache(): (ns: string) => RowCache {
  const stores = new Map<string, Map<string, Buffer>>();
  return (ns) => {
    if (!stores.has(ns)) stores.set(ns, new Map());
    const store = stores.get(ns)!;
    return { get: (k) => store.get(k), put: (k, v) => void store.set(k, v) };
  };
}

/** An upstream artifact from a folder of files (digest = folder name + file list, enough for tests). */
export function artifact(stage: string, dir: string, files: string[], summary: StageSummary = {}): InputArtifact {
  return { stage, dir, digest: sha256(`${stage}:${dir}:${files.join(",")}`), files: Object.fromEntries(files.map((f) => [f, path.join(dir, f)])), summary };
}

/** A StageContext for calling a stage's run() directly. */
export async function stageContext<P>(
  stage: string,
  params: P,
  pipeline: ResolvedPipeline,
  inputs: Record<string, InputArtifact>,
  options: { signal?: AbortSignal; rowCache?: (ns: string) => RowCache; logs?: string[] } = {},
): Promise<StageContext<P>> {
  const outDir = await mkdtemp(path.join(pipeline.workdir, `${stage}-out-`));
  const tmpDir = await mkdtemp(path.join(pipeline.workdir, `${stage}-tmp-`));
  await mkdir(outDir, { recursive: true });
  const definition = STAGES.get(stage);
  if (!definition) throw new Error(`no stage named ${stage}`);
  return {
    stage,
    version: definition.version,
    pipeline,
    params,
    inputs,
    outDir,
    tmpDir,
    rowCache: options.rowCache ?? memoryRowCache(),
    resources: {},
    emit: () => {},
    log: (message) => options.logs?.push(message),
    warn: (code, message) => options.logs?.push(`warning ${code}: ${message}`),
    signal: options.signal ?? new AbortController().signal,
  };
}

export async function writeSamples(dir: string, samples: readonly FixtureSample[]): Promise<InputArtifact> {
  await mkdir(dir, { recursive: true });
  await writeParquetFile(path.join(dir, "samples.parquet"), samplesTable(samples));
  return artifact("ingest", dir, ["samples.parquet"], { samples: samples.length });
}
