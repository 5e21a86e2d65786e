/**
 * Embedding throughput on this machine's CPU: rows/s of the builtin encoder and of the
 * BiomedCLIP code path, with a batch-size sweep. The BiomedCLIP figures use the TEST-BUILT tiny
 * ONNX model (same tensors and preprocessing, a few hundred KB of random weights), so they
 * measure decoding, preprocessing, tokenisation and ONNX Runtime overhead, not ViT-B/16 compute.
 * Baseline: each encoder at batch size 1, measured in the same run; other rows are ratios to it.
 *
 *   node --import tsx bench/embed.ts
 */
import { existsSync } from "node:fs";
import { mkdtemp, readdir, readFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { embedInBatches } from "../src/embed/batches.js";
import { createEncoder } from "../src/embed/factory.js";
import type { Encoder } from "../src/embed/encoder.js";
import { writeTinyBiomedclipFolder } from "../test/embed/tiny-biomedclip.js";
import { blobImage } from "../test/embed/helpers.js";

const REAL = process.env.PROLEARN_REAL_DATA ?? path.resolve(import.meta.dirname, "../../shared/data");
const IMAGES_DIR = path.join(REAL, "qata-cov19/QaTa/images/train/images");
const ANNOTATION = path.join(REAL, "qata-cov19/QaTa/prompts/annotation.json");

async function loadImages(n: number): Promise<{ images: Uint8Array[]; source: string }> {
  if (existsSync(IMAGES_DIR)) {
    const names = (await readdir(IMAGES_DIR)).sort().slice(0, n);
    return {
      images: await Promise.all(names.map(async (f) => new Uint8Array(await readFile(path.join(IMAGES_DIR, f))))),
      source: `${names.length} real QaTa 224x224 PNGs`,
    };
  }
  return { images: await Promise.all(Array.from({ length: n }, (_, i) => blobImage(i))), source: `${n} generated 224x224 PNGs` };
}

async function loadTexts(n: number): Promise<{ texts: string[]; source: string }> {
  if (existsSync(ANNOTATION)) {
    const data = JSON.parse(await readFile(ANNOTATION, "utf8")) as Record<string, { caption: string }[]>;
    return { texts: data.train!.slice(0, n).map((r) => r.caption), source: `${n} real QaTa captions` };
  }
  return {
    texts: Array.from({ length: n }, (_, i) => `Unilateral pulmonary infection, one infected area, lower left lung ${i}.`),
    source: `${n} generated captions`,
  };
}

async function rate(count: number, run: () => Promise<unknown>): Promise<number> {
  await run(); // warm-up (JIT, ONNX Runtime arenas, sharp thread pool)
  const start = performance.now();
  await run();
  return count / ((performance.now() - start) / 1000);
}

async function sweep(label: string, encoder: Encoder, kind: "images" | "texts", items: readonly (Uint8Array | string)[], batchSizes: number[]) {
  let baseline = 0;
  for (const batchSize of batchSizes) {
    const perSecond = await rate(items.length, () =>
      embedInBatches(items.length, encoder.dim, { batchSize, concurrency: 2 }, (s, e) =>
        kind === "images" ? encoder.embedImages(items.slice(s, e) as Uint8Array[]) : encoder.embedTexts(items.slice(s, e) as string[]),
      ),
    );
    if (batchSize === batchSizes[0]) baseline = perSecond;
    console.log(`| ${label} | ${kind} | ${batchSize} | ${perSecond.toFixed(1)} | ${(perSecond / baseline).toFixed(2)}x |`);
  }
}

const { images, source: imageSource } = await loadImages(128);
const { texts, source: textSource } = await loadTexts(2048);
const modelDir = path.join(await mkdtemp(path.join(os.tmpdir(), "prolearn-bench-embed-")), "tiny-biomedclip");
await writeTinyBiomedclipFolder(modelDir);
console.log(`# embed bench: ${os.cpus().length} x ${os.cpus()[0]?.model}, Node ${process.version}; ${imageSource}; ${textSource}; concurrency 2`);
console.log("| encoder | input | batch | rows/s | vs batch 1 |");
console.log("|---|---|---|---|---|");
const builtin = await createEncoder({ encoder: "builtin", fitTexts: texts });
await sweep("builtin", builtin, "images", images, [1, 8, 32, 64]);
await sweep("builtin", builtin, "texts", texts, [1, 8, 32, 64, 256]);
const biomedclip = await createEncoder({ encoder: "biomedclip", model: modelDir });
await sweep("biomedclip (test-built tiny ONNX)", biomedclip, "images", images, [1, 8, 32, 64]);
await sweep("biomedclip (test-built tiny ONNX)", biomedclip, "texts", texts.slice(0, 512), [1, 8, 32, 64]);
await biomedclip.close();
