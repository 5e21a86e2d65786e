import * as tf from "@tensorflow/tfjs-core";
import { ModelError } from "../errors.js";
import { netForward, type ForwardResult, type GuidanceTokens, type ModelConfig, type ParamStore } from "./model.js";

/** The per-image text side of a batch, in the form its guidance kind needs. */
export type BatchGuidance =
  | { kind: "none" }
  /** Word ids [B * maxTokens], 0 = padding. */
  | { kind: "vocab"; ids: Int32Array }
  /** Token features [B * maxTokens * featureDim] and mask [B * maxTokens]. */
  | { kind: "features"; values: Float32Array; mask: Float32Array }
  /**
   * PSA lookups [B * topK] (indices into the prototypes, softmax weights). `own` optionally holds
   * an image's own text embedding [B * embeddingDim] used instead of t^ where `useOwn` is 1.
   */
  | { kind: "psa"; indices: Int32Array; weights: Float32Array; own?: Float32Array; useOwn?: Float32Array };

export interface Batch {
  size: number;
  /** [B * H * W * C] in 0..1. */
  images: Float32Array;
  /** [B * H * W] 0/1, for training and validation. */
  masks?: Float32Array;
  guidance: BatchGuidance;
}

function param(store: ParamStore, name: string): tf.Variable {
  const entry = store.get(name);
  if (!entry) throw new ModelError(`the model has no parameter ${name}`);
  return entry.variable;
}

/** Builds the guidance tokens of a batch (inside a tidy/grad scope: the tensors are temporary). */
export function buildGuidance(store: ParamStore, config: ModelConfig, batch: Batch): GuidanceTokens | null {
  const g = config.guidance;
  const b = batch.size;
  if (g.kind === "none") return null;
  if (g.kind === "vocab") {
    if (batch.guidance.kind !== "vocab") throw new ModelError(`a vocab-guided model needs word ids, got ${batch.guidance.kind}`);
    const ids = tf.tensor2d(batch.guidance.ids, [b, g.maxTokens], "int32");
    const tokens = tf.gather(param(store, "text.embedding"), ids) as tf.Tensor3D;
    const mask = tf.cast(tf.notEqual(ids, 0), "float32") as tf.Tensor2D;
    return { tokens, mask };
  }
  if (g.kind === "features") {
    if (batch.guidance.kind !== "features") throw new ModelError(`a feature-guided model needs token features, got ${batch.guidance.kind}`);
    return {
      tokens: tf.tensor3d(batch.guidance.values, [b, g.maxTokens, g.featureDim]),
      mask: tf.tensor2d(batch.guidance.mask, [b, g.maxTokens]),
    };
  }
  if (batch.guidance.kind !== "psa") throw new ModelError(`a PSA model needs prototype lookups, got ${batch.guidance.kind}`);
  const indices = tf.tensor2d(batch.guidance.indices, [b, g.topK], "int32");
  const weights = tf.tensor3d(batch.guidance.weights, [b, g.topK, 1]);
  let approximated = tf.sum(tf.mul(tf.gather(param(store, "psa.response"), indices), weights), 1) as tf.Tensor2D; // [B, E]
  if (batch.guidance.own && batch.guidance.useOwn) {
    const own = tf.tensor2d(batch.guidance.own, [b, g.embeddingDim]);
    const use = tf.tensor2d(batch.guidance.useOwn, [b, 1]);
    approximated = tf.add(tf.mul(approximated, tf.sub(1, use)), tf.mul(own, use)) as tf.Tensor2D;
  }
  const projected = tf.add(tf.matMul(approximated, param(store, "psa.tokens.w") as tf.Tensor2D), param(store, "psa.tokens.b"));
  const tokens = tf.reshape(projected, [b, g.guidanceTokens, g.tokenDim]) as tf.Tensor3D;
  return { tokens, mask: tf.ones([b, g.guidanceTokens]) as tf.Tensor2D };
}

export function segmenterForward(store: ParamStore, config: ModelConfig, batch: Batch, options: { attention?: boolean } = {}): ForwardResult {
  const n = config.net;
  const images = tf.tensor4d(batch.images, [batch.size, n.imageSize, n.imageSize, n.inChannels]);
  return netForward(store, n, images, buildGuidance(store, config, batch), options);
}

/**
 * PSA query (METHOD.md §3): cosine similarity of the image embedding to every query prototype,
 * top-k, softmax(s / T). Computed outside the graph: Q is frozen and the image embedding is an
 * input, so the chosen prototypes and their weights are constants of each image.
 */
export class PrototypeIndex {
  readonly count: number;
  readonly dim: number;
  private readonly unitQueries: Float32Array;

  constructor(queries: Float32Array, dim: number) {
    this.dim = dim;
    this.count = queries.length / dim;
    this.unitQueries = new Float32Array(queries.length);
    for (let p = 0; p < this.count; p++) {
      let norm = 0;
      for (let d = 0; d < dim; d++) norm += queries[p * dim + d]! ** 2;
      const scale = norm > 0 ? 1 / Math.sqrt(norm) : 0;
      for (let d = 0; d < dim; d++) this.unitQueries[p * dim + d] = queries[p * dim + d]! * scale;
    }
  }

  query(embedding: ArrayLike<number>, topK: number, temperature: number): { indices: number[]; weights: number[]; similarities: number[] } {
    if (embedding.length !== this.dim) throw new ModelError(`image embedding has ${embedding.length} values, the prototypes ${this.dim}`);
    let norm = 0;
    for (let d = 0; d < this.dim; d++) norm += embedding[d]! ** 2;
    const scale = norm > 0 ? 1 / Math.sqrt(norm) : 0;
    const similarities: { index: number; s: number }[] = [];
    for (let p = 0; p < this.count; p++) {
      let dot = 0;
      for (let d = 0; d < this.dim; d++) dot += this.unitQueries[p * this.dim + d]! * embedding[d]!;
      similarities.push({ index: p, s: dot * scale });
    }
    // Ties are broken by the lower prototype index, so the choice is deterministic.
    similarities.sort((a, b) => b.s - a.s || a.index - b.index);
    const top = similarities.slice(0, Math.min(topK, this.count));
    const max = Math.max(...top.map((t) => t.s / temperature));
    const exps = top.map((t) => Math.exp(t.s / temperature - max));
    const total = exps.reduce((a, b) => a + b, 0);
    return { indices: top.map((t) => t.index), weights: exps.map((e) => e / total), similarities: top.map((t) => t.s) };
  }
}
