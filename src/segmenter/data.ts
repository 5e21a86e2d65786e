import sharp from "sharp";
import { DataError } from "../errors.js";
import { SAMPLES_TABLE } from "../ingest/tables.js";
import { withTable } from "../io/tables.js";
import type { RowCache } from "../pipeline/stage.js";
import type { Batch, BatchGuidance } from "./guidance.js";
import { deriveSeed, mulberry32 } from "./prng.js";

/** One ingested sample, decoded to the model's size. */
export interface DecodedSample {
  id: string;
  split: string;
  /** The normalised report where `report_available`, else null (later stages must not see it). */
  report: string | null;
  /**
   * The report counts within the text budget (`report_in_budget`): only these may feed a model
   * choice such as early stopping or the filter's threshold. Validation reports outside it are
   * still in `report` for diagnostics; test reports are never in it.
   */
  inBudget: boolean;
  /** Row index in samples.parquet (same order as embeddings.parquet). */
  row: number;
  /** H * W * C bytes, 0..255. */
  pixels: Uint8Array;
  /** H * W bytes, 0/1. */
  mask: Uint8Array;
}

export interface DecodeOptions {
  size: number;
  channels: 1 | 3;
  /** Decoded pixels are kept here keyed by content hash, so reruns skip decoding. */
  cache?: RowCache;
  /** Only rows whose split is in this list. */
  splits?: readonly string[];
}

/**
 * Reads samples.parquet (through its declaration, in slices of 256 rows so the image bytes of one
 * slice are in memory at a time) and decodes every (selected) image and mask with sharp: images
 * resized to size x size (bilinear, aspect ratio not kept, as the reference code does), to grey
 * or RGB; masks resized with nearest neighbour and binarised (> 0).
 */
export async function loadSamples(file: string, options: DecodeOptions): Promise<DecodedSample[]> {
  return withTable(SAMPLES_TABLE, file, async (samples) => {
    const out: DecodedSample[] = [];
    const columns = ["id", "split", "image", "mask", "report_normalized", "report_available", "report_in_budget", "image_sha256", "mask_sha256"] as const;
    for await (const { offset, rows } of samples.slices(columns, 256)) {
      for (let i = 0; i < rows.numRows; i++) {
        const split = rows.split[i]!;
        if (options.splits && !options.splits.includes(split)) continue;
        const row = offset + i;
        const id = rows.id[i]!;
        const report = rows.report_available[i] ? (rows.report_normalized[i] ?? null) : null;
        const inBudget = report !== null && rows.report_in_budget[i] === true;
        const decoded = await decodeCached(rows.image[i]!, rows.mask[i]!, `${rows.image_sha256[i]}:${rows.mask_sha256[i]}`, options, { file, row, id });
        out.push({ id, split, report, inBudget, row, ...decoded });
      }
    }
    return out;
  });
}

/** Decodes one pair, or takes it from the row cache (keyed by the content hashes and the decode size). */
async function decodeCached(
  image: Uint8Array,
  mask: Uint8Array,
  hashes: string,
  options: DecodeOptions,
  where: { file: string; row: number; id: string },
): Promise<{ pixels: Uint8Array; mask: Uint8Array }> {
  const key = `${hashes}:${options.size}:${options.channels}`;
  const pixelCount = options.size * options.size;
  const cached = options.cache?.get(key);
  if (cached && cached.length === pixelCount * (options.channels + 1)) {
    return { pixels: new Uint8Array(cached.subarray(0, pixelCount * options.channels)), mask: new Uint8Array(cached.subarray(pixelCount * options.channels)) };
  }
  let decoded: { pixels: Uint8Array; mask: Uint8Array };
  try {
    decoded = await decodePair(image, mask, options.size, options.channels);
  } catch (error) {
    throw new DataError(`cannot decode image or mask of sample ${where.id}: ${(error as Error).message}`, { location: { file: where.file, row: where.row } });
  }
  options.cache?.put(key, Buffer.concat([decoded.pixels, decoded.mask]));
  return decoded;
}

/** An encoded image resized to size x size (bilinear, aspect ratio not kept), grey or RGB: what every model here sees. */
export async function decodeImage(image: Uint8Array, size: number, channels: 1 | 3): Promise<Uint8Array> {
  let pipeline = sharp(image).resize(size, size, { fit: "fill", kernel: "linear" }).removeAlpha();
  pipeline = channels === 1 ? pipeline.greyscale() : pipeline.toColourspace("srgb");
  const { data, info } = await pipeline.raw().toBuffer({ resolveWithObject: true });
  if (info.channels !== channels) throw new Error(`decoded ${info.channels} channels, wanted ${channels}`);
  return new Uint8Array(data);
}

export async function decodePair(image: Uint8Array, mask: Uint8Array, size: number, channels: 1 | 3): Promise<{ pixels: Uint8Array; mask: Uint8Array }> {
  const data = await decodeImage(image, size, channels);
  const maskRaw = await sharp(mask).resize(size, size, { fit: "fill", kernel: "nearest" }).greyscale().raw().toBuffer();
  const binary = new Uint8Array(size * size);
  for (let i = 0; i < binary.length; i++) binary[i] = maskRaw[i]! > 0 ? 1 : 0;
  return { pixels: data, mask: binary };
}

/** Copies samples into batch arrays: images [B*H*W*C] in 0..1, masks [B*H*W]. */
export function stackBatch(samples: readonly DecodedSample[]): { images: Float32Array; masks: Float32Array } {
  const pixels = samples[0]!.pixels.length;
  const maskPixels = samples[0]!.mask.length;
  const images = new Float32Array(samples.length * pixels);
  const masks = new Float32Array(samples.length * maskPixels);
  samples.forEach((s, b) => {
    for (let i = 0; i < pixels; i++) images[b * pixels + i] = s.pixels[i]! / 255;
    for (let i = 0; i < maskPixels; i++) masks[b * maskPixels + i] = s.mask[i]!;
  });
  return { images, masks };
}

/** PNG bytes of a 0..1 (or 0/1) single-channel map, for examples tables. */
export async function greyPng(values: ArrayLike<number>, size: number, scale = 255): Promise<Uint8Array> {
  const bytes = new Uint8Array(size * size);
  for (let i = 0; i < bytes.length; i++) bytes[i] = Math.max(0, Math.min(255, Math.round(values[i]! * scale)));
  return new Uint8Array(
    await sharp(bytes, { raw: { width: size, height: size, channels: 1 } })
      .png()
      .toBuffer(),
  );
}

export async function pixelsPng(pixels: Uint8Array, size: number, channels: 1 | 3): Promise<Uint8Array> {
  return new Uint8Array(
    await sharp(pixels, { raw: { width: size, height: size, channels } })
      .png()
      .toBuffer(),
  );
}

/**
 * Training batches of the guide with a seeded share of images blanked (all zeros). Which images
 * are blanked depends on (seed, epoch, sample), so a resumed run blanks the same ones as an
 * uninterrupted run.
 */
export function blankedBatches(
  samples: readonly DecodedSample[],
  guidance: (indices: number[]) => BatchGuidance,
  share: number,
  seed: number,
): (indices: number[], epoch: number) => Batch {
  return (indices, epoch) => {
    const batch = makeBatch(samples, indices, guidance);
    if (share <= 0) return batch;
    const pixels = batch.images.length / batch.size;
    indices.forEach((sample, b) => {
      if (mulberry32(deriveSeed(seed, "image-dropout", epoch, sample))() < share) batch.images.fill(0, b * pixels, (b + 1) * pixels);
    });
    return batch;
  };
}

export function makeBatch(samples: readonly DecodedSample[], indices: number[], guidance: (indices: number[]) => BatchGuidance): Batch {
  const { images, masks } = stackBatch(indices.map((i) => samples[i]!));
  return { size: indices.length, images, masks, guidance: guidance(indices) };
}

/** Samples of `split` whose report may feed a model choice (within the text budget, non-empty). */
export function budgetedPairs(samples: readonly DecodedSample[], split: string): DecodedSample[] {
  return samples.filter((s) => s.split === split && s.inBudget && s.report !== null && s.report.trim() !== "");
}
