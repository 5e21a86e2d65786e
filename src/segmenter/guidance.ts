import * as tf from "@tensorflow/tfjs-core";
import { ModelError } from "../errors.js";
import { gatherRows } from "./fused-ops.js";
import { netForward, type ForwardOptions, type ForwardResult, type GuidanceTokens, type ModelConfig, type ParamStore } from "./model.js";

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
    const ids = batch.guidance.ids;
    // Padding gets exactly zero attention, so the batch's padding columns beyond its longest
    // report change nothing but the cost: attention runs over the used length only.
    const length = usedLength(b, g.maxTokens, (i) => ids[i] !== 0);
    const used = new Int32Array(b * length);
    for (let i = 0; i < b; i++) used.set(ids.subarray(i * g.maxTokens, i * g.maxTokens + length), i * length);
    const idTensor = tf.tensor2d(used, [b, length], "int32");
    const tokens = gatherRows(param(store, "text.embedding") as tf.Tensor2D, idTensor) as tf.Tensor3D;
    const mask = tf.cast(tf.notEqual(idTensor, 0), "float32") as tf.Tensor2D;
    return { tokens, mask };
  }
  if (g.kind === "features") {
    if (batch.guidance.kind !== "features") throw new ModelError(`a feature-guided model needs token features, got ${batch.guidance.kind}`);
    const { values, mask } = batch.guidance;
    const length = usedLength(b, g.maxTokens, (i) => mask[i]! > 0);
    const usedValues = new Float32Array(b * length * g.featureDim);
    const usedMask = new Float32Array(b * length);
    for (let i = 0; i < b; i++) {
      usedValues.set(values.subarray(i * g.maxTokens * g.featureDim, (i * g.maxTokens + length) * g.featureDim), i * length * g.featureDim);
      usedMask.set(mask.subarray(i * g.maxTokens, i * g.maxTokens + length), i * length);
    }
    return { tokens: tf.tensor3d(usedValues, [b, length, g.featureDim]), mask: tf.tensor2d(usedMask, [b, length]) };
  }
  if (batch.guidance.kind !== "psa") throw new ModelError(`a PSA model needs prototype lookups, got ${batch.guidance.kind}`);
  const indices = tf.tensor2d(batch.guidance.indices, [b, g.topK], "int32");
  const weights = tf.tensor3d(batch.guidance.weights, [b, g.topK, 1]);
  let approximated = tf.sum(tf.mul(gatherRows(param(store, "psa.response") as tf.Tensor2D, indices), weights), 1) as tf.Tensor2D; // [B, E]
  if (batch.guidance.own && batch.guidance.useOwn) {
    const own = tf.tensor2d(batch.guidance.own, [b, g.embeddingDim]);
    const use = tf.tensor2d(batch.guidance.useOwn, [b, 1]);
    approximated = tf.add(tf.mul(approximated, tf.sub(1, use)), tf.mul(own, use)) as tf.Tensor2D;
  }
  const projected = tf.add(tf.matMul(approximated, param(store, "psa.tokens.w") as tf.Tensor2D), param(store, "psa.tokens.b"));
  const tokens = tf.reshape(projected, [b, g.guidanceTokens, g.tokenDim]) as tf.Tensor3D;
  return { tokens, mask: tf.ones([b, g.guidanceTokens]) as tf.Tensor2D };
}

/** One past the last real token over the batch's rows (at least 1), for rows of `maxTokens` slots. */
function usedLength(rows: number, maxTokens: number, isToken: (index: number) => boolean): number {
  let length = 1;
  for (let r = 0; r < rows; r++) {
    for (let t = maxTokens - 1; t >= length; t--) {
      if (isToken(r * maxTokens + t)) {
        length = t + 1;
        break;
      }
    }
  }
  return length;
}

export function segmenterForward(store: ParamStore, config: ModelConfig, batch: Batch, options: ForwardOptions = {}): ForwardResult {
  const n = config.net;
  const images = tf.tensor4d(batch.images, [batch.size, n.imageSize, n.imageSize, n.inChannels]);
  const result = netForward(store, n, images, buildGuidance(store, config, batch), options);
  const g = config.guidance;
  if (result.attention && (g.kind === "vocab" || g.kind === "features")) {
    // Attention ran over the batch's used length; callers index it by the model's token slots.
    result.attention = result.attention.map((a) =>
      a.shape[1] < g.maxTokens
        ? (tf.pad(a, [
            [0, 0],
            [0, g.maxTokens - a.shape[1]],
          ]) as tf.Tensor2D)
        : a,
    );
  }
  return result;
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
