import assert from "node:assert/strict";
import { mkdirSync, readFileSync, readdirSync, writeFileSync } from "node:fs";
import { mkdtemp } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { before, describe, test } from "node:test";
import sharp from "sharp";
import { definePipeline, resolvePipeline, runPipeline, STAGES } from "../../src/index.js";
import { embedParams } from "../../src/embed/stage.js";
import { choleskySolve, poolGrid, ridge } from "../../src/embed/learned-head.js";
import { writeFixtureDataset } from "../../src/synthetic/index.js";
import type { EngineEvent } from "../../src/pipeline/engine.js";

/**
 * The learned embed encoder on generated chest X-rays whose reports are templated from the lung
 * zones the mask covers (src/synthetic): the text is predictable from where the lesion is.
 * Small on purpose (32 px, a 2-level trunk, a few epochs): the real-data figures are in
 * bench/RESULTS.md (bench/learned-encoder.ts).
 */
const LEARNED = { encoder: "learned", imageSize: 32, baseChannels: 4, depth: 2, epochs: 6, trainBatchSize: 8 } as const;

const ZONES = ["upper right", "upper left", "middle right", "middle left", "lower right", "lower left"];

/**
 * Generated X-ray-like images (layout prolearn) where the report names the zones (3 x 2 grid) of
 * the lesions, and the lesion is told from look-alike distractors only by its shape: a lesion is
 * a hollow square, a distractor in another zone a filled one of the same brightness and area.
 * The text is predictable from where the mask is, but zone statistics of brightness and
 * texture (the builtin encoder) see bright squares in the distractors' zones as well.
 */
async function writeShapeDataset(root: string, count: number, seed: number, size = 32): Promise<void> {
  let state = seed >>> 0;
  const random = () => (state = (Math.imul(state, 1664525) + 1013904223) >>> 0) / 2 ** 32;
  for (const d of ["images", "masks", "reports"]) mkdirSync(path.join(root, d), { recursive: true });
  const ids: string[] = [];
  const cellH = size / 3;
  const cellW = size / 2;
  for (let i = 0; i < count; i++) {
    const id = `case_${String(i).padStart(4, "0")}`;
    ids.push(id);
    const image = Buffer.alloc(size * size);
    const mask = Buffer.alloc(size * size);
    for (let p = 0; p < image.length; p++) image[p] = 70 + Math.floor(random() * 30);
    const order = [0, 1, 2, 3, 4, 5].sort(() => random() - 0.5);
    const lesions = order.slice(0, random() < 0.6 ? 1 : 2).sort((a, b) => a - b);
    const distractors = order.slice(lesions.length, lesions.length + 2);
    const square = (zone: number, hollow: boolean) => {
      const side = hollow ? 8 : 7;
      const y0 = Math.floor(Math.floor(zone / 2) * cellH + (cellH - side) * random());
      const x0 = Math.floor((zone % 2) * cellW + 1 + (cellW - side - 2) * random());
      for (let y = y0; y < y0 + side; y++)
        for (let x = x0; x < x0 + side; x++) {
          const edge = y < y0 + 2 || y >= y0 + side - 2 || x < x0 + 2 || x >= x0 + side - 2;
          if (hollow && !edge) continue;
          image[y * size + x] = 190 + Math.floor(random() * 30);
          if (hollow) mask[y * size + x] = 255;
        }
    };
    for (const z of lesions) square(z, true);
    for (const z of distractors) square(z, false);
    await sharp(image, { raw: { width: size, height: size, channels: 1 } })
      .png()
      .toFile(path.join(root, "images", `${id}.png`));
    await sharp(mask, { raw: { width: size, height: size, channels: 1 } })
      .png()
      .toFile(path.join(root, "masks", `${id}.png`));
    writeFileSync(path.join(root, "reports", `${id}.txt`), `infection in the ${lesions.map((z) => ZONES[z]).join(" and ")} zone\n`);
  }
  writeFileSync(
    path.join(root, "split.json"),
    JSON.stringify({ train: ids.filter((_, i) => i % 10 < 8), val: ids.filter((_, i) => i % 10 === 8), test: ids.filter((_, i) => i % 10 === 9) }),
  );
}

async function scratch(prefix: string): Promise<string> {
  return mkdtemp(path.join(os.tmpdir(), `prolearn-learned-${prefix}-`));
}

interface Run {
  status: string;
  // biome-ignore lint/suspicious/noExplicitAny: stage summaries are free-form JSON, read here by key path
  summaries: Record<string, any>;
  outputs: Record<string, Record<string, string>>;
  logs: string[];
  errors: (string | undefined)[];
}

async function run(
  root: string,
  workdir: string,
  embed: Record<string, unknown>,
  options: { prototypes?: Record<string, unknown>; signal?: AbortSignal; onEvent?: (e: EngineEvent) => void; textAvailability?: number; layout?: string } = {},
): Promise<Run> {
  const pipeline = resolvePipeline(
    definePipeline({
      name: "learned",
      workdir,
      dataset: { kind: "qata-cov19", root, layout: options.layout ?? "prolearn", textAvailability: options.textAvailability ?? 0.5, seed: 5 },
      stages: { ingest: {}, embed, prototypes: options.prototypes ?? {} },
    } as never),
    STAGES,
    { baseDir: path.dirname(root) },
  );
  const logs: string[] = [];
  const result = await runPipeline(pipeline, {
    registry: STAGES,
    signal: options.signal,
    onEvent: (event) => {
      if (event.kind === "log") logs.push(`${event.stage}: ${event.message}`);
      options.onEvent?.(event);
    },
  });
  return {
    status: result.status,
    summaries: Object.fromEntries(result.stages.map((s) => [s.name, s.summary])),
    outputs: Object.fromEntries(result.stages.map((s) => [s.name, s.outputs])),
    logs,
    errors: result.stages.map((s) => s.error),
  };
}

describe("embed: { encoder: learned }", () => {
  let dir: string;
  let root: string;
  before(async () => {
    dir = await scratch("data");
    root = path.join(dir, "data");
    await writeShapeDataset(root, 200, 11);
  });

  test("params: learned-only settings are rejected on the other encoders; textEncoder biomedclip needs a model", () => {
    assert.equal(embedParams.parse({ encoder: "learned" }).encoder, "learned");
    assert.equal(embedParams.safeParse({ encoder: "builtin", imageSize: 64 }).success, false);
    assert.equal(embedParams.safeParse({ encoder: "builtin", head: "ridge" }).success, false);
    assert.equal(embedParams.safeParse({ encoder: "learned", textEncoder: "biomedclip" }).success, false);
    assert.equal(embedParams.safeParse({ encoder: "learned", textEncoder: "biomedclip", model: "m" }).success, true);
    assert.equal(embedParams.safeParse({ encoder: "learned", model: "m" }).success, false);
    // Builtin params parse to the same object as before the learned encoder existed (same cache keys).
    assert.deepEqual(Object.keys(embedParams.parse({})).sort(), ["batchSize", "concurrency", "encoder", "shardRows"]);
  });

  test("its queries find their own reports better than the builtin encoder's; weights are outputs; usefulness in the summary", async (t) => {
    const learned = await run(root, path.join(dir, "work-a"), { ...LEARNED });
    assert.equal(learned.status, "ok", learned.errors.join("\n"));
    const builtin = await run(root, path.join(dir, "work-b"), { encoder: "builtin" });
    assert.equal(builtin.status, "ok", builtin.errors.join("\n"));
    const u = learned.summaries.prototypes.usefulness;
    const b = builtin.summaries.prototypes.usefulness;
    t.diagnostic(`own-report AUC on ${u.samples} validation images: learned ${u.ownReportAuc.toFixed(3)}, builtin ${b.ownReportAuc.toFixed(3)}`);
    for (const key of ["samples", "ownReportAuc", "centredCosine", "marginOverMean", "marginOverRandom", "passed"]) assert.ok(key in u, key);
    assert.ok(u.samples >= 10, JSON.stringify(u));
    assert.ok(u.ownReportAuc > b.ownReportAuc + 0.05, `learned ${u.ownReportAuc} vs builtin ${b.ownReportAuc}`);
    assert.ok(u.ownReportAuc > 0.7 && u.passed, JSON.stringify(u));
    assert.ok(
      learned.logs.some((l) => /^prototypes: usefulness on \d+ validation samples: own-report AUC/.test(l)),
      "the stage log prints the AUC",
    );

    const embed = learned.summaries.embed;
    assert.match(embed.encoder.id, /^learned-ridge\+builtin$/);
    assert.equal(embed.learned.head, "ridge");
    assert.ok(embed.learned.selection.pairedRows > 10);
    assert.ok(Number.isFinite(embed.learned.selection.ridge.crossValidatedAuc));
    const files = learned.outputs.embed!;
    assert.ok(files["learned-encoder.bin"] && files["learned-encoder.json"], Object.keys(files).join(", "));
    const json = JSON.parse(readFileSync(files["learned-encoder.json"]!, "utf8"));
    assert.equal(json.text.id, "builtin");
    assert.equal(json.featureWidth, 6 * 8 + 27, "bottleneck (8 channels) on 3x2 cells + 27 mask fractions");

    // Prototypes are training samples: their query side is those samples' learned image embeddings.
    const { readParquetFile } = await import("../../src/io/parquet.js");
    const { readEmbeddingColumn } = await import("../../src/io/tables.js");
    const emb = await readParquetFile(files["embeddings.parquet"]!);
    const images = readEmbeddingColumn(emb, "image_embedding");
    const ids = emb.getChild("id")!.toArray() as string[];
    const protos = await readParquetFile(learned.outputs.prototypes!["prototypes.parquet"]!);
    const sampleId = protos.getChild("sample_id")!.get(0) as string;
    const query = readEmbeddingColumn(protos, "query").values.subarray(0, images.dim);
    const row = ids.indexOf(sampleId);
    assert.deepEqual(Array.from(query), Array.from(images.values.subarray(row * images.dim, (row + 1) * images.dim)));

    // The same params are cached; another head is another cache key, and reuses the trained trunk.
    const again = await run(root, path.join(dir, "work-a"), { ...LEARNED });
    assert.equal(again.summaries.embed.encoder.digest, embed.encoder.digest);
    const contrastive = await run(root, path.join(dir, "work-a"), { ...LEARNED, head: "contrastive" });
    assert.equal(contrastive.status, "ok", contrastive.errors.join("\n"));
    const c = contrastive.summaries.embed.learned;
    assert.equal(contrastive.summaries.embed.encoder.id, "learned-contrastive+builtin");
    assert.equal(c.trunk.resumedEpochs, LEARNED.epochs, "the trunk came from its checkpoint");
    assert.ok(c.selection.contrastive.steps >= 0 && c.selection.contrastive.curve.length > 1, JSON.stringify(c.selection));
    assert.ok(contrastive.summaries.prototypes.usefulness.ownReportAuc > b.ownReportAuc, JSON.stringify(contrastive.summaries.prototypes.usefulness));
  });

  test("a killed trunk training resumes from its checkpoint and ends with the uninterrupted run's weights", async () => {
    const controller = new AbortController();
    const killed = await run(
      root,
      path.join(dir, "work-c"),
      { ...LEARNED, epochs: 4 },
      {
        signal: controller.signal,
        onEvent: (event) => {
          if (event.kind === "log" && /^trunk epoch 2:/.test(event.message)) controller.abort();
        },
      },
    );
    assert.notEqual(killed.status, "ok");
    const resumed = await run(root, path.join(dir, "work-c"), { ...LEARNED, epochs: 4 });
    assert.equal(resumed.status, "ok", resumed.errors.join("\n"));
    assert.equal(resumed.summaries.embed.learned.trunk.resumedEpochs, 2);
    assert.ok(!resumed.logs.some((l) => /trunk epoch [12]:/.test(l)), "epochs 1-2 are not trained again");
    const fresh = await run(root, path.join(dir, "work-d"), { ...LEARNED, epochs: 4 });
    assert.equal(fresh.summaries.embed.learned.trunk.resumedEpochs, 0);
    assert.deepEqual(readFileSync(resumed.outputs.embed!["learned-encoder.bin"]!), readFileSync(fresh.outputs.embed!["learned-encoder.bin"]!));
    // The encoder's description is a store output too: no times, no resumed epochs, so the same bytes.
    assert.equal(readFileSync(resumed.outputs.embed!["learned-encoder.json"]!, "utf8"), readFileSync(fresh.outputs.embed!["learned-encoder.json"]!, "utf8"));
  });

  test("no validation or test mask is read: corrupting them leaves the trained weights identical", async () => {
    const copy = await scratch("corrupt");
    const root2 = (await writeFixtureDataset({ kind: "qata-cov19", layout: "sgseg", out: path.join(copy, "clean"), n: 60, seed: 11, size: 32 })).root;
    const fixture = await writeFixtureDataset({ kind: "qata-cov19", layout: "sgseg", out: path.join(copy, "data"), n: 60, seed: 11, size: 32 });
    const white = await sharp(Buffer.alloc(32 * 32, 255), { raw: { width: 32, height: 32, channels: 1 } })
      .png()
      .toBuffer();
    let corrupted = 0;
    for (const split of ["valid", "test"]) {
      const masks = path.join(fixture.root, "images", split, "masks");
      for (const name of readdirSync(masks)) {
        writeFileSync(path.join(masks, name), white);
        corrupted++;
      }
    }
    assert.ok(corrupted > 10);
    const a = await run(root2, path.join(copy, "work-a"), { ...LEARNED, epochs: 2 }, { layout: "sgseg" });
    const b = await run(fixture.root, path.join(copy, "work-b"), { ...LEARNED, epochs: 2 }, { layout: "sgseg" });
    assert.equal(b.status, "ok", b.errors.join("\n"));
    assert.notEqual(a.outputs.ingest!["samples.parquet"], undefined);
    assert.deepEqual(readFileSync(a.outputs.embed!["learned-encoder.bin"]!), readFileSync(b.outputs.embed!["learned-encoder.bin"]!));
  });
});

test("learned head core: grid pooling covers every pixel once; ridge primal and dual agree; Cholesky solves", () => {
  const map = Float32Array.from({ length: 5 * 4 }, (_, i) => i);
  const out = new Float32Array(6);
  poolGrid(map, 0, 5, 4, 1, 3, 2, out, 0);
  // rows 0, 1-2, 3-4; columns 0-1, 2-3
  assert.deepEqual(Array.from(out), [0.5, 2.5, 6.5, 8.5, 14.5, 16.5]);
  const a = Float64Array.from([4, 2, 2, 3]);
  const x = choleskySolve(a, Float64Array.from([2, 1]), 2, 1);
  assert.ok(Math.abs(4 * x[0]! + 2 * x[1]! - 2) < 1e-12 && Math.abs(2 * x[0]! + 3 * x[1]! - 1) < 1e-12);
  const n = 6;
  const d = 4;
  const features = Float64Array.from({ length: n * d }, (_, i) => Math.sin(i * 1.7));
  const targets = Float64Array.from({ length: n * 2 }, (_, i) => Math.cos(i * 0.9));
  const primal = ridge(features, targets, n, d, 2, 0.1);
  const dual = ridge(Float64Array.from(features.subarray(0, 3 * d)), Float64Array.from(targets.subarray(0, 6)), 3, d, 2, 0.1);
  assert.equal(primal.length, d * 2);
  assert.equal(dual.length, d * 2);
  // The dual (3 rows < 4 features) equals the primal formula on the same 3 rows.
  const lambda = 0.1 * (Array.from(features.subarray(0, 3 * d)).reduce((s, v) => s + v * v, 0) / d);
  const gram = new Float64Array(d * d);
  const rhs = new Float64Array(d * 2);
  for (let i = 0; i < 3; i++)
    for (let p = 0; p < d; p++) {
      for (let q = 0; q < d; q++) gram[p * d + q] += features[i * d + p]! * features[i * d + q]!;
      for (let c = 0; c < 2; c++) rhs[p * 2 + c] += features[i * d + p]! * targets[i * 2 + c]!;
    }
  for (let p = 0; p < d; p++) gram[p * d + p] += lambda;
  const expected = choleskySolve(gram, rhs, d, 2);
  for (let i = 0; i < d * 2; i++) assert.ok(Math.abs(expected[i]! - dual[i]!) < 1e-9, `${expected[i]} vs ${dual[i]}`);
});
