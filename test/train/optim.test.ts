import assert from "node:assert/strict";
import { test } from "node:test";
import { AdamW, cosineLearningRate } from "../../src/segmenter/optim.js";
import { initBackend, tf } from "../../src/segmenter/runtime.js";
import { runAdamW } from "./adamw-run.js";

test("cosine schedule: max at step 0, min at the end, midpoint halfway", () => {
  assert.equal(cosineLearningRate(0, 100, 1e-4, 1e-6), 1e-4);
  assert.ok(Math.abs(cosineLearningRate(100, 100, 1e-4, 1e-6) - 1e-6) < 1e-18);
  assert.ok(Math.abs(cosineLearningRate(50, 100, 1e-4, 1e-6) - (1e-4 + 1e-6) / 2) < 1e-15);
  assert.ok(Math.abs(cosineLearningRate(500, 100, 1e-4, 1e-6) - 1e-6) < 1e-18, "clamped after the last step");
  for (let s = 1; s <= 100; s++) assert.ok(cosineLearningRate(s, 100, 1e-4, 1e-6) <= cosineLearningRate(s - 1, 100, 1e-4, 1e-6));
});

/** Reference AdamW step in plain JS (torch.optim.AdamW semantics). */
function referenceAdamW(p: number, grads: number[], lr: number, wd: number): number {
  let m = 0;
  let v = 0;
  grads.forEach((g, i) => {
    const t = i + 1;
    p = p * (1 - lr * wd);
    m = 0.9 * m + 0.1 * g;
    v = 0.999 * v + 0.001 * g * g;
    p -= (lr * (m / (1 - 0.9 ** t))) / (Math.sqrt(v / (1 - 0.999 ** t)) + 1e-8);
  });
  return p;
}

test("AdamW matches the reference update, decay decoupled from the gradient", async () => {
  await initBackend("cpu");
  const w = tf.variable(tf.tensor1d([0.5, -2]));
  const bias = tf.variable(tf.tensor1d([0.5]));
  const opt = new AdamW({ weightDecay: 0.1 });
  const grads = [0.3, -0.1, 0.2];
  for (const g of grads)
    opt.apply(
      new Map([
        ["layer.w", w],
        ["layer.b", bias],
      ]),
      { "layer.w": tf.tensor1d([g, g]), "layer.b": tf.tensor1d([g]) },
      0.01,
    );
  const got = w.dataSync();
  assert.ok(Math.abs(got[0]! - referenceAdamW(0.5, grads, 0.01, 0.1)) < 1e-6);
  assert.ok(Math.abs(got[1]! - referenceAdamW(-2, grads, 0.01, 0.1)) < 1e-6);
  // biases are not decayed
  assert.ok(Math.abs(bias.dataSync()[0]! - referenceAdamW(0.5, grads, 0.01, 0)) < 1e-6);
  // with zero gradient, AdamW still shrinks weights (decoupled decay); Adam with L2-in-gradient would not differ here, so check the size
  const z = tf.variable(tf.tensor1d([1]));
  const opt2 = new AdamW({ weightDecay: 0.5 });
  opt2.apply(new Map([["z.w", z]]), { "z.w": tf.tensor1d([0]) }, 0.1);
  assert.ok(Math.abs(z.dataSync()[0]! - 0.95) < 1e-6);
  opt.dispose();
  opt2.dispose();
});

test("the fused AdamW kernel gives the same bits as the op-by-op update on cpu", async () => {
  await initBackend("cpu");
  const random = (() => {
    let state = 12345;
    return () => ((state = (state * 1103515245 + 12345) % 2 ** 31) / 2 ** 31) * 2 - 1;
  })();
  const shapes: Record<string, number[]> = { "enc0.w": [3, 3, 4, 8], "enc0.b": [8], "attn.q": [16, 16], "norm.ng": [8] };
  const initial = Object.fromEntries(
    Object.entries(shapes).map(([name, shape]) => [name, Float32Array.from({ length: shape.reduce((a, b) => a * b, 1) }, random)]),
  );
  const gradientsPerStep = [0, 1, 2, 3].map(() =>
    Object.fromEntries(
      Object.entries(shapes).map(([name, shape]) => [name, Float32Array.from({ length: shape.reduce((a, b) => a * b, 1) }, () => random() * 0.1)]),
    ),
  );
  const run = (fused: boolean) =>
    runAdamW({
      shapes,
      initial,
      gradientsPerStep,
      fused,
      lr: (step) => 1e-3 * (step + 1),
      eachStep: async (apply) => {
        const kernels = new Set((await tf.profile(apply)).kernels.map((k) => k.name));
        assert.equal(kernels.has("ProlearnAdamW"), fused, `fused=${fused} ran ${[...kernels].join(", ")}`);
        assert.equal(kernels.has("Sqrt"), !fused);
      },
    });
  const before = tf.memory().numTensors;
  const fused = await run(true);
  const ops = await run(false);
  assert.equal(tf.memory().numTensors, before, "no tensor leaks");
  for (const [name, expected] of ops) {
    assert.deepEqual(Array.from(fused.get(name)!), Array.from(expected), name);
    assert.ok(!Array.from(expected).every((x, i) => x === initial[name]?.[i]), `${name} changed`);
  }
});
