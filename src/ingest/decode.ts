import { readFile } from "node:fs/promises";
import path from "node:path";
import sharp, { type OutputInfo } from "sharp";
import type { RowCache } from "../pipeline/stage.js";
import { hashJson, sha256 } from "../util/hash.js";
import { encodeGreyPngScanlines, readPngHeader, scanlineLength, sniffFormat } from "./png.js";
import { quarantineEntry, type QuarantineEntry, type QuarantineReason } from "./reasons.js";
import type { SampleDescriptor } from "./scan.js";

export interface DecodeParams {
  /** Mask pixels with a value above this are foreground (masks whose maximum is 1 use value 1). */
  maskThreshold: number;
  /** Largest fraction of mask pixels allowed within 64 grey levels of the threshold. */
  maskAmbiguousFraction: number;
}

/** Bumped when decoding or binarisation changes, so cached rows from older code are not reused. */
export const DECODE_VERSION = 3;

const SUPPORTED_FORMATS = new Set(["png", "jpeg", "tiff", "webp"]);

export interface DecodedSample {
  width: number;
  height: number;
  format: string;
  /** PNG, 8-bit grey, values 0/1. */
  maskPng: Uint8Array;
  maskEmpty: boolean;
  maskCoverage: number;
}

export type DecodeOutcome = { ok: true; value: DecodedSample } | { ok: false; reason: QuarantineReason; detail: string; source: "image" | "mask" };

/** Grey-level counts of the mask being binarised (binarisation is synchronous, so one scratch serves all). */
const histogram = new Float64Array(256);

/**
 * Binarisation rule: foreground = value > threshold (127 by default), except masks whose maximum
 * is 1, which are label masks already (1 = foreground). A mask is "not binary" when more than
 * `maskAmbiguousFraction` of its pixels lie within 64 levels of the threshold: JPEG noise on a
 * 0/255 mask stays near 0 and 255, a photograph or a soft probability map does not.
 *
 * Writes the 0/1 result straight into PNG scanlines (`out`: zero-filled, (width + 1) * height
 * bytes, filter byte 0 per row), so no intermediate bit plane is built. The mask is read four
 * pixels at a time: a 0/255 mask is mostly whole words of 0 or 255, which cost one compare.
 */
export function binarizeIntoScanlines(
  grey: Uint8Array,
  width: number,
  height: number,
  params: DecodeParams,
  out: Uint8Array,
): { foreground: number; ambiguousFraction: number } {
  const n = width * height;
  const t = params.maskThreshold;
  const hist = histogram;
  hist.fill(0);
  // Word reads need a 4-byte-aligned view; an unaligned buffer (rare: sharp allocates its own)
  // goes byte by byte through the tail loop below.
  const wordCount = (grey.byteOffset & 3) === 0 ? n >>> 2 : 0;
  const words = wordCount > 0 ? new Uint32Array(grey.buffer, grey.byteOffset, wordCount) : new Uint32Array(0);
  let zeroWords = 0;
  let fullWords = 0;
  for (let k = 0; k < wordCount; k++) {
    const word = words[k]!;
    if (word === 0) {
      zeroWords++;
      continue;
    }
    // Pixel p sits at out[p + row + 1]: each earlier row adds one filter byte.
    let p = k << 2;
    let row = (p / width) | 0;
    let x = p - row * width;
    if (word === 0xffffffff && 255 > t) {
      fullWords++;
      for (let j = 0; j < 4; j++) {
        out[p + row + 1] = 1;
        p++;
        if (++x === width) {
          x = 0;
          row++;
        }
      }
      continue;
    }
    for (let j = 0; j < 4; j++) {
      const v = grey[p]!;
      hist[v]!++;
      if (v > t) out[p + row + 1] = 1;
      p++;
      if (++x === width) {
        x = 0;
        row++;
      }
    }
  }
  for (let p = wordCount << 2; p < n; p++) {
    const v = grey[p]!;
    hist[v]!++;
    if (v > t) out[p + ((p / width) | 0) + 1] = 1;
  }
  hist[0]! += 4 * zeroWords;
  hist[255]! += 4 * fullWords;
  let max = 255;
  while (max > 0 && hist[max] === 0) max--;
  if (max <= 1) {
    // A 0/1 label mask: its ones are the foreground whatever the threshold.
    for (let y = 0, p = 0; y < height; y++) {
      const o = y * (width + 1) + 1;
      for (let x = 0; x < width; x++, p++) out[o + x] = grey[p]!;
    }
    return { foreground: hist[1]!, ambiguousFraction: 0 };
  }
  let foreground = 0;
  for (let v = t + 1; v < 256; v++) foreground += hist[v]!;
  let ambiguous = 0;
  for (let v = Math.max(0, t - 63); v <= Math.min(255, t + 64); v++) ambiguous += hist[v]!;
  return { foreground, ambiguousFraction: ambiguous / n };
}

/** The binarisation rule of `binarizeIntoScanlines` as a plain 0/1 bit plane. */
export function binarizeMask(grey: Uint8Array, params: DecodeParams): { bits: Uint8Array; foreground: number; ambiguousFraction: number } {
  const out = new Uint8Array(grey.length + 1);
  const stats = binarizeIntoScanlines(grey, grey.length, 1, params, out);
  return { bits: out.subarray(1), ...stats };
}

/** Scanline scratch for the mask PNG, reused: binarise and encode run synchronously back to back. */
let scanlines = Buffer.alloc(0);

function zeroedScanlines(width: number, height: number): Buffer {
  const length = scanlineLength(width, height);
  if (scanlines.length < length) scanlines = Buffer.alloc(length);
  else scanlines.fill(0, 0, length);
  return scanlines;
}

async function classifyFailure(bytes: Uint8Array, error: unknown): Promise<{ reason: QuarantineReason; detail: string }> {
  const message = (error as Error).message.split("\n")[0]!;
  try {
    const meta = await sharp(bytes).metadata();
    if (meta.format && !SUPPORTED_FORMATS.has(meta.format))
      return { reason: "unsupported-format", detail: `${meta.format} image; use PNG, JPEG, TIFF or WebP` };
    return { reason: "truncated-image", detail: `header reads as ${meta.format} ${meta.width}x${meta.height} but decoding fails: ${message}` };
  } catch {
    return { reason: "unreadable-image", detail: message };
  }
}

/**
 * The common case, an 8-bit PNG image with an 8-bit grey PNG mask of the same size (QaTa-COV19,
 * MosMedData+), decodes both files fully in ONE libvips pipeline: the mask, with the image joined
 * as extra bands, then only the mask band kept. A band join computes every input, so the image is
 * still decoded to the last row (a truncated image fails here as it does alone). A pipeline costs
 * about as much to set up as a 224x224 decode, so this saves a third of the decode time. Anything
 * else (JPEG, 16-bit, a mask with alpha or of another size) or any error returns undefined, and
 * the pair goes through `decodePairSeparately`, which also names what is wrong. The mask pixels
 * are the same either way.
 */
export async function decodeJoined(imageBytes: Uint8Array, maskBytes: Uint8Array): Promise<{ width: number; height: number; grey: Uint8Array } | undefined> {
  const image = readPngHeader(imageBytes);
  const mask = readPngHeader(maskBytes);
  if (!image || !mask || image.bitDepth !== 8 || mask.bitDepth !== 8 || mask.colourType !== 0 || mask.hasTransparency) return undefined;
  if (image.width !== mask.width || image.height !== mask.height) return undefined;
  let decoded: { data: Buffer; info: OutputInfo };
  try {
    decoded = await sharp(maskBytes, { failOn: "truncated" })
      .joinChannel(Buffer.from(imageBytes.buffer, imageBytes.byteOffset, imageBytes.byteLength), { failOn: "truncated" })
      .extractChannel(0)
      .raw()
      .toBuffer({ resolveWithObject: true });
  } catch {
    return undefined;
  }
  const { data, info } = decoded;
  // One 8-bit band, the mask's own size.
  if (info.width !== mask.width || info.height !== mask.height || info.channels !== 1 || data.length !== info.width * info.height) return undefined;
  return { width: info.width, height: info.height, grey: data };
}

/** Binarises a decoded mask and encodes it, or says why it is not a usable mask. */
function finishMask(grey: Uint8Array, width: number, height: number, format: string, params: DecodeParams): DecodeOutcome {
  const out = zeroedScanlines(width, height);
  const { foreground, ambiguousFraction } = binarizeIntoScanlines(grey, width, height, params, out);
  if (ambiguousFraction > params.maskAmbiguousFraction) {
    return {
      ok: false,
      reason: "mask-not-binary",
      detail: `${(ambiguousFraction * 100).toFixed(1)}% of pixels lie within 64 levels of the threshold ${params.maskThreshold} (allowed ${(params.maskAmbiguousFraction * 100).toFixed(1)}%)`,
      source: "mask",
    };
  }
  const maskPng = encodeGreyPngScanlines(out, width, height);
  return { ok: true, value: { width, height, format, maskPng, maskEmpty: foreground === 0, maskCoverage: foreground / (width * height) } };
}

/** Decodes and validates one image/mask pair (pure over bytes). */
export async function decodePair(imageBytes: Uint8Array, maskBytes: Uint8Array, params: DecodeParams): Promise<DecodeOutcome> {
  const joined = await decodeJoined(imageBytes, maskBytes);
  if (joined) return finishMask(joined.grey, joined.width, joined.height, "png", params);
  return decodePairSeparately(imageBytes, maskBytes, params);
}

/** The general path: image and mask decoded one after the other, each failure named. */
export async function decodePairSeparately(imageBytes: Uint8Array, maskBytes: Uint8Array, params: DecodeParams): Promise<DecodeOutcome> {
  let width: number;
  let height: number;
  let format: string;
  try {
    const sniffed = sniffFormat(imageBytes);
    if (!sniffed) return { ok: false, ...(await classifyFailure(imageBytes, new Error("Input buffer contains unsupported image format"))), source: "image" };
    const { info } = await sharp(imageBytes, { failOn: "truncated" }).raw().toBuffer({ resolveWithObject: true });
    width = info.width;
    height = info.height;
    format = sniffed;
  } catch (error) {
    return { ok: false, ...(await classifyFailure(imageBytes, error)), source: "image" };
  }
  let grey: Buffer;
  let maskInfo: { width: number; height: number; channels: number };
  try {
    const decoded = await sharp(maskBytes, { failOn: "truncated" }).removeAlpha().greyscale().raw().toBuffer({ resolveWithObject: true });
    grey = decoded.data;
    maskInfo = decoded.info;
  } catch (error) {
    const failure = await classifyFailure(maskBytes, error);
    return { ok: false, reason: failure.reason === "unsupported-format" ? "unsupported-format" : "unreadable-mask", detail: failure.detail, source: "mask" };
  }
  if (maskInfo.width !== width || maskInfo.height !== height) {
    return { ok: false, reason: "mask-size-mismatch", detail: `image ${width}x${height}, mask ${maskInfo.width}x${maskInfo.height}`, source: "mask" };
  }
  if (maskInfo.channels !== 1) grey = grey.subarray(0, width * height);
  return finishMask(grey, width, height, format, params);
}

function encodeCached(outcome: DecodeOutcome): Buffer {
  if (!outcome.ok)
    return Buffer.concat([Buffer.from([0]), Buffer.from(JSON.stringify({ reason: outcome.reason, detail: outcome.detail, source: outcome.source }))]);
  const { maskPng, ...meta } = outcome.value;
  const header = Buffer.from(JSON.stringify(meta));
  const length = Buffer.alloc(4);
  length.writeUInt32LE(header.length);
  return Buffer.concat([Buffer.from([1]), length, header, maskPng]);
}

function decodeCached(buffer: Buffer): DecodeOutcome | undefined {
  try {
    if (buffer[0] === 0)
      return { ok: false, ...(JSON.parse(buffer.subarray(1).toString("utf8")) as { reason: QuarantineReason; detail: string; source: "image" | "mask" }) };
    if (buffer[0] !== 1) return undefined;
    const length = buffer.readUInt32LE(1);
    const meta = JSON.parse(buffer.subarray(5, 5 + length).toString("utf8")) as Omit<DecodedSample, "maskPng">;
    return { ok: true, value: { ...meta, maskPng: new Uint8Array(buffer.subarray(5 + length)) } };
  } catch {
    // A damaged cache entry is a miss, never a failure.
    return undefined;
  }
}

export interface SampleRow {
  id: string;
  dataset: string;
  split: string;
  image: Uint8Array;
  mask: Uint8Array;
  width: number;
  height: number;
  image_format: string;
  report: string | null;
  report_normalized: string | null;
  report_available: boolean;
  report_in_budget: boolean;
  image_sha256: string;
  mask_sha256: string;
  source_image: string;
  source_mask: string;
  mask_empty: boolean;
  mask_coverage: number;
}

/**
 * Reads, hashes and decodes one sample. The decode result is cached under (image sha256, mask
 * sha256, decode params), so a rerun after adding files decodes only new or changed pairs.
 */
export async function ingestSample(
  root: string,
  sample: SampleDescriptor,
  dataset: string,
  params: DecodeParams,
  cache: RowCache | undefined,
  normalize: (text: string) => string,
): Promise<{ row?: SampleRow; problem?: QuarantineEntry; cacheHit: boolean }> {
  const imagePath = path.join(root, sample.image);
  const maskPath = path.join(root, sample.mask);
  let imageBytes: Buffer;
  let maskBytes: Buffer;
  try {
    imageBytes = await readFile(imagePath);
  } catch (error) {
    return {
      problem: quarantineEntry({ source: sample.image, id: sample.id, reason: "unreadable-image", detail: (error as Error).message, scope: "image" }),
      cacheHit: false,
    };
  }
  try {
    maskBytes = await readFile(maskPath);
  } catch (error) {
    return {
      problem: quarantineEntry({ source: sample.mask, id: sample.id, reason: "unreadable-mask", detail: (error as Error).message, scope: "image" }),
      cacheHit: false,
    };
  }
  const imageSha = sha256(imageBytes);
  const maskSha = sha256(maskBytes);
  const key = hashJson({ v: DECODE_VERSION, image: imageSha, mask: maskSha, params });
  const cached = cache?.get(key);
  let outcome = cached ? decodeCached(cached) : undefined;
  const cacheHit = outcome !== undefined;
  if (!outcome) {
    outcome = await decodePair(imageBytes, maskBytes, params);
    cache?.put(key, encodeCached(outcome));
  }
  if (!outcome.ok) {
    return {
      problem: quarantineEntry({
        source: outcome.source === "image" ? sample.image : sample.mask,
        id: sample.id,
        reason: outcome.reason,
        detail: outcome.detail,
        scope: "image",
      }),
      cacheHit,
    };
  }
  const v = outcome.value;
  const row: SampleRow = {
    id: sample.id,
    dataset,
    split: sample.split,
    image: imageBytes,
    mask: v.maskPng,
    width: v.width,
    height: v.height,
    image_format: v.format,
    report: sample.report,
    report_normalized: sample.report === null ? null : normalize(sample.report),
    report_available: sample.available,
    report_in_budget: sample.inBudget,
    image_sha256: imageSha,
    mask_sha256: maskSha,
    source_image: sample.image,
    source_mask: sample.mask,
    mask_empty: v.maskEmpty,
    mask_coverage: v.maskCoverage,
  };
  const problem = v.maskEmpty
    ? quarantineEntry({
        source: sample.mask,
        id: sample.id,
        reason: "empty-mask",
        detail: "the mask has no foreground pixel; the sample is kept with mask_empty = true",
        scope: "image",
      })
    : undefined;
  return { row, problem, cacheHit };
}
