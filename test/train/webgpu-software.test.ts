// The webgpu training path computing real numbers without a GPU: Dawn on Mesa's software Vulkan
// (lavapipe, fetched by scripts/software-vulkan.sh; .ci/run does). tfjs-backend-webgpu's WGSL
// kernels and the composite ops our model uses there (the cpu backend runs fused kernels
// instead) must agree with the cpu backend: the reference U-Net's loss curve, and the guided
// segmenter's loss and every parameter gradient. Speed on a GPU is bench/train-gpu.sh's job.
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import path from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";
import { initTrainingBackend, planFilterGradient, probeTrainingBackends } from "../../src/tfjs/backends.js";
import { timeReferenceTraining } from "../../src/tfjs/reference-unet.js";
import { timeSegmenterTraining } from "../../src/segmenter/timing.js";
import { segmenterForward, type Batch } from "../../src/segmenter/guidance.js";
import { diceBceLoss, disposeParams, initParams, trainableVariables, type ModelConfig } from "../../src/segmenter/model.js";
import { deriveSeed, mulberry32, normalArray } from "../../src/segmenter/prng.js";
import { tf } from "../../src/segmenter/runtime.js";
import { runAdamW } from "./adamw-run.js";
import { planSpanChunks } from "../../src/tfjs/webgpu-norm.js";
import { skipUnless } from "../helpers/skip.js";

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const manifest = process.env.PROLEARN_SOFTWARE_VULKAN ?? path.join(repoRoot, ".cache/vulkan/lvp_icd.json");
const dawnInstalled = await import("webgpu").then(
  () => true,
  () => false,
);
const skip =
  skipUnless(dawnInstalled, "the optional package `webgpu` (Dawn) is not installed on this platform") ||
  skipUnless(
    existsSync(manifest),
    `no software Vulkan driver at ${manifest}: run bash scripts/software-vulkan.sh (or set PROLEARN_SOFTWARE_VULKAN to a lavapipe ICD manifest)`,
  );

if (!skip) {
  // Read by the Vulkan loader when Dawn creates its instance, i.e. at the first webgpu start.
  process.env.VK_DRIVER_FILES = manifest;
  process.env.XDG_RUNTIME_DIR ??= "/tmp";
}

async function useWebgpu(): Promise<string> {
  const info = await initTrainingBackend({ backend: "webgpu" });
  assert.equal(info.backend, "webgpu");
  assert.equal(info.softwareAdapter, true);
  return info.adapter;
}

/** max |a - b| relative to max(|b|, floor). */
function relativeError(actual: ArrayLike<number>, expected: ArrayLike<number>, floor = 1e-12): number {
  assert.equal(actual.length, expected.length, "sizes differ");
  let scale = floor;
  let worst = 0;
  for (let i = 0; i < expected.length; i++) {
    scale = Math.max(scale, Math.abs(expected[i]!));
    worst = Math.max(worst, Math.abs(actual[i]! - expected[i]!));
  }
  return worst / scale;
}

test("webgpu starts on the software adapter when forced, and says it is software", { skip }, async () => {
  const adapter = await useWebgpu();
  assert.match(adapter, /llvmpipe|lavapipe|software/i);
});

test("webgpu (lavapipe): the reference U-Net's loss curve equals the cpu backend's", { skip, timeout: 300_000 }, async () => {
  const options = { size: 32, batch: 2, steps: 3, warmup: 0 };
  await useWebgpu();
  const gpu = await timeReferenceTraining(options);
  await initTrainingBackend({ backend: "cpu" });
  const cpu = await timeReferenceTraining(options);
  assert.equal(gpu.params, cpu.params);
  assert.ok(cpu.losses[2]! < cpu.losses[0]!, "Adam lowers the loss");
  assert.ok(relativeError(gpu.losses, cpu.losses) < 1e-4, `webgpu ${gpu.losses} vs cpu ${cpu.losses}`);
});

test("planFilterGradient: enough threads, every row in exactly one non-empty chunk", () => {
  for (const [filterSize, batchRows, weightsPerThread] of [
    [144, 896, 1],
    [2304, 896, 1],
    [2304, 896, 16],
    [9216, 896, 16],
    [2304, 1, 1],
    [9_437_184, 56, 16],
    [16, 100_000, 16],
    [1, 7, 1],
  ] as const) {
    const plan = planFilterGradient(filterSize, batchRows, weightsPerThread);
    assert.equal(plan.threadsPerChunk * weightsPerThread, filterSize);
    assert.ok(plan.chunks >= 1 && plan.chunks <= batchRows);
    assert.ok(plan.rowsPerChunk * plan.chunks >= batchRows, "the chunks cover every row");
    assert.ok(plan.rowsPerChunk * (plan.chunks - 1) < batchRows, "the last chunk is not empty");
    const threads = plan.chunks * plan.threadsPerChunk;
    if (plan.threadsPerChunk * batchRows >= 1 << 18) assert.ok(threads >= (1 << 18) / 2, `${filterSize} x ${batchRows}: ${threads} threads are too few`);
  }
});

type Values = { shape: number[]; values: Float32Array };

/** Runs one kernel on the current backend with NHWC attributes and reads its output back. */
async function kernelOn(kernel: string, inputs: Record<string, Values>, attrs: Record<string, unknown>): Promise<Float32Array> {
  const tensors = Object.fromEntries(Object.entries(inputs).map(([name, v]) => [name, tf.tensor(v.values, v.shape)]));
  const out = tf.engine().runKernel(kernel, tensors as never, { ...attrs, dataFormat: "NHWC", dimRoundingMode: undefined } as never) as tf.Tensor;
  const values = Float32Array.from((await out.data()) as Float32Array);
  tf.dispose([...Object.values(tensors), out]);
  return values;
}

const filterGradientOn = (x: Values, dy: Values, attrs: { strides: [number, number]; pad: "same" | "valid"; filterShape: [number, number, number, number] }) =>
  kernelOn("Conv2DBackpropFilter", { x, dy }, attrs);

test("webgpu (lavapipe): our Conv2DBackpropInput equals the cpu backend's, stride 1 by a flipped-filter convolution, stride 2 by the stock kernel", {
  skip,
  timeout: 300_000,
}, async () => {
  const random = mulberry32(deriveSeed(6, "input-gradient"));
  const pick = (lo: number, hi: number) => lo + Math.floor(random() * (hi - lo + 1));
  const cases = Array.from({ length: 20 }, (_, i) => {
    const [kh, kw] = [[1, 2, 3, 5][pick(0, 3)]!, [1, 2, 3, 5][pick(0, 3)]!];
    const inputShape: [number, number, number, number] = [pick(1, 3), pick(kh, 18), pick(kw, 18), pick(1, 20)];
    const filterShape: [number, number, number, number] = [kh, kw, inputShape[3], pick(1, 20)];
    // Mostly stride 1 (ours); every fifth case stride 2 (the stock kernel, as the up-sampling uses).
    const strides: [number, number] = i % 5 === 4 ? [2, 2] : [1, 1];
    const pad = random() < 0.5 ? ("same" as const) : ("valid" as const);
    const info = tf.backend_util.computeConv2DInfo(inputShape, filterShape, strides, 1, pad);
    const dyShape = [info.batchSize, info.outHeight, info.outWidth, info.outChannels];
    return {
      label: `input ${inputShape} filter ${filterShape} strides ${strides} ${pad}`,
      dy: {
        shape: dyShape,
        values: normalArray(
          random,
          dyShape.reduce((a, b) => a * b, 1),
          1,
        ),
      },
      filter: {
        shape: filterShape,
        values: normalArray(
          random,
          filterShape.reduce((a, b) => a * b, 1),
          1,
        ),
      },
      attrs: { strides, pad, inputShape },
    };
  });
  await useWebgpu();
  const buffersBefore = tf.backend().numDataIds();
  const gpu = [];
  for (const c of cases) gpu.push(await kernelOn("Conv2DBackpropInput", { dy: c.dy, filter: c.filter }, c.attrs));
  assert.equal(tf.backend().numDataIds(), buffersBefore, "the flipped filters are freed");
  await initTrainingBackend({ backend: "cpu" });
  for (const [i, c] of cases.entries()) {
    const cpu = await kernelOn("Conv2DBackpropInput", { dy: c.dy, filter: c.filter }, c.attrs);
    const error = relativeError(gpu[i]!, cpu, 1e-6);
    assert.ok(error < 1e-4, `${c.label}: webgpu vs cpu relative error ${error}`);
  }
});

test("webgpu (lavapipe): our Conv2DBackpropFilter equals the cpu backend's on random shapes, strides and paddings", { skip, timeout: 300_000 }, async () => {
  const random = mulberry32(deriveSeed(5, "filter-gradient"));
  const pick = (lo: number, hi: number) => lo + Math.floor(random() * (hi - lo + 1));
  const cases: Array<{ x: number[]; filter: [number, number, number, number]; strides: [number, number]; pad: "same" | "valid" }> = [];
  for (let i = 0; i < 24; i++) {
    const k = [1, 2, 3, 5][pick(0, 3)]!;
    const size = pick(k, 20);
    cases.push({
      x: [pick(1, 3), size, pick(k, 20), pick(1, 24)],
      filter: [k, [1, 2, 3, 5][pick(0, 3)]!, 0, pick(1, 24)],
      strides: [pick(1, 2), pick(1, 2)],
      pad: random() < 0.5 ? "same" : "valid",
    });
  }
  // Channels in multiples of 4 (the 4 x 4 blocked program), one with 2 chunks' worth of rows.
  for (const [n, h, w, cin, cout, k, stride, pad] of [
    [2, 9, 7, 4, 8, 3, 1, "same"],
    [1, 12, 12, 16, 4, 3, 2, "valid"],
    [3, 5, 6, 8, 12, 1, 1, "valid"],
    [2, 20, 20, 32, 32, 3, 1, "same"],
  ] as const) {
    cases.push({ x: [n, h, w, cin], filter: [k, k, 0, cout], strides: [stride, stride], pad });
  }
  // One chunk (a tiny batch), and a filter too big for one dispatch dimension: 4.4M weights, one
  // thread each (701 channels is not a multiple of 4), is 69,000 workgroups of 64, over WebGPU's
  // 65,535 per dimension, so tfjs-backend-webgpu folds the dispatch into two dimensions.
  cases.push({ x: [1, 1, 1, 3], filter: [1, 1, 0, 5], strides: [1, 1], pad: "valid" });
  cases.push({ x: [1, 3, 3, 701], filter: [3, 3, 0, 701], strides: [1, 1], pad: "same" });
  await useWebgpu();
  const inputs = cases.map((c) => {
    const filterShape: [number, number, number, number] = [c.filter[0], Math.min(c.filter[1], c.x[2]!), c.x[3]!, c.filter[3]];
    const info = tf.backend_util.computeConv2DInfo(c.x as [number, number, number, number], filterShape, c.strides, 1, c.pad);
    const dyShape = [info.batchSize, info.outHeight, info.outWidth, info.outChannels];
    return {
      label: `x ${c.x} filter ${filterShape} strides ${c.strides} ${c.pad}`,
      x: {
        shape: c.x,
        values: normalArray(
          random,
          c.x.reduce((a, b) => a * b, 1),
          1,
        ),
      },
      dy: {
        shape: dyShape,
        values: normalArray(
          random,
          dyShape.reduce((a, b) => a * b, 1),
          1,
        ),
      },
      attrs: { strides: c.strides, pad: c.pad, filterShape },
    };
  });
  const gpu: Float32Array[] = [];
  const buffersBefore = tf.backend().numDataIds();
  for (const input of inputs) {
    gpu.push(
      await filterGradientOn(input.x, input.dy, input.attrs).catch((error: Error) => {
        throw new Error(`${input.label}: ${error.message}`);
      }),
    );
  }
  assert.equal(tf.backend().numDataIds(), buffersBefore, "the partial sums are freed");
  await initTrainingBackend({ backend: "cpu" });
  for (const [i, input] of inputs.entries()) {
    const cpu = await filterGradientOn(input.x, input.dy, input.attrs);
    const error = relativeError(gpu[i]!, cpu, 1e-6);
    assert.ok(error < 1e-4, `${input.label}: webgpu vs cpu relative error ${error}`);
  }
});

test("webgpu (lavapipe): the fused AdamW kernel updates parameters and moments as the cpu backend does", { skip, timeout: 120_000 }, async () => {
  const random = mulberry32(deriveSeed(9, "adamw"));
  const shapes: Record<string, number[]> = { "enc0.w": [3, 3, 4, 8], "enc0.b": [8], "head.w": [1000] };
  const initial = Object.fromEntries(
    Object.entries(shapes).map(([name, shape]) => [
      name,
      normalArray(
        random,
        shape.reduce((a, b) => a * b, 1),
        1,
      ),
    ]),
  );
  const gradientsPerStep = [0, 1, 2].map(() =>
    Object.fromEntries(
      Object.entries(shapes).map(([name, shape]) => [
        name,
        normalArray(
          random,
          shape.reduce((a, b) => a * b, 1),
          0.1,
        ),
      ]),
    ),
  );
  const run = () => runAdamW({ shapes, initial, gradientsPerStep, lr: (step) => 1e-2 * (step + 1) });
  await useWebgpu();
  assert.ok(tf.getKernel("ProlearnAdamW", "webgpu"), "the webgpu AdamW kernel is registered");
  const gpu = await run();
  await initTrainingBackend({ backend: "cpu" });
  const cpu = await run();
  for (const [name, expected] of cpu) {
    const error = relativeError(gpu.get(name)!, expected, 1e-6);
    assert.ok(error < 1e-5, `${name}: webgpu vs cpu relative error ${error}`);
  }
});

test("planSpanChunks: every span row in exactly one non-empty chunk, enough threads", () => {
  for (const [groups, span, channels] of [
    [4, 50_176, 32],
    [4, 784, 256],
    [1, 1, 1],
    [32, 64, 1],
    [2, 7, 3],
    [1, 1_000_000, 1],
  ] as const) {
    const { chunks, rowsPerChunk } = planSpanChunks(groups, span, channels);
    assert.ok(chunks >= 1 && chunks <= span);
    assert.ok(rowsPerChunk * chunks >= span && rowsPerChunk * (chunks - 1) < span, `${groups}x${span}x${channels}: ${chunks} x ${rowsPerChunk}`);
    // The second pass loops over the chunks: about sqrt(span) at most.
    assert.ok(chunks <= Math.ceil(Math.sqrt(span)), `${groups}x${span}x${channels}: ${chunks} chunks`);
    const wanted = Math.min((1 << 17) / 2, (groups * channels * Math.floor(Math.sqrt(span))) / 2);
    assert.ok(groups * chunks * channels >= wanted, `${groups}x${span}x${channels}: too few threads`);
  }
});

test("webgpu (lavapipe): the normalisation kernels equal the cpu ones, forward and backward, with and without ReLU", { skip, timeout: 300_000 }, async () => {
  const random = mulberry32(deriveSeed(4, "group-norm"));
  const cases: Array<{ groups: number; span: number; channels: number; relu: boolean }> = [
    { groups: 2, span: 300, channels: 8, relu: true },
    { groups: 3, span: 49, channels: 5, relu: false },
    { groups: 6, span: 24, channels: 1, relu: false },
    { groups: 1, span: 1, channels: 4, relu: true },
    { groups: 2, span: 4096, channels: 32, relu: true },
    // A layer norm's shape: many groups, one channel (dbeta and dgamma sum over chunks of groups).
    { groups: 700, span: 16, channels: 1, relu: false },
    // 4.5M elements: the per-element programs need 70,000 workgroups, more than one dispatch
    // dimension holds, so tfjs-backend-webgpu folds them (as at 224 x 224, batch 32). Without ReLU:
    // among millions of outputs some land within rounding of 0, where the ReLU gradient of the two
    // backends may rightly differ.
    { groups: 1, span: 140_000, channels: 32, relu: false },
  ];
  const kernels = ["ProlearnGroupNorm", "ProlearnGroupNormGrad"];
  async function run(c: (typeof cases)[number], values: Record<string, Float32Array>): Promise<Float32Array[]> {
    const shape = [c.groups, c.span, c.channels];
    const t = (name: string, s: number[]) => tf.tensor(values[name]!, s);
    const [x, gamma, beta, dy] = [t("x", shape), t("gamma", [c.channels]), t("beta", [c.channels]), t("dy", shape)];
    const attrs = { groups: c.groups, span: c.span, channels: c.channels, epsilon: 1e-5, relu: c.relu };
    const [y, xhat, invStd] = tf.engine().runKernel(kernels[0]!, { x, gamma, beta } as never, attrs as never) as tf.Tensor[];
    const grads = tf.engine().runKernel(kernels[1]!, { dy, xhat: xhat!, invStd: invStd!, gamma, y: y! } as never, attrs as never) as tf.Tensor[];
    const out = [];
    for (const tensor of [y!, xhat!, invStd!, ...grads]) out.push(Float32Array.from((await tensor.data()) as Float32Array));
    tf.dispose([x, gamma, beta, dy, y!, xhat!, invStd!, ...grads]);
    return out;
  }
  const inputs = cases.map((c) => {
    const size = c.groups * c.span * c.channels;
    return {
      x: Float32Array.from(normalArray(random, size, 2), (v, i) => v + (i % c.channels) * 3),
      gamma: normalArray(random, c.channels, 1),
      beta: normalArray(random, c.channels, 1),
      dy: normalArray(random, size, 1),
    };
  });
  await useWebgpu();
  for (const name of kernels) assert.ok(tf.getKernel(name, "webgpu"), `${name} is registered on webgpu`);
  const buffersBefore = tf.backend().numDataIds();
  const gpu = [];
  for (const [i, c] of cases.entries()) gpu.push(await run(c, inputs[i]!));
  assert.equal(tf.backend().numDataIds(), buffersBefore, "the intermediate sums are freed");
  await initTrainingBackend({ backend: "cpu" });
  const names = ["y", "xhat", "invStd", "dx", "dgamma", "dbeta"];
  for (const [i, c] of cases.entries()) {
    const cpu = await run(c, inputs[i]!);
    for (const [k, expected] of cpu.entries()) {
      const error = relativeError(gpu[i]![k]!, expected, 1e-3);
      assert.ok(error < 1e-4, `${JSON.stringify(c)} ${names[k]}: webgpu vs cpu relative error ${error}`);
    }
  }
});

/** Loss and gradients of one training step, read back asynchronously (webgpu cannot read synchronously in Node). */
async function trainingStep(config: ModelConfig, batch: Batch, external: Record<string, Float32Array>): Promise<Map<string, Float32Array>> {
  const store = initParams(config, 3, external);
  const variables = trainableVariables(store);
  const size = config.net.imageSize;
  const { value, grads } = tf.variableGrads(
    () => diceBceLoss(segmenterForward(store, config, batch).logits, tf.tensor4d(batch.masks!, [batch.size, size, size, 1])),
    [...variables.values()],
  );
  const out = new Map<string, Float32Array>([["loss", Float32Array.from(await value.data())]]);
  for (const [name, v] of variables) out.set(name, Float32Array.from((await grads[v.name]!.data()) as Float32Array));
  value.dispose();
  Object.values(grads).forEach((g) => g.dispose());
  disposeParams(store);
  return out;
}

function images(count: number, size: number): Pick<Batch, "size" | "images" | "masks"> {
  const pixels = count * size * size;
  return {
    size: count,
    images: Float32Array.from({ length: pixels }, (_, i) => ((i * 7919) % 97) / 97),
    masks: Float32Array.from({ length: pixels }, (_, i) => ((i * 31) % 11 < 3 ? 1 : 0)),
  };
}

const VOCAB_MODEL: ModelConfig = {
  net: { imageSize: 16, inChannels: 1, baseChannels: 4, depth: 3, heads: 2, tokenDim: 8 },
  guidance: { kind: "vocab", vocab: ["<pad>", "<unk>", "upper", "left", "lung", "lower"], tokenDim: 8, maxTokens: 7 },
};
const PSA_MODEL: ModelConfig = {
  net: { imageSize: 16, inChannels: 1, baseChannels: 4, depth: 3, heads: 2, tokenDim: 8 },
  guidance: { kind: "psa", embeddingDim: 12, prototypes: 5, topK: 2, temperature: 0.1, guidanceTokens: 2, tokenDim: 8 },
};

for (const [label, config, batch, external] of [
  [
    "word-vocabulary guidance (guide stage)",
    VOCAB_MODEL,
    { ...images(3, 16), guidance: { kind: "vocab", ids: Int32Array.from([2, 3, 4, 0, 0, 0, 0, 5, 4, 0, 0, 0, 0, 0, 2, 2, 3, 4, 5, 0, 0]) } },
    {},
  ],
  [
    "PSA guidance (train stage)",
    PSA_MODEL,
    { ...images(2, 16), guidance: { kind: "psa", indices: Int32Array.from([0, 3, 4, 1]), weights: Float32Array.from([0.7, 0.3, 0.55, 0.45]) } },
    { "psa.query": normalArray(mulberry32(deriveSeed(1, "q")), 60, 1), "psa.response": normalArray(mulberry32(deriveSeed(1, "r")), 60, 1) },
  ],
] as const) {
  test(`webgpu (lavapipe): one training step with ${label}: loss and every parameter gradient equal the cpu backend's`, {
    skip,
    timeout: 300_000,
  }, async () => {
    await useWebgpu();
    const gpu = await trainingStep(config, batch as Batch, external as Record<string, Float32Array>);
    await initTrainingBackend({ backend: "cpu" });
    const cpu = await trainingStep(config, batch as Batch, external as Record<string, Float32Array>);
    assert.ok(cpu.size > 10, "a gradient per trainable tensor");
    for (const [name, expected] of cpu) {
      // Gradients that are zero in exact arithmetic (biases before instance norm, the key bias
      // under softmax) are rounding noise on both sides: errors are relative to a floor of 1e-3.
      const error = relativeError(gpu.get(name)!, expected, 1e-3);
      assert.ok(error < 2e-3, `${name}: webgpu vs cpu relative error ${error}`);
    }
  });
}

test("webgpu (lavapipe): a profiled segmenter step times each kernel on the GPU, and our kernels by program", { skip, timeout: 300_000 }, async () => {
  await useWebgpu();
  const timing = await timeSegmenterTraining({ size: 16, batch: 1, steps: 1, warmup: 1, baseChannels: 4, depth: 2, profile: true });
  const kernels = new Map(timing.kernels!.map((k) => [k.kernel, k]));
  for (const name of ["ProlearnGroupNorm", "ProlearnGroupNormGrad", "ProlearnAdamW", "Conv2DBackpropFilter", "Conv2DBackpropInput"])
    assert.ok((kernels.get(name)?.ms ?? 0) > 0, `${name} has GPU time`);
  const programs = kernels.get("ProlearnGroupNorm")!.programs!.map((p) => p.program);
  // Instance norms (with ReLU) and the attention's layer norms (without).
  for (const program of [
    "prolearnNormFinish_invStd",
    "prolearnNormFinish_mean",
    "prolearnNormPartials_centredSquares",
    "prolearnNormPartials_sum",
    "prolearnNorm_xhat",
    "prolearnNorm_yRelu",
    "prolearnNorm_y",
  ]) {
    assert.ok(programs.includes(program), `${program} in ${programs.join(", ")}`);
  }
});

test("probeTrainingBackends reports lavapipe as a software webgpu adapter that auto skips", { skip }, async () => {
  // The toggle makes the probe try Dawn although this machine shows no GPU device node.
  const { probes, auto } = await probeTrainingBackends({ dawnToggles: ["backend=vulkan"] });
  const webgpu = probes.find((p) => p.backend === "webgpu")!;
  assert.equal(webgpu.status, "software");
  assert.match(webgpu.adapter ?? "", /llvmpipe|lavapipe/i);
  assert.notEqual(auto, "webgpu");
});
