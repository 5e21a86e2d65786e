import sharp from "sharp";
import { DataError } from "../errors.js";
import { BIOMEDCLIP_IMAGE_PREPROCESSING, type ImagePreprocessing } from "./preprocessing-spec.js";

// The settings live in ./preprocessing-spec.ts (no sharp), so model manifests can be read without loading sharp.
export { BIOMEDCLIP_IMAGE_PREPROCESSING, type ImagePreprocessing } from "./preprocessing-spec.js";

/** torchvision `Resize(int)`: the short side becomes `size`, the long side is truncated, not rounded. */
export function shortestSideSize(width: number, height: number, size: number): { width: number; height: number } {
  if (width <= height) return { width: size, height: Math.max(size, Math.trunc((size * height) / width)) };
  return { width: Math.max(size, Math.trunc((size * width) / height)), height: size };
}

/** torchvision `CenterCrop`: `int(round((length - size) / 2))` with Python's round-half-to-even. */
export function centerCropOffset(length: number, size: number): number {
  const half = (length - size) / 2;
  const floor = Math.floor(half);
  if (half - floor !== 0.5) return Math.round(half);
  return floor % 2 === 0 ? floor : floor + 1;
}

/** One encoded image -> CHW float32 [3, size, size], normalised. */
export async function preprocessImage(bytes: Uint8Array, config: ImagePreprocessing = BIOMEDCLIP_IMAGE_PREPROCESSING, label?: string): Promise<Float32Array> {
  const out = new Float32Array(3 * config.size * config.size);
  await preprocessImageInto(bytes, config, out, 0, label);
  return out;
}

/** Writes one preprocessed image into `target` at `offset` (so a batch tensor is filled without copies). */
export async function preprocessImageInto(bytes: Uint8Array, config: ImagePreprocessing, target: Float32Array, offset: number, label?: string): Promise<void> {
  const size = config.size;
  let decoded: { data: Buffer; info: { channels: number } };
  try {
    const image = sharp(bytes, { failOn: "error" });
    const meta = await image.metadata();
    if (!meta.width || !meta.height) throw new Error("image has no size");
    const resized = shortestSideSize(meta.width, meta.height, size);
    let pipeline = image.removeAlpha();
    if (resized.width !== meta.width || resized.height !== meta.height) {
      pipeline = pipeline.resize({ width: resized.width, height: resized.height, kernel: "cubic", fit: "fill" });
    }
    pipeline = pipeline.extract({ left: centerCropOffset(resized.width, size), top: centerCropOffset(resized.height, size), width: size, height: size });
    decoded = await pipeline.raw({ depth: "uchar" }).toBuffer({ resolveWithObject: true });
  } catch (error) {
    throw new DataError(`cannot decode image${label ? ` ${label}` : ""}: ${(error as Error).message}`, {
      location: { file: label },
      hint: "images must be PNG or JPEG files",
      cause: error,
    });
  }
  const { data, info } = decoded;
  const channels = info.channels;
  const plane = size * size;
  for (let c = 0; c < 3; c++) {
    // Grey (1 channel, or 2 = grey + alpha that removeAlpha kept) is read from channel 0 for all three.
    const source = channels >= 3 ? c : 0;
    const mean = config.mean[c]!;
    const std = config.std[c]!;
    const base = offset + c * plane;
    for (let i = 0; i < plane; i++) target[base + i] = (data[i * channels + source]! / 255 - mean) / std;
  }
}
