import assert from "node:assert/strict";
import { test } from "node:test";
import { gatherRows, instanceNorm, multiHeadAttention, normalizeRows, setFusedOps, upsample2x } from "../../src/segmenter/fused-ops.js";
import { segmenterForward, type Batch } from "../../src/segmenter/guidance.js";
import { diceBceLoss, disposeParams, initParams, trainableVariables, type ModelConfig } from "../../src/segmenter/model.js";
import { deriveSeed, mulberry32, normalArray } from "../../src/segmenter/prng.js";
import { initBackend, tf } from "../../src/segmenter/runtime.js";

/** max |a - b| relative to max |b|. */
function relativeError(actual: ArrayLike<number>, expected: ArrayLike<number>): number {
  assert.equal(actual.length, expected.length, "sizes differ");
  let scale = 1e-12;
  let worst = 0;
  for (let i = 0; i < expected.length; i++) {
    scale = Math.max(scale, Math.abs(expected[i]!));
    worst = Math.max(worst, Math.abs(actual[i]! - expected[i]!));
  }
  return worst / scale;
}

function random(shape: number[], seed: number, scale = 1): tf.Tensor {
  const size = shape.reduce((a, b) => a * b, 1);
  return tf.tensor(normalArray(mulberry32(deriveSeed(seed, "model-kernels")), size, scale), shape);
}

/** Values of f and of the gradients of sum(f * w) w.r.t. every input, with the fused kernels and with composite tfjs ops. */
function bothPaths(
  inputs: tf.Tensor[],
  f: (...xs: tf.Tensor[]) => tf.Tensor,
  gradFor: number[] = inputs.map((_, i) => i),
): { fused: Float32Array[]; stock: Float32Array[] } {
  const run = (fusedOn: boolean) =>
    tf.tidy(() => {
      setFusedOps(fusedOn);
      try {
        const value = f(...inputs);
        const w = random(value.shape, 99);
        const grads = tf.grads((...xs: tf.Tensor[]) => {
          const all = inputs.slice();
          gradFor.forEach((index, j) => (all[index] = xs[j]!));
          return tf.sum(tf.mul(f(...all), w));
        })(gradFor.map((i) => inputs[i]!));
        return [value, ...grads].map((t) => Float32Array.from(t.dataSync() as Float32Array));
      } finally {
        setFusedOps(true);
      }
    });
  return { stock: run(false), fused: run(true) };
}

function assertClose(label: string, result: { fused: Float32Array[]; stock: Float32Array[] }, tolerance = 1e-4): void {
  result.stock.forEach((expected, i) => {
    const error = relativeError(result.fused[i]!, expected);
    assert.ok(error < tolerance, `${label} output ${i}: relative error ${error}`);
  });
}

test("fused instance norm (+ReLU) and row norm match the composite ops, values and gradients", async () => {
  await initBackend("cpu");
  for (const [b, h, w, c, relu] of [
    [2, 5, 3, 4, true],
    [3, 4, 4, 1, false],
    [1, 8, 8, 16, true],
  ] as const) {
    const x = random([b, h, w, c], b * 100 + c, 2);
    const gamma = tf.add(random([c], 3, 0.3), 1);
    const beta = random([c], 4, 0.5);
    assertClose(
      `instanceNorm ${[b, h, w, c]}`,
      bothPaths([x, gamma, beta], (xi, g, bb) => instanceNorm(xi as tf.Tensor4D, g!, bb!, relu)),
    );
  }
  const rows = random([37, 12], 8, 3);
  assertClose(
    "normalizeRows",
    bothPaths([rows], (r) => normalizeRows(r as tf.Tensor2D)),
  );
});

test("fused multi-head attention matches softmax(QK^T)V with masking, incl. a fully masked row", async () => {
  await initBackend("cpu");
  const [B, N, L, C, heads] = [3, 10, 6, 8, 2];
  const q = random([B, N, C], 1);
  const k = random([B, L, C], 2);
  const v = random([B, L, C], 3);
  const mask = tf.tensor2d([1, 1, 1, 0, 0, 0, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0], [B, L]);
  const f = (qi: tf.Tensor, ki?: tf.Tensor, vi?: tf.Tensor) =>
    multiHeadAttention(qi as tf.Tensor3D, ki as tf.Tensor3D, vi as tf.Tensor3D, mask, heads, false).out;
  assertClose("attention", bothPaths([q, k, v], f));
  const weights = (fusedOn: boolean) => {
    setFusedOps(fusedOn);
    const w = tf.tidy(() => Float32Array.from(multiHeadAttention(q as tf.Tensor3D, k as tf.Tensor3D, v as tf.Tensor3D, mask, heads, true).weights!.dataSync()));
    setFusedOps(true);
    return w;
  };
  const fusedWeights = weights(true);
  assert.ok(relativeError(fusedWeights, weights(false)) < 1e-5, "attention weights");
  assert.equal(fusedWeights[3], 0, "masked tokens get exactly zero weight");
});

test("fused x2 up-sampling and embedding gather gradients match the composite ops", async () => {
  await initBackend("cpu");
  const x = random([2, 3, 5, 4], 5);
  assertClose(
    "upsample2x",
    bothPaths([x], (xi) => upsample2x(xi as tf.Tensor4D)),
  );
  const table = random([7, 5], 6);
  const ids = tf.tensor2d([0, 3, 3, 6, 1, 3], [2, 3], "int32");
  assertClose(
    "gatherRows",
    bothPaths([table, ids], (t, i) => gatherRows(t as tf.Tensor2D, i!), [0]),
  );
});

test("one guided training step: loss and every parameter gradient agree between fused and composite paths", async () => {
  await initBackend("cpu");
  const config: ModelConfig = {
    net: { imageSize: 16, inChannels: 1, baseChannels: 4, depth: 3, heads: 2, tokenDim: 8 },
    guidance: { kind: "vocab", vocab: ["<pad>", "<unk>", "upper", "left", "lung", "lower"], tokenDim: 8, maxTokens: 7 },
  };
  const size = 3;
  const batch: Batch = {
    size,
    images: Float32Array.from({ length: size * 256 }, (_, i) => ((i * 7919) % 97) / 97),
    masks: Float32Array.from({ length: size * 256 }, (_, i) => ((i * 31) % 11 < 3 ? 1 : 0)),
    guidance: { kind: "vocab", ids: Int32Array.from([2, 3, 4, 0, 0, 0, 0, 5, 4, 0, 0, 0, 0, 0, 2, 2, 3, 4, 5, 0, 0]) },
  };
  const store = initParams(config, 3);
  const variables = trainableVariables(store);
  const step = (fusedOn: boolean) => {
    setFusedOps(fusedOn);
    try {
      const { value, grads } = tf.variableGrads(
        () => diceBceLoss(segmenterForward(store, config, batch).logits, tf.tensor4d(batch.masks!, [size, 16, 16, 1])),
        [...variables.values()],
      );
      const out = new Map<string, Float32Array>([["loss", Float32Array.from(value.dataSync())]]);
      for (const [name, v] of variables) out.set(name, Float32Array.from(grads[v.name]!.dataSync()));
      value.dispose();
      Object.values(grads).forEach((g) => g.dispose());
      return out;
    } finally {
      setFusedOps(true);
    }
  };
  const fused = step(true);
  const stock = step(false);
  for (const [name, expected] of stock) {
    // Some gradients are zero in exact arithmetic (biases right before instance norm, the key
    // bias under softmax) and only rounding noise here; errors are relative to a floor of 1e-3.
    const actual = fused.get(name)!;
    let worst = 0;
    let scale = 1e-3;
    expected.forEach((e, i) => {
      worst = Math.max(worst, Math.abs(e - actual[i]!));
      scale = Math.max(scale, Math.abs(e));
    });
    assert.ok(worst / scale < 2e-3, `${name}: error ${worst / scale} (max |grad| ${scale})`);
  }
  disposeParams(store);
});
