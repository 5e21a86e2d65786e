import { test, describe, after } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { conv2dForward, conv2dBackpropInput, conv2dBackpropFilter, GemmWorkspace, type ConvGeometry } from "../../src/tfjs/backends.js";
import { GemmBatch } from "../../src/linalg/gemm.js";
import { batchMatMul } from "../../src/linalg/matmul.js";
import { configuredGemmThreads } from "../../src/linalg/gemm-threads.js";
import { EnvironmentError } from "../../src/errors.js";
import { mulberry32 } from "../../src/util/random.js";

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");

function randomArray(length: number, seed: number): Float32Array {
  const r = mulberry32(seed);
  return Float32Array.from({ length }, () => r() - 0.5);
}

function maxRelativeError(actual: Float32Array, expected: Float32Array): number {
  assert.equal(actual.length, expected.length);
  let scale = 0;
  let worst = 0;
  for (let i = 0; i < expected.length; i++) {
    scale = Math.max(scale, Math.abs(expected[i]!));
    worst = Math.max(worst, Math.abs(actual[i]! - expected[i]!));
  }
  return worst / scale;
}

/** A stride-1 "same" 3x3 convolution big enough (> 8 MFLOP) for the threaded path. */
function geometry(batch: number, size: number, inChannels: number, outChannels: number): ConvGeometry {
  return {
    batch,
    inHeight: size,
    inWidth: size,
    inChannels,
    outHeight: size,
    outWidth: size,
    outChannels,
    filterHeight: 3,
    filterWidth: 3,
    strideHeight: 1,
    strideWidth: 1,
    padTop: 1,
    padLeft: 1,
  };
}

/** dw[ky, kx, c, o] = sum over (b, oy, ox) of x[b, oy + ky - pad, ox + kx - pad, c] * dy[b, oy, ox, o], in float64. */
function filterGradientFloat64(x: Float32Array, dy: Float32Array, g: ConvGeometry): Float32Array {
  const { batch, inHeight: H, inWidth: W, inChannels: C, outHeight: OH, outWidth: OW, outChannels: N, filterHeight: FH, filterWidth: FW, padTop, padLeft } = g;
  const dw = new Float64Array(FH * FW * C * N);
  for (let b = 0; b < batch; b++) {
    for (let oy = 0; oy < OH; oy++) {
      for (let ox = 0; ox < OW; ox++) {
        for (let ky = 0; ky < FH; ky++) {
          const iy = oy + ky - padTop;
          if (iy < 0 || iy >= H) continue;
          for (let kx = 0; kx < FW; kx++) {
            const ix = ox + kx - padLeft;
            if (ix < 0 || ix >= W) continue;
            for (let c = 0; c < C; c++) {
              const xv = x[((b * H + iy) * W + ix) * C + c]!;
              const base = ((ky * FW + kx) * C + c) * N;
              for (let o = 0; o < N; o++) dw[base + o] += xv * dy[((b * OH + oy) * OW + ox) * N + o]!;
            }
          }
        }
      }
    }
  }
  return Float32Array.from(dw);
}

describe("GEMM worker threads", () => {
  const single = new GemmWorkspace({ threads: 1 });
  // Three threads on any machine: more threads than cores must still compute the same thing.
  const threaded = new GemmWorkspace({ threads: 3 });
  after(() => threaded.setThreads(1));

  test("threaded convolutions equal the one-thread kernels bit for bit (forward, input and filter gradients)", () => {
    const shapes: Array<[number, number, number, number]> = [
      [2, 64, 16, 16],
      [4, 33, 8, 24],
      [1, 48, 32, 9],
    ];
    for (const [index, [batch, size, inChannels, outChannels]] of shapes.entries()) {
      const g = geometry(batch, size, inChannels, outChannels);
      const flops = 2 * batch * size * size * 9 * inChannels * outChannels;
      assert.equal(threaded.threadsFor(flops), 3, `shape ${index} is too small to exercise the threads`);
      const x = randomArray(batch * size * size * inChannels, 10 + index);
      const w = randomArray(9 * inChannels * outChannels, 20 + index);
      const dy = randomArray(batch * size * size * outChannels, 30 + index);
      // Forward rows never share an output, so splitting them changes no sum.
      assert.deepEqual(conv2dForward(x, w, g, threaded), conv2dForward(x, w, g, single), `forward, shape ${index}`);
      assert.deepEqual(conv2dBackpropInput(dy, w, g, threaded), conv2dBackpropInput(dy, w, g, single), `input gradient, shape ${index}`);
      // The filter gradient's parts depend on the size, not the threads: same sums, same bits.
      const dw = conv2dBackpropFilter(x, dy, g, threaded);
      assert.deepEqual(dw, conv2dBackpropFilter(x, dy, g, single), `filter gradient, shape ${index}`);
      const error = maxRelativeError(dw, filterGradientFloat64(x, dy, g));
      assert.ok(error < 1e-5, `filter gradient, shape ${index}: relative error ${error} against float64 sums`);
    }
    assert.equal(threaded.threadFailure, undefined);
    assert.equal(threaded.threads, 3);
  });

  test("threaded matrix products (row blocks) equal the one-thread ones bit for bit, plain and transposed", () => {
    for (const [index, [batch, m, n, k, transposeA, transposeB]] of (
      [
        [1, 400, 96, 128, false, false],
        [2, 130, 64, 512, true, false],
        [1, 161, 72, 384, false, true],
      ] as const
    ).entries()) {
      assert.equal(threaded.threadsFor(2 * m * n * k), 3, `shape ${index} is too small to exercise the threads`);
      const a = randomArray(batch * m * k, 40 + index);
      const b = randomArray(batch * k * n, 50 + index);
      const shape = { batch, batchA: batch, batchB: batch, m, n, k, transposeA, transposeB };
      const product = batchMatMul(a, b, shape, threaded);
      assert.deepEqual(product, batchMatMul(a, b, shape, single), `shape ${index}`);
      // And right, against float64 sums (row blocks must start where they claim to).
      const expected = new Float32Array(batch * m * n);
      for (let item = 0; item < batch; item++) {
        for (let i = 0; i < m; i++) {
          for (let j = 0; j < n; j++) {
            let sum = 0;
            for (let p = 0; p < k; p++) {
              const av = transposeA ? a[item * m * k + p * m + i]! : a[item * m * k + i * k + p]!;
              const bv = transposeB ? b[item * k * n + j * k + p]! : b[item * k * n + p * n + j]!;
              sum += av * bv;
            }
            expected[(item * m + i) * n + j] = sum;
          }
        }
      }
      assert.ok(maxRelativeError(product, expected) < 1e-5, `shape ${index} against float64`);
    }
  });

  /**
   * Queues `groups` groups on the threaded workspace, group g adding A * B `repeats(g)` times into
   * its own m x n block of C, runs them, and returns the blocks and A * B from the one-thread GEMM.
   */
  function runBlockBatch(
    m: number,
    n: number,
    k: number,
    groups: number,
    repeats: (group: number) => number,
    seed: number,
  ): { blocks: Float32Array[]; product: Float32Array } {
    const ws = threaded;
    ws.reset();
    const a = ws.reserve(m * k);
    const b = ws.reserve(k * n);
    const c = ws.reserve(groups * m * n);
    const aValues = randomArray(m * k, seed);
    const bValues = randomArray(k * n, seed + 1);
    ws.f32.set(aValues, a);
    ws.f32.set(bValues, b);
    ws.f32.fill(0, c, c + groups * m * n);
    const batch = new GemmBatch();
    for (let group = 0; group < groups; group++) {
      for (let repeat = 0; repeat < repeats(group); repeat++) batch.push(false, m, n, k, a, k, b, n, c + group * m * n, n);
      batch.endGroup();
    }
    assert.equal(ws.threadsFor(batch.flops), 3, "the batch is too small to exercise the threads");
    ws.runBatch(batch);
    const f = ws.f32;
    const blocks = Array.from({ length: groups }, (_, group) => f.slice(c + group * m * n, c + (group + 1) * m * n));
    single.reset();
    const sa = single.reserve(m * k);
    const sb = single.reserve(k * n);
    const sc = single.reserve(m * n);
    single.f32.set(aValues, sa);
    single.f32.set(bValues, sb);
    single.f32.fill(0, sc, sc + m * n);
    single.gemm(false, m, n, k, sa, k, sb, n, sc, n);
    return { blocks, product: single.f32.slice(sc, sc + m * n) };
  }

  test("a batch's groups run whole, each on one thread, every call once", () => {
    // 40 groups writing disjoint blocks of C, each group 2 to 4 calls accumulating into its block.
    const repeats = (group: number) => 2 + (group % 3);
    const { blocks, product } = runBlockBatch(32, 32, 128, 40, repeats, 1);
    blocks.forEach((block, group) => {
      for (let i = 0; i < block.length; i++) {
        const expected = repeats(group) * product[i]!;
        assert.ok(
          Math.abs(block[i]! - expected) <= 1e-5 * Math.max(1, Math.abs(expected)),
          `group ${group} element ${i}: ${block[i]} != ${repeats(group)} x ${product[i]}`,
        );
      }
    });
  });

  test("a batch above the threshold is computed by the workers too, not only the calling thread", () => {
    // Groups are taken from a shared counter, so a worker that wakes late may find none left:
    // repeat the batch until the workers have run some (the first dispatch almost always does).
    const before = threaded.groupsRunByWorkers;
    for (let dispatch = 0; dispatch < 50 && threaded.groupsRunByWorkers === before; dispatch++) {
      const { blocks, product } = runBlockBatch(64, 64, 256, 24, () => 1, 3 + dispatch);
      assert.ok(product.some((v) => v !== 0));
      blocks.forEach((block, group) => assert.deepEqual(block, product, `dispatch ${dispatch}, block ${group}`));
    }
    assert.ok(threaded.groupsRunByWorkers > before, "the workers ran no group in 50 dispatches");
  });
});

describe("thread configuration", () => {
  test("PROLEARN_CPU_THREADS sets the count and a bad value is an EnvironmentError naming it", () => {
    const saved = process.env.PROLEARN_CPU_THREADS;
    try {
      process.env.PROLEARN_CPU_THREADS = "3";
      assert.equal(configuredGemmThreads(), 3);
      for (const bad of ["0", "two", "1.5", "65"]) {
        process.env.PROLEARN_CPU_THREADS = bad;
        assert.throws(
          () => configuredGemmThreads(),
          (e: unknown) => e instanceof EnvironmentError && e.message.includes("PROLEARN_CPU_THREADS") && e.message.includes(bad),
        );
      }
      delete process.env.PROLEARN_CPU_THREADS;
      assert.ok(configuredGemmThreads() >= 1);
    } finally {
      if (saved === undefined) delete process.env.PROLEARN_CPU_THREADS;
      else process.env.PROLEARN_CPU_THREADS = saved;
    }
  });

  test("a process whose GEMM workers sit idle still exits by itself", () => {
    const script = [
      'import { conv2dForward, GemmWorkspace } from "./src/tfjs/backends.js";',
      "const ws = new GemmWorkspace({ threads: 2 });",
      "const g = { batch: 2, inHeight: 64, inWidth: 64, inChannels: 16, outHeight: 64, outWidth: 64, outChannels: 16, filterHeight: 3, filterWidth: 3, strideHeight: 1, strideWidth: 1, padTop: 1, padLeft: 1 };",
      "const y = conv2dForward(new Float32Array(2 * 64 * 64 * 16).fill(1), new Float32Array(9 * 16 * 16).fill(1), g, ws);",
      "console.log(ws.threads, ws.threadFailure ?? 'started', y[64 * 16 + 16]);",
    ].join("\n");
    const run = spawnSync(process.execPath, ["--import", "tsx", "--input-type=module", "-e", script], { cwd: repoRoot, encoding: "utf8", timeout: 60_000 });
    assert.equal(run.error, undefined, `the child did not exit: ${run.error?.message}`);
    assert.equal(run.status, 0, run.stderr);
    // An interior pixel sums 3 x 3 x 16 ones.
    assert.equal(run.stdout.trim(), "2 started 144");
  });
});
