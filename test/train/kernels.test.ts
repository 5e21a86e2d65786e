import { test, describe, before } from "node:test";
import assert from "node:assert/strict";
import * as tf from "@tensorflow/tfjs-core";
import { installFastCpuKernels, uninstallFastCpuKernels, registerTrainingGradients, GemmWorkspace } from "../../src/tfjs/backends.js";
import { buildReferenceUNet, bceWithLogits } from "../../src/tfjs/reference-unet.js";
import { mulberry32 } from "../../src/util/random.js";

/** Deterministic PRNG so a failing configuration can be reproduced from its index. */
const rng = mulberry32;
const pick = (r: () => number, lo: number, hi: number) => lo + Math.floor(r() * (hi - lo + 1));

/** max |a - b| / max |b|: the error relative to the reference's scale. */
function relativeError(actual: Float32Array | Int32Array | Uint8Array, expected: Float32Array | Int32Array | Uint8Array): number {
  assert.equal(actual.length, expected.length, "output sizes differ");
  let scale = 0;
  let worst = 0;
  for (let i = 0; i < expected.length; i++) {
    scale = Math.max(scale, Math.abs(expected[i]!));
    worst = Math.max(worst, Math.abs(actual[i]! - expected[i]!));
  }
  return scale === 0 ? worst : worst / scale;
}

/** Runs fn with the stock cpu kernels, then with ours, and returns both outputs' values. */
function stockAndFast(fn: () => tf.Tensor | tf.Tensor[]): Array<[Float32Array, Float32Array]> {
  const values = (): Float32Array[] =>
    tf.tidy(() => {
      const out = fn();
      return (Array.isArray(out) ? out : [out]).map((t) => t.dataSync() as Float32Array).map((v) => Float32Array.from(v));
    });
  uninstallFastCpuKernels();
  const stock = values();
  installFastCpuKernels();
  const fast = values();
  return fast.map((f, i) => [f, stock[i]!]);
}

before(async () => {
  registerTrainingGradients();
  await tf.setBackend("cpu");
  // The cpu backend's "install tfjs-node" banner is noise in test output.
  (tf.backend() as unknown as { firstUse: boolean }).firstUse = false;
});

describe("GEMM (WebAssembly SIMD)", () => {
  test("matches a float64 reference on ragged shapes, plain and transposed A", () => {
    const ws = new GemmWorkspace();
    const r = rng(7);
    for (let trial = 0; trial < 40; trial++) {
      const [m, n, k] = [pick(r, 1, 37), pick(r, 1, 41), pick(r, 1, 70)];
      const transposedA = trial % 2 === 1;
      ws.reset();
      const a = ws.reserve(m * k);
      const b = ws.reserve(k * n);
      const c = ws.reserve(m * n);
      const f = ws.f32;
      for (let i = 0; i < m * k; i++) f[a + i] = r() - 0.5;
      for (let i = 0; i < k * n; i++) f[b + i] = r() - 0.5;
      for (let i = 0; i < m * n; i++) f[c + i] = 1; // the GEMM accumulates into C
      ws.gemm(transposedA, m, n, k, a, transposedA ? m : k, b, n, c, n);
      for (let i = 0; i < m; i++) {
        for (let j = 0; j < n; j++) {
          let s = 1;
          for (let p = 0; p < k; p++) s += (transposedA ? f[a + p * m + i]! : f[a + i * k + p]!) * f[b + p * n + j]!;
          assert.ok(
            Math.abs(s - f[c + i * n + j]!) < 1e-4,
            `trial ${trial} (${m}x${n}x${k}, transposedA=${transposedA}) C[${i},${j}] = ${f[c + i * n + j]} != ${s}`,
          );
        }
      }
    }
  });
});

describe("convolution kernels equal the stock cpu kernels", () => {
  test("Conv2D, Conv2DBackpropInput, Conv2DBackpropFilter on 60 random configs within 1e-4", () => {
    const r = rng(2024);
    let checked = 0;
    for (let index = 0; checked < 60; index++) {
      const stride = pick(r, 1, 2);
      const pad = r() < 0.5 ? "same" : "valid";
      const fh = pick(r, 1, 3);
      const fw = pick(r, 1, 3);
      const batch = pick(r, 1, 2);
      const h = pick(r, fh, 10);
      const w = pick(r, fw, 10);
      // Channels 1-64, mixing tiny (tail paths) and wide (SIMD paths) counts.
      const inC = r() < 0.3 ? pick(r, 1, 4) : pick(r, 1, 64);
      const outC = r() < 0.3 ? pick(r, 1, 4) : pick(r, 1, 64);
      const seed = 1000 + index;
      const config = `config ${index}: x [${batch},${h},${w},${inC}], filter [${fh},${fw},${inC},${outC}], stride ${stride}, ${pad}`;
      const results = stockAndFast(() => {
        const x = tf.randomNormal([batch, h, w, inC], 0, 1, "float32", seed) as tf.Tensor4D;
        const filter = tf.randomNormal([fh, fw, inC, outC], 0, 1, "float32", seed + 1) as tf.Tensor4D;
        const y = tf.conv2d(x, filter, stride, pad);
        const dy = tf.randomNormal(y.shape, 0, 1, "float32", seed + 2) as tf.Tensor4D;
        const attrs = { strides: stride, pad, dataFormat: "NHWC", dimRoundingMode: undefined };
        const dx = tf.engine().runKernel("Conv2DBackpropInput", { dy, filter }, { ...attrs, inputShape: x.shape } as never) as tf.Tensor;
        const dw = tf.engine().runKernel("Conv2DBackpropFilter", { x, dy }, { ...attrs, filterShape: filter.shape } as never) as tf.Tensor;
        return [y, dx, dw];
      });
      const names = ["Conv2D", "Conv2DBackpropInput", "Conv2DBackpropFilter"];
      results.forEach(([fast, stock], i) => {
        const error = relativeError(fast, stock);
        assert.ok(error <= 1e-4, `${names[i]} ${config}: relative error ${error.toExponential(2)}`);
      });
      checked++;
    }
  });

  test("tf.conv2dTranspose (2x2, stride 2) and its gradients match", () => {
    const results = stockAndFast(() => {
      const x = tf.randomNormal([2, 5, 6, 24], 0, 1, "float32", 1) as tf.Tensor4D;
      const filter = tf.randomNormal([2, 2, 12, 24], 0, 1, "float32", 2) as tf.Tensor4D;
      const target = tf.randomNormal([2, 10, 12, 12], 0, 1, "float32", 3);
      const f = (a: tf.Tensor, b: tf.Tensor) => tf.sum(tf.mul(tf.conv2dTranspose(a as tf.Tensor4D, b as tf.Tensor4D, [2, 10, 12, 12], 2, "valid"), target));
      const [gx, gw] = tf.grads(f)([x, filter]);
      return [tf.conv2dTranspose(x, filter, [2, 10, 12, 12], 2, "valid"), gx!, gw!];
    });
    for (const [fast, stock] of results) assert.ok(relativeError(fast, stock) <= 1e-4);
  });

  test("configurations the fast kernels do not cover (dilation 2) fall back to the stock kernel", () => {
    const [[fast, stock]] = stockAndFast(() =>
      tf.conv2d(
        tf.randomNormal([1, 9, 9, 3], 0, 1, "float32", 5) as tf.Tensor4D,
        tf.randomNormal([3, 3, 3, 4], 0, 1, "float32", 6) as tf.Tensor4D,
        1,
        "same",
        "NHWC",
        2,
      ),
    );
    assert.ok(relativeError(fast!, stock!) <= 1e-6);
  });
});

describe("element-wise, reduction, split and pooling kernels equal the stock cpu kernels", () => {
  test("Add, Sub, Multiply, RealDiv with bias-style and scalar broadcasting", () => {
    const r = rng(11);
    for (let index = 0; index < 20; index++) {
      const shape = [pick(r, 1, 3), pick(r, 1, 6), pick(r, 1, 6), pick(r, 1, 9)];
      const suffix = shape.slice(pick(r, 0, 4));
      const swap = r() < 0.5;
      const results = stockAndFast(() => {
        const a = tf.randomNormal(shape, 0, 1, "float32", index + 1);
        const b = tf.add(tf.abs(tf.randomNormal(suffix, 0, 1, "float32", index + 50)), 0.5);
        const [p, q] = swap ? [b, a] : [a, b];
        return [tf.add(p, q), tf.sub(p, q), tf.mul(p, q), tf.div(p, q), tf.add(a, tf.scalar(2)), tf.mul(tf.reshape(b, [1, ...suffix]), a)];
      });
      for (const [fast, stock] of results) assert.ok(relativeError(fast, stock) <= 1e-6, `shape ${shape} with ${suffix}`);
    }
    // Broadcasting that is not a suffix (a [2,1,3] against [2,4,3]) goes to the stock kernel.
    const [[fast, stock]] = stockAndFast(() => tf.add(tf.randomNormal([2, 1, 3], 0, 1, "float32", 1), tf.randomNormal([2, 4, 3], 0, 1, "float32", 2)));
    assert.ok(relativeError(fast!, stock!) <= 1e-6);
  });

  test("Sum over leading, trailing and mixed axes, with and without keepDims", () => {
    for (const [axes, keepDims] of [
      [[0, 1, 2], false],
      [[0], true],
      [[3], false],
      [[2, 3], true],
      [[1, 3], false],
      [undefined, false],
    ] as const) {
      const results = stockAndFast(() => {
        const x = tf.randomNormal([3, 5, 7, 4], 0, 1, "float32", 9);
        const y = tf.sum(x, axes as number[] | undefined, keepDims);
        return [y, tf.tensor(y.shape.length ? y.shape : [0])];
      });
      assert.deepEqual([...results[1]![0]], [...results[1]![1]], `shape for axes ${String(axes)}`);
      assert.ok(relativeError(results[0]![0], results[0]![1]) <= 1e-6, `axes ${String(axes)}`);
    }
  });

  test("the ReLU gradient (one fused pass when installed) equals dy * step(x), zeros and NaN included", () => {
    const results = stockAndFast(() => {
      const x = tf.concat([tf.randomNormal([3, 50], 0, 1, "float32", 31), tf.tile(tf.tensor2d([[0, -0, NaN, 1, -1]], [1, 5]), [3, 10])], 1);
      const dy = tf.randomNormal(x.shape, 0, 1, "float32", 32);
      const [grad] = tf.grads((t: tf.Tensor) => tf.sum(tf.mul(tf.relu(t), dy)))([x]);
      return [tf.relu(x), grad!];
    });
    for (const [fast, stock] of results) {
      assert.equal(fast.length, stock.length);
      for (let i = 0; i < fast.length; i++) assert.ok(Object.is(fast[i], stock[i]) || fast[i] === stock[i], `element ${i}: ${fast[i]} vs ${stock[i]}`);
    }
  });

  test("SplitV and Concat on every axis, short and long blocks", () => {
    for (let axis = 0; axis < 4; axis++) {
      const results = stockAndFast(() => {
        const x = tf.randomNormal([4, 6, 5, 80], 0, 1, "float32", axis + 1);
        const sizes = [
          [1, 3],
          [2, 4],
          [5, 0],
          [30, 50],
        ][axis]!;
        const parts = tf.split(x, sizes, axis);
        const y = tf.randomNormal(
          [4, 6, 5, 80].map((d, i) => (i === axis ? 3 : d)),
          0,
          1,
          "float32",
          axis + 10,
        );
        return [...parts, tf.concat([x, y, x], axis)];
      });
      for (const [fast, stock] of results) assert.deepEqual([...fast], [...stock]);
    }
  });

  test("MaxPool and MaxPoolGrad for tiling windows (ties, NaN included) and a fallback for overlapping windows", () => {
    const results = stockAndFast(() => {
      // Rounded values make ties common, which exercises the first-maximum rule.
      const x = tf.round(tf.mul(tf.randomNormal([2, 8, 9, 5], 0, 1, "float32", 4), 2)) as tf.Tensor4D;
      const f = (a: tf.Tensor) => tf.sum(tf.mul(tf.maxPool(a as tf.Tensor4D, 2, 2, "valid"), tf.randomNormal([2, 4, 4, 5], 0, 1, "float32", 8)));
      const g = (a: tf.Tensor) => tf.sum(tf.maxPool(a as tf.Tensor4D, 3, 1, "same"));
      const withNaN = tf.concat([x, tf.fill([2, 8, 1, 5], NaN)], 2) as tf.Tensor4D;
      return [tf.grad(f)(x), tf.grad(g)(x), tf.maxPool(x, 2, 2, "valid"), tf.maxPool(withNaN, 2, 2, "valid"), tf.maxPool(x, 3, 3, "valid")];
    });
    for (const [fast, stock] of results) assert.deepEqual([...fast], [...stock]);
  });
});

describe("matrix multiply and fused convolution equal the stock cpu kernels", () => {
  test("BatchMatMul on 30 random shapes with transposes and broadcast batches within 1e-4", () => {
    const r = rng(99);
    for (let index = 0; index < 30; index++) {
      const [m, n, k] = [pick(r, 1, 40), pick(r, 1, 40), pick(r, 1, 70)];
      const transposeA = r() < 0.5;
      const transposeB = r() < 0.5;
      const batch = [pick(r, 1, 3), pick(r, 1, 2)];
      const broadcast = pick(r, 0, 2); // 0: same batch dims, 1: A has batch 1, 2: B has batch 1
      const aBatch = broadcast === 1 ? [1] : batch;
      const bBatch = broadcast === 2 ? [] : batch;
      const results = stockAndFast(() => {
        const a = tf.randomNormal([...aBatch, ...(transposeA ? [k, m] : [m, k])], 0, 1, "float32", 300 + index);
        const b = tf.randomNormal([...bBatch, ...(transposeB ? [n, k] : [k, n])], 0, 1, "float32", 400 + index);
        return tf.matMul(a, b, transposeA, transposeB);
      });
      const [[fast, stock]] = results;
      const error = relativeError(fast!, stock!);
      assert.ok(error <= 1e-4, `config ${index}: m=${m} n=${n} k=${k} tA=${transposeA} tB=${transposeB} broadcast=${broadcast}: ${error.toExponential(2)}`);
    }
  });

  test("tf.fused.conv2d with bias and linear, relu, relu6, sigmoid, leakyrelu activations", () => {
    for (const activation of ["linear", "relu", "relu6", "sigmoid", "leakyrelu"] as const) {
      const results = stockAndFast(() => {
        const x = tf.mul(tf.randomNormal([2, 7, 6, 5], 0, 1, "float32", 21), 3) as tf.Tensor4D;
        const filter = tf.randomNormal([3, 3, 5, 9], 0, 1, "float32", 22) as tf.Tensor4D;
        const bias = tf.randomNormal([9], 0, 1, "float32", 23);
        return tf.fused.conv2d({ x, filter, strides: 1, pad: "same", bias, activation, leakyreluAlpha: 0.1 });
      });
      const [[fast, stock]] = results;
      assert.ok(relativeError(fast!, stock!) <= 1e-4, activation);
    }
  });
});

describe("training with the fast kernels", () => {
  test("a small U-Net follows the stock kernels' loss curve (same seed, 6 Adam steps)", () => {
    const curve = (): number[] => {
      const net = buildReferenceUNet({ base: 4, levels: 3, seed: 3 });
      const optimizer = tf.train.adam(1e-2);
      const x = tf.randomNormal([2, 16, 16, 1], 0, 1, "float32", 1) as tf.Tensor4D;
      const y = tf.cast(tf.greater(tf.randomUniform([2, 16, 16, 1], 0, 1, "float32", 2), 0.5), "float32");
      const losses: number[] = [];
      for (let step = 0; step < 6; step++) {
        const cost = optimizer.minimize(() => bceWithLogits(net.forward(x), y), true, net.variables)!;
        losses.push(cost.dataSync()[0]!);
        cost.dispose();
      }
      optimizer.dispose();
      net.dispose();
      x.dispose();
      y.dispose();
      return losses;
    };
    uninstallFastCpuKernels();
    const stock = curve();
    installFastCpuKernels();
    const fast = curve();
    assert.ok(stock[5]! < stock[0]!, `the stock run should learn: ${stock.join(", ")}`);
    for (let i = 0; i < stock.length; i++) {
      assert.ok(Math.abs(fast[i]! - stock[i]!) <= 1e-4 * Math.abs(stock[i]!), `step ${i}: fast ${fast[i]} vs stock ${stock[i]}`);
    }
  });
});
