import sharp from "sharp";
import { DataError } from "../errors.js";
import { seededGaussian } from "./seeded.js";

/**
 * The builtin image encoder: zone statistics of intensity, local contrast and redness on
 * several grids, each expressed relative to the whole image, then a seeded Gaussian random
 * projection to `dim` and L2 normalisation.
 *
 * Why these features: the lesions in the three datasets are regional changes of brightness and
 * texture. COVID-19 infection on a chest X-ray is an opacity (a brighter, smoother region) in
 * some of the six lung zones the reports name (upper/middle/lower x left/right): the 3 x 2 grid
 * is those zones; the finer grids localise smaller lesions (CT ground-glass areas, polyps).
 * A polyp is a textured, often redder bump at some position and of some size, which the
 * contrast and redness statistics at several scales capture. Every statistic is taken
 * relative to the image's own mean and spread, so exposure and scanner differences cancel and
 * the cosine between two images compares where their abnormal regions are, not how bright the
 * films are. It is a stand-in: it knows nothing about anatomy, and BiomedCLIP should replace it
 * wherever the weights are available.
 */
export interface GridImageConfig {
  kind: "grid-zone-statistics";
  size: number;
  resize: "fill-bicubic";
  /** [rows, cols] of each grid */
  grids: [number, number][];
  statistics: ["mean-intensity", "intensity-spread", "local-contrast", "redness"];
  projection: { kind: "gaussian"; seed: number };
  dim: number;
}

export function gridImageConfig(dim: number, seed = 20250716): GridImageConfig {
  return {
    kind: "grid-zone-statistics",
    size: 224,
    resize: "fill-bicubic",
    grids: [
      [1, 1],
      [2, 2],
      [3, 2],
      [3, 3],
      [4, 4],
      [6, 6],
      [8, 8],
    ],
    statistics: ["mean-intensity", "intensity-spread", "local-contrast", "redness"],
    projection: { kind: "gaussian", seed },
    dim,
  };
}

const STATS = 4;

export function gridFeatureCount(config: GridImageConfig): number {
  return config.grids.reduce((sum, [r, c]) => sum + r * c, 0) * STATS;
}

/** Decodes and resizes an image to size x size and returns luminance, local contrast and redness planes (0..1 scale). */
async function planes(bytes: Uint8Array, size: number, label?: string): Promise<{ luma: Float32Array; contrast: Float32Array; redness: Float32Array }> {
  let data: Buffer;
  let channels: number;
  try {
    const result = await sharp(bytes, { failOn: "error" })
      .removeAlpha()
      .resize({ width: size, height: size, fit: "fill", kernel: "cubic" })
      .raw({ depth: "uchar" })
      .toBuffer({ resolveWithObject: true });
    data = result.data;
    channels = result.info.channels;
  } catch (error) {
    throw new DataError(`cannot decode image${label ? ` ${label}` : ""}: ${(error as Error).message}`, {
      location: { file: label },
      hint: "images must be PNG or JPEG files",
      cause: error,
    });
  }
  const n = size * size;
  const luma = new Float32Array(n);
  const redness = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    if (channels >= 3) {
      const r = data[i * channels]! / 255;
      const g = data[i * channels + 1]! / 255;
      const b = data[i * channels + 2]! / 255;
      luma[i] = 0.299 * r + 0.587 * g + 0.114 * b;
      redness[i] = r - (g + b) / 2;
    } else luma[i] = data[i * channels]! / 255;
  }
  // Local contrast: gradient magnitude from central differences (edges clamp).
  const contrast = new Float32Array(n);
  for (let y = 0; y < size; y++) {
    const up = Math.max(0, y - 1) * size;
    const down = Math.min(size - 1, y + 1) * size;
    for (let x = 0; x < size; x++) {
      const left = Math.max(0, x - 1);
      const right = Math.min(size - 1, x + 1);
      const gx = luma[y * size + right]! - luma[y * size + left]!;
      const gy = luma[down + x]! - luma[up + x]!;
      contrast[y * size + x] = Math.sqrt(gx * gx + gy * gy);
    }
  }
  return { luma, contrast, redness };
}

function meanStd(values: Float32Array): { mean: number; std: number } {
  let sum = 0;
  let sumSq = 0;
  for (const v of values) {
    sum += v;
    sumSq += v * v;
  }
  const mean = sum / values.length;
  return { mean, std: Math.sqrt(Math.max(0, sumSq / values.length - mean * mean)) };
}

const EPS = 1e-3;

/** The raw (unprojected) feature vector of one image; exposed for tests and for explaining the encoder. */
export async function gridFeatures(bytes: Uint8Array, config: GridImageConfig, label?: string): Promise<Float64Array> {
  const size = config.size;
  const { luma, contrast, redness } = await planes(bytes, size, label);
  const L = meanStd(luma);
  const C = meanStd(contrast);
  const R = meanStd(redness);
  const features = new Float64Array(gridFeatureCount(config));
  let k = 0;
  for (const [rows, cols] of config.grids) {
    for (let row = 0; row < rows; row++) {
      const y0 = Math.floor((row * size) / rows);
      const y1 = Math.floor(((row + 1) * size) / rows);
      for (let col = 0; col < cols; col++) {
        const x0 = Math.floor((col * size) / cols);
        const x1 = Math.floor(((col + 1) * size) / cols);
        let sumL = 0;
        let sumLSq = 0;
        let sumC = 0;
        let sumR = 0;
        for (let y = y0; y < y1; y++) {
          for (let x = x0; x < x1; x++) {
            const i = y * size + x;
            sumL += luma[i]!;
            sumLSq += luma[i]! * luma[i]!;
            sumC += contrast[i]!;
            sumR += redness[i]!;
          }
        }
        const count = (y1 - y0) * (x1 - x0);
        const meanL = sumL / count;
        const stdL = Math.sqrt(Math.max(0, sumLSq / count - meanL * meanL));
        features[k++] = (meanL - L.mean) / (L.std + EPS);
        features[k++] = (stdL - L.std) / (L.std + EPS);
        features[k++] = (sumC / count - C.mean) / (C.std + EPS);
        features[k++] = (sumR / count - R.mean) / (R.std + EPS);
      }
    }
  }
  return features;
}

export class GridImageProjector {
  readonly config: GridImageConfig;
  private readonly matrix: Float32Array;
  private readonly inputs: number;

  constructor(config: GridImageConfig) {
    this.config = config;
    this.inputs = gridFeatureCount(config);
    const gaussian = seededGaussian(config.projection.seed);
    this.matrix = new Float32Array(this.inputs * config.dim);
    for (let i = 0; i < this.matrix.length; i++) this.matrix[i] = gaussian();
  }

  async embedInto(bytes: Uint8Array, target: Float32Array, offset: number, label?: string): Promise<void> {
    const features = await gridFeatures(bytes, this.config, label);
    const dim = this.config.dim;
    const row = new Float64Array(dim);
    for (let i = 0; i < this.inputs; i++) {
      const f = features[i]!;
      if (f === 0) continue;
      const base = i * dim;
      for (let j = 0; j < dim; j++) row[j] += f * this.matrix[base + j]!;
    }
    let sum = 0;
    for (let j = 0; j < dim; j++) sum += row[j]! * row[j]!;
    const norm = sum > 0 ? 1 / Math.sqrt(sum) : 0;
    for (let j = 0; j < dim; j++) target[offset + j] = row[j]! * norm;
  }
}
