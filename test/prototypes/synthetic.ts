/** Paired image/text embeddings whose groups line up on both sides, for prototype and PSA tests. */
import { gaussian, mulberry32 } from "./fixtures.js";

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
