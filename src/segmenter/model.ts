import * as tf from "@tensorflow/tfjs-core";
import { ModelError } from "../errors.js";
import { instanceNorm, multiHeadAttention, normalizeRows, upsample2x } from "./fused-ops.js";
import { deriveSeed, mulberry32, normalArray } from "./prng.js";

export { upsample2x };

/**
 * The language-guided U-Net of METHOD.md §4, written as explicit variables and tfjs-core ops.
 *
 * Encoder: `depth` stages of two 3x3 conv + ReLU, channels base * 2^i, 2x2 max-pool between.
 * Decoder: `depth - 1` guided stages. Each stage first lets the image tokens (the H*W positions
 * of the current feature map) cross-attend to the guidance tokens with `heads`-head attention
 * (Q from the layer-normalised image tokens, K and V from the guidance tokens, output projection
 * added back as a residual), then up-samples x2 (nearest + 3x3 conv), concatenates the skip
 * connection and applies two 3x3 convs. A 1x1 conv gives one logit per pixel; sigmoid gives the
 * mask. Without guidance (tokenDim null) the same network is the image-only U-Net baseline.
 */
export interface NetConfig {
  imageSize: number;
  inChannels: number;
  baseChannels: number;
  depth: number;
  heads: number;
  /** Width of a guidance token; null = no attention blocks (image-only U-Net). */
  tokenDim: number | null;
}

/** How guidance tokens are produced for the network. */
export type GuidanceConfig =
  | { kind: "none" }
  /** Learned embeddings over a word vocabulary (index 0 = padding, 1 = unknown word). */
  | { kind: "vocab"; vocab: string[]; tokenDim: number; maxTokens: number }
  /** Token features computed outside (e.g. the text encoder's hidden states). */
  | { kind: "features"; featureDim: number; maxTokens: number; encoder: string }
  /**
   * PSA: the image queries the frozen query prototypes, the top-k responses (learnable) are mixed
   * with softmax(cos / T) weights into t^, and a linear map turns t^ into `guidanceTokens` tokens.
   */
  | { kind: "psa"; embeddingDim: number; prototypes: number; topK: number; temperature: number; guidanceTokens: number; tokenDim: number };

export interface ModelConfig {
  net: NetConfig;
  guidance: GuidanceConfig;
}

export interface ParamEntry {
  variable: tf.Variable;
  trainable: boolean;
}

export type ParamStore = Map<string, ParamEntry>;

export function channelsAt(net: NetConfig, level: number): number {
  return net.baseChannels * 2 ** level;
}

export function validateNetConfig(net: NetConfig): void {
  const factor = 2 ** (net.depth - 1);
  if (net.depth < 2) throw new ModelError(`depth must be at least 2, got ${net.depth}`);
  if (net.imageSize % factor !== 0) {
    throw new ModelError(`imageSize ${net.imageSize} is not divisible by 2^(depth-1) = ${factor}`, {
      hint: `use a multiple of ${factor}, e.g. ${Math.round(net.imageSize / factor) * factor}`,
    });
  }
  if (net.tokenDim !== null) {
    for (let level = 1; level < net.depth; level++) {
      if (channelsAt(net, level) % net.heads !== 0) {
        throw new ModelError(`attention width ${channelsAt(net, level)} (level ${level}) is not divisible by heads = ${net.heads}`, {
          hint: "choose baseChannels so that 2*baseChannels is a multiple of heads",
        });
      }
    }
  }
}

/** Tensor shapes of every parameter, in a fixed order (the order of the weights file). */
export function parameterShapes(
  config: ModelConfig,
): { name: string; shape: number[]; init: "he" | "xavier" | "zeros" | "ones" | "external"; trainable: boolean }[] {
  const { net, guidance } = config;
  validateNetConfig(net);
  const shapes: { name: string; shape: number[]; init: "he" | "xavier" | "zeros" | "ones" | "external"; trainable: boolean }[] = [];
  const conv = (name: string, k: number, cin: number, cout: number, norm = true) => {
    shapes.push({ name: `${name}.w`, shape: [k, k, cin, cout], init: "he", trainable: true });
    if (norm) {
      // No conv bias before instance norm: subtracting the per-image channel mean cancels it
      // exactly, so it would cost a broadcast add and its gradient sum for nothing.
      shapes.push({ name: `${name}.ng`, shape: [cout], init: "ones", trainable: true });
      shapes.push({ name: `${name}.nb`, shape: [cout], init: "zeros", trainable: true });
    } else {
      shapes.push({ name: `${name}.b`, shape: [cout], init: "zeros", trainable: true });
    }
  };
  const dense = (name: string, cin: number, cout: number) => {
    shapes.push({ name: `${name}.w`, shape: [cin, cout], init: "xavier", trainable: true });
    shapes.push({ name: `${name}.b`, shape: [cout], init: "zeros", trainable: true });
  };
  let cin = net.inChannels;
  for (let level = 0; level < net.depth; level++) {
    const c = channelsAt(net, level);
    conv(`enc${level}.conv1`, 3, cin, c);
    conv(`enc${level}.conv2`, 3, c, c);
    cin = c;
  }
  for (let stage = 0; stage < net.depth - 1; stage++) {
    const level = net.depth - 1 - stage;
    const c = channelsAt(net, level);
    const cOut = channelsAt(net, level - 1);
    if (net.tokenDim !== null) {
      dense(`dec${stage}.attn.q`, c, c);
      dense(`dec${stage}.attn.k`, net.tokenDim, c);
      dense(`dec${stage}.attn.v`, net.tokenDim, c);
      dense(`dec${stage}.attn.o`, c, c);
    }
    conv(`dec${stage}.up`, 3, c, cOut);
    conv(`dec${stage}.conv1`, 3, 2 * cOut, cOut);
    conv(`dec${stage}.conv2`, 3, cOut, cOut);
  }
  conv("head", 1, channelsAt(net, 0), 1, false);
  if (guidance.kind === "vocab") {
    shapes.push({ name: "text.embedding", shape: [guidance.vocab.length, guidance.tokenDim], init: "xavier", trainable: true });
  } else if (guidance.kind === "psa") {
    shapes.push({ name: "psa.query", shape: [guidance.prototypes, guidance.embeddingDim], init: "external", trainable: false });
    shapes.push({ name: "psa.response", shape: [guidance.prototypes, guidance.embeddingDim], init: "external", trainable: true });
    dense("psa.tokens", guidance.embeddingDim, guidance.guidanceTokens * guidance.tokenDim);
  }
  return shapes;
}

/**
 * Creates the parameters with a seeded initialisation (He-normal for convs, Xavier-normal for
 * dense layers and embeddings, zero biases). `external` values (PSA prototypes) must be given.
 */
export function initParams(config: ModelConfig, seed: number, external: Record<string, Float32Array> = {}): ParamStore {
  const store: ParamStore = new Map();
  for (const spec of parameterShapes(config)) {
    const size = spec.shape.reduce((a, b) => a * b, 1);
    let values: Float32Array;
    if (spec.init === "external") {
      const given = external[spec.name];
      if (!given || given.length !== size) throw new ModelError(`parameter ${spec.name} needs ${size} initial values, got ${given?.length ?? 0}`);
      values = Float32Array.from(given);
    } else if (spec.init === "zeros") {
      values = new Float32Array(size);
    } else if (spec.init === "ones") {
      values = new Float32Array(size).fill(1);
    } else {
      const fanIn = spec.shape.length === 4 ? spec.shape[0]! * spec.shape[1]! * spec.shape[2]! : spec.shape[0]!;
      const fanOut = spec.shape[spec.shape.length - 1]!;
      const std = spec.init === "he" ? Math.sqrt(2 / fanIn) : Math.sqrt(2 / (fanIn + fanOut));
      values = normalArray(mulberry32(deriveSeed(seed, "init", spec.name)), size, std);
    }
    // tidy disposes the initial tensor; the variable keeps its data (tf.variable alone would leave
    // that handle, and so its memory, alive after the variable is disposed).
    store.set(spec.name, { variable: tf.tidy(() => tf.variable(tf.tensor(values, spec.shape, "float32"), spec.trainable)), trainable: spec.trainable });
  }
  return store;
}

export function disposeParams(store: ParamStore): void {
  for (const entry of store.values()) entry.variable.dispose();
  store.clear();
}

export function trainableVariables(store: ParamStore): Map<string, tf.Variable> {
  const out = new Map<string, tf.Variable>();
  for (const [name, entry] of store) if (entry.trainable) out.set(name, entry.variable);
  return out;
}

/** Guidance tokens for a batch: [B, L, tokenDim] and a [B, L] mask (1 = real token). */
export interface GuidanceTokens {
  tokens: tf.Tensor3D;
  mask: tf.Tensor2D;
}

export interface ForwardResult {
  logits: tf.Tensor4D;
  /**
   * Per guided decoder stage: attention averaged over heads and image positions, [B, L]; with
   * `attentionFocus`, a weighted average over positions (weights = the focus map pooled to the
   * stage's resolution).
   */
  attention?: tf.Tensor2D[];
  /** The deepest encoder feature map [B, h, w, C] (with `bottleneck`); the learned embed encoder pools it. */
  bottleneck?: tf.Tensor4D;
}

function param(store: ParamStore, name: string): tf.Variable {
  const entry = store.get(name);
  if (!entry) throw new ModelError(`the model has no parameter ${name}`);
  return entry.variable;
}

/**
 * 3x3 (or 1x1) conv; hidden convs are followed by instance normalisation with a learned scale and
 * shift, then ReLU. Normalisation per image (not per batch) keeps training and inference
 * identical and makes small-batch CPU training converge in few steps.
 */
function conv(store: ParamStore, name: string, x: tf.Tensor4D, hidden = true): tf.Tensor4D {
  const y = tf.conv2d(x, param(store, `${name}.w`) as tf.Tensor4D, 1, "same");
  if (!hidden) return tf.add(y, param(store, `${name}.b`)) as tf.Tensor4D;
  // The norm's shift is the bias (a conv bias would cancel out: see parameterShapes).
  return instanceNorm(y, param(store, `${name}.ng`), param(store, `${name}.nb`), true);
}

function dense(store: ParamStore, name: string, x: tf.Tensor2D): tf.Tensor2D {
  return tf.add(tf.matMul(x, param(store, `${name}.w`) as tf.Tensor2D), param(store, `${name}.b`)) as tf.Tensor2D;
}

export interface ForwardOptions {
  /** Return the per-stage token attention (inference only). */
  attention?: boolean;
  /**
   * [B, H, W, 1] non-negative weights of image positions for the attention average (e.g. the
   * lesion mask); absent = every position counts the same. An all-zero map counts every
   * position the same too.
   */
  attentionFocus?: tf.Tensor4D;
  /** Also return the deepest encoder feature map. */
  bottleneck?: boolean;
}

/** The focus map average-pooled to a decoder stage's grid, as per-image position weights summing to 1: [B, N]. */
function focusWeights(focus: tf.Tensor4D, height: number, width: number): tf.Tensor2D {
  const [batch, fullHeight] = focus.shape;
  const factor = fullHeight / height;
  const pooled = factor > 1 ? tf.avgPool(focus, factor, factor, "valid") : focus;
  // The small floor turns an empty map into uniform weights.
  const floored = tf.add(tf.reshape(pooled, [batch, height * width]), 1e-6);
  return tf.div(floored, tf.sum(floored, 1, true)) as tf.Tensor2D;
}

function crossAttention(
  store: ParamStore,
  stage: number,
  heads: number,
  x: tf.Tensor4D,
  guidance: GuidanceTokens,
  keepAttention: boolean,
  focus?: tf.Tensor4D,
): { out: tf.Tensor4D; attention?: tf.Tensor2D } {
  const [batch, height, width, channels] = x.shape;
  const positions = height * width;
  const length = guidance.tokens.shape[1];
  const tokenDim = guidance.tokens.shape[2];
  const normalised = normalizeRows(tf.reshape(x, [batch * positions, channels]) as tf.Tensor2D);
  const q = tf.reshape(dense(store, `dec${stage}.attn.q`, normalised), [batch, positions, channels]) as tf.Tensor3D;
  const textFlat = tf.reshape(guidance.tokens, [batch * length, tokenDim]) as tf.Tensor2D;
  const k = tf.reshape(dense(store, `dec${stage}.attn.k`, textFlat), [batch, length, channels]) as tf.Tensor3D;
  const v = tf.reshape(dense(store, `dec${stage}.attn.v`, textFlat), [batch, length, channels]) as tf.Tensor3D;
  const { out, weights } = multiHeadAttention(q, k, v, guidance.mask, heads, keepAttention); // weights [B, heads, N, L]
  const projected = tf.reshape(dense(store, `dec${stage}.attn.o`, tf.reshape(out, [batch * positions, channels]) as tf.Tensor2D), [
    batch,
    height,
    width,
    channels,
  ]);
  let attention: tf.Tensor2D | undefined;
  if (weights) {
    attention = focus
      ? (tf.div(tf.sum(tf.mul(weights, tf.reshape(focusWeights(focus, height, width), [batch, 1, positions, 1])), [1, 2]), heads) as tf.Tensor2D)
      : (tf.mean(weights, [1, 2]) as tf.Tensor2D);
  }
  return { out: tf.add(x, projected) as tf.Tensor4D, attention };
}

/** Runs the U-Net on images [B, H, W, C] in 0..1; returns logits [B, H, W, 1]. */
export function netForward(
  store: ParamStore,
  net: NetConfig,
  images: tf.Tensor4D,
  guidance: GuidanceTokens | null,
  options: ForwardOptions = {},
): ForwardResult {
  if (net.tokenDim !== null && !guidance) throw new ModelError("this network is language-guided and needs guidance tokens");
  const skips: tf.Tensor4D[] = [];
  let x = images;
  for (let level = 0; level < net.depth; level++) {
    if (level > 0) x = tf.maxPool(x, 2, 2, "valid");
    x = conv(store, `enc${level}.conv2`, conv(store, `enc${level}.conv1`, x));
    skips.push(x);
  }
  const bottleneck = x;
  const attention: tf.Tensor2D[] = [];
  for (let stage = 0; stage < net.depth - 1; stage++) {
    const level = net.depth - 1 - stage;
    if (net.tokenDim !== null && guidance) {
      const result = crossAttention(store, stage, net.heads, x, guidance, options.attention === true, options.attentionFocus);
      x = result.out;
      if (result.attention) attention.push(result.attention);
    }
    x = conv(store, `dec${stage}.up`, upsample2x(x));
    x = tf.concat([x, skips[level - 1]!], 3);
    x = conv(store, `dec${stage}.conv2`, conv(store, `dec${stage}.conv1`, x));
  }
  const logits = conv(store, "head", x, false);
  return { logits, attention: options.attention ? attention : undefined, ...(options.bottleneck ? { bottleneck } : {}) };
}

/** Dice + BCE on logits (targets 0/1), both averaged over the batch. */
export function diceBceLoss(logits: tf.Tensor4D, targets: tf.Tensor4D): tf.Scalar {
  return tf.tidy(() => {
    // Stable BCE on logits: max(x, 0) - x * z + log(1 + exp(-|x|)).
    const bce = tf.mean(tf.add(tf.sub(tf.relu(logits), tf.mul(logits, targets)), tf.log1p(tf.exp(tf.neg(tf.abs(logits))))));
    const probabilities = tf.sigmoid(logits);
    const intersection = tf.sum(tf.mul(probabilities, targets), [1, 2, 3]);
    const sizes = tf.add(tf.sum(probabilities, [1, 2, 3]), tf.sum(targets, [1, 2, 3]));
    // Soft Dice per image with +1 smoothing, so an empty mask predicted empty costs nothing.
    const dice = tf.mean(tf.sub(1, tf.div(tf.add(tf.mul(intersection, 2), 1), tf.add(sizes, 1))));
    return tf.add(bce, dice) as tf.Scalar;
  });
}
