/**
 * Deterministic point sets for the HDBSCAN reference tests. The same generator feeds
 * reference/make-reference.ts (which stores R's labels) and the tests, so the stored labels stay
 * tied to the points through `pointsDigest`.
 */
import { sha256 } from "../../src/util/hash.js";
import { mulberry32 } from "../../src/util/random.js";

export { mulberry32 };

export function gaussian(random: () => number): () => number {
  return () => {
    const u = 1 - random();
    const v = random();
    return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
  };
}

export interface PointSet {
  name: string;
  dim: number;
  points: Float32Array;
  n: number;
  /** Ground-truth generating component per point (-1 = background noise). */
  truth: Int32Array;
  minPts: number;
  metric: "euclidean" | "cosine";
}

interface Blob {
  size: number;
  spread: number;
  center: number[];
}

function blobs(
  name: string,
  seed: number,
  dim: number,
  blobList: Blob[],
  noise: number,
  noiseRange: number,
  minPts: number,
  metric: "euclidean" | "cosine",
): PointSet {
  const random = mulberry32(seed);
  const normal = gaussian(random);
  const rows: number[][] = [];
  const truth: number[] = [];
  blobList.forEach((blob, b) => {
    for (let i = 0; i < blob.size; i++) {
      rows.push(blob.center.map((c) => c + blob.spread * normal()));
      truth.push(b);
    }
  });
  for (let i = 0; i < noise; i++) {
    rows.push(Array.from({ length: dim }, () => (random() * 2 - 1) * noiseRange));
    truth.push(-1);
  }
  const points = new Float32Array(rows.length * dim);
  rows.forEach((r, i) => points.set(r, i * dim));
  return { name, dim, points, n: rows.length, truth: Int32Array.from(truth), minPts, metric };
}

function randomCenters(random: () => number, count: number, dim: number, scale: number): number[][] {
  const normal = gaussian(random);
  return Array.from({ length: count }, () => Array.from({ length: dim }, () => normal() * scale));
}

/** The standard sets: 2-d blobs of different spreads with 10% noise, varying densities, 512-d blobs, cosine directions. */
export function referenceSets(): PointSet[] {
  const spreads = [0.3, 0.5, 0.8, 1.2, 0.4, 0.7];
  const centers2d = [
    [-8, -8],
    [0, -9],
    [8, -7],
    [-7, 6],
    [1, 7],
    [9, 8],
  ];
  const sets: PointSet[] = [
    blobs(
      "blobs-noise-2d",
      11,
      2,
      centers2d.map((c, i) => ({ size: 60, spread: spreads[i]!, center: c })),
      40,
      12,
      8,
      "euclidean",
    ),
    blobs(
      "varying-density-2d",
      12,
      2,
      [
        { size: 150, spread: 0.25, center: [0, 0] },
        { size: 150, spread: 1.0, center: [8, 0] },
        { size: 150, spread: 2.2, center: [0, 12] },
        { size: 80, spread: 0.6, center: [10, 11] },
      ],
      60,
      16,
      10,
      "euclidean",
    ),
  ];
  const r512 = mulberry32(13);
  sets.push(
    blobs(
      "blobs-512d",
      14,
      512,
      randomCenters(r512, 5, 512, 1).map((center, i) => ({ size: 50 + 10 * i, spread: 0.12 + 0.03 * i, center })),
      30,
      1,
      5,
      "euclidean",
    ),
  );
  const r64 = mulberry32(15);
  sets.push(
    blobs(
      "directions-64d-cosine",
      16,
      64,
      randomCenters(r64, 6, 64, 1).map((center, i) => ({ size: 40 + 5 * i, spread: 0.15 + 0.04 * i, center })),
      25,
      1,
      6,
      "cosine",
    ),
  );
  return sets;
}

export function pointsDigest(set: PointSet): string {
  return sha256(new Uint8Array(set.points.buffer, set.points.byteOffset, set.points.byteLength));
}

export function pointsCsv(set: PointSet): string {
  const lines: string[] = [];
  for (let i = 0; i < set.n; i++) lines.push(Array.from(set.points.subarray(i * set.dim, (i + 1) * set.dim), (v) => String(v)).join(","));
  return lines.join("\n") + "\n";
}

/** Paired image/text embeddings whose groups line up on both sides, for prototype and PSA tests. */
export interface SyntheticPairs {
  ids: string[];
  split: string[];
  group: number[];
  images: Float32Array;
  texts: Float32Array;
  dim: number;
}

export function syntheticPairs(options: { groups: number; perGroup: number; dim: number; seed: number; noise?: number; splits?: string[] }): SyntheticPairs {
  const random = mulberry32(options.seed);
  const normal = gaussian(random);
  const { dim } = options;
  const imageCenters = Array.from({ length: options.groups }, () => Array.from({ length: dim }, () => normal()));
  const textCenters = Array.from({ length: options.groups }, () => Array.from({ length: dim }, () => normal()));
  const total = options.groups * options.perGroup;
  const images = new Float32Array(total * dim);
  const texts = new Float32Array(total * dim);
  const ids: string[] = [];
  const split: string[] = [];
  const group: number[] = [];
  const noise = options.noise ?? 0.25;
  for (let i = 0; i < total; i++) {
    const g = i % options.groups;
    for (let k = 0; k < dim; k++) {
      images[i * dim + k] = imageCenters[g]![k]! + noise * normal();
      texts[i * dim + k] = textCenters[g]![k]! + noise * normal();
    }
    ids.push(`s${String(i).padStart(4, "0")}`);
    split.push(options.splits ? options.splits[i % options.splits.length]! : "train");
    group.push(g);
  }
  return { ids, split, group, images, texts, dim };
}
