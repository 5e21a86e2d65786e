import sharp from "sharp";
import { DataError } from "../errors.js";

/**
 * BiomedCLIP's image preprocessing (open_clip `image_transform` for ViT-B/16 at 224), in
 * TypeScript: resize the shortest side to `size` with a bicubic kernel, center-crop
 * `size` x `size`, scale to 0..1, normalise per channel. Grey images are repeated to 3 channels
 * and an alpha channel is dropped, as PIL's `convert("RGB")` does.
 *
 * Sharp's cubic kernel is Catmull-Rom-like while PIL's bicubic uses a = -0.5 with antialiasing,
 * so resized pixels can differ from PyTorch's by a few grey levels; pixels that need no resize
 * (every QaTa image is already 224 x 224) are bit-identical.
 */
export interface ImagePreprocessing {
  size: number;
  resize: "shortest-side";
  interpolation: "bicubic";
  crop: "center";
  mean: [number, number, number];
  std: [number, number, number];
}

export const BIOMEDCLIP_IMAGE_PREPROCESSING: ImagePreprocessing = {
  size: 224,
  resize: "shortest-side",
  interpolation: "bicubic",
  crop: "center",
  mean: [0.48145466, 0.4578275, 0.40821073],
  std: [0.26862954, 0.26130258, 0.27577711],
};

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
    throw new DataError(`cannot decode image${label ? ` ${label}` : ""}: ${(error as Error).message}`, { location: { file: label }, hint: "images must be PNG or JPEG files", cause: error });
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
