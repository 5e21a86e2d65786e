/**
 * Kernels that replace tfjs-backend-webgpu's where its own leave a GPU idle, and kernels it lacks.
 * Each was found with `prolearn bench train --backend webgpu --profile` (bench/RESULTS.md).
 *
 * - `Conv2DBackpropFilter`: the stock kernel runs one GPU thread per filter weight, each summing
 *   over every pixel of the batch. A 3x3 16 -> 16 convolution at 224 x 224, batch 4 is 2,304
 *   threads looping 200,704 times, on a GPU that keeps ~270,000 threads in flight: 98% of a
 *   reference U-Net step's GPU time on an H200. Ours splits the pixel rows into chunks so there are
 *   enough threads, writes one partial filter per chunk, then sums the partials in chunk order.
 *   The chunking depends only on the shapes, so results are the same on every run.
 * - `Conv2DBackpropInput` with stride 1: a forward convolution with the flipped filter.
 * - `ProlearnAdamW`: one update per parameter tensor; the instance/layer normalisation kernels are
 *   in webgpu-norm.ts. The model otherwise runs both as dozens of small ops.
 */
import * as tf from "@tensorflow/tfjs-core";
import type { KernelFunc, TensorInfo } from "@tensorflow/tfjs-core";
import { MODEL_KERNELS, type AdamWAttrs } from "./model-kernels.js";
import { ElementProgram, float, int, type WebgpuBackendLike } from "./webgpu-program.js";
import { WEBGPU_NORM_KERNELS } from "./webgpu-norm.js";

/** Threads worth dispatching for one filter gradient: about what a large GPU keeps resident. */
const TARGET_THREADS = 1 << 18;

interface FilterGradientPlan {
  /** Rows of the flattened (batch x output rows) each partial sums. */
  rowsPerChunk: number;
  chunks: number;
  filterSize: number;
  /** Threads per chunk: filterSize, or filterSize / 16 when each thread owns a 4 x 4 block. */
  threadsPerChunk: number;
}

/**
 * How many partial filters to compute: enough threads to fill a GPU, no chunk empty.
 * `weightsPerThread` is 1, or 16 for the 4 x 4 blocked program.
 */
export function planFilterGradient(filterSize: number, batchRows: number, weightsPerThread: 1 | 16 = 1, targetThreads = TARGET_THREADS): FilterGradientPlan {
  const threadsPerChunk = filterSize / weightsPerThread;
  const wanted = Math.max(1, Math.min(batchRows, Math.ceil(targetThreads / threadsPerChunk)));
  const rowsPerChunk = Math.ceil(batchRows / wanted);
  return { rowsPerChunk, chunks: Math.ceil(batchRows / rowsPerChunk), filterSize, threadsPerChunk };
}

const UNIFORMS =
  "pads : vec2<i32>, strides : vec2<i32>, outHeight : i32, outWidth : i32, inHeight : i32, inWidth : i32, inChannels : i32, outChannels : i32, filterWidth : i32, batchRows : i32, rowsPerChunk : i32,";

/**
 * The loop over one chunk's pixel rows, shared by both programs. `body` runs for every pixel
 * that the weight at (wR, wC) sees, with `xPixel` and `dyPixel` the flat pixel indices.
 */
function rowLoop(body: string): string {
  return `
        let rowStart = chunk * uniforms.rowsPerChunk;
        let rowEnd = min(rowStart + uniforms.rowsPerChunk, uniforms.batchRows);
        for (var row = rowStart; row < rowEnd; row = row + 1) {
          let b = row / uniforms.outHeight;
          let yR = row - b * uniforms.outHeight;
          let xR = wR + yR * uniforms.strides[0] - uniforms.pads[0];
          if (xR < 0 || xR >= uniforms.inHeight) {
            continue;
          }
          let xRowBase = (b * uniforms.inHeight + xR) * uniforms.inWidth;
          let dyRowBase = row * uniforms.outWidth;
          for (var yC = 0; yC < uniforms.outWidth; yC = yC + 1) {
            let xC = wC + yC * uniforms.strides[1] - uniforms.pads[1];
            if (xC < 0 || xC >= uniforms.inWidth) {
              continue;
            }
            let xPixel = xRowBase + xC;
            let dyPixel = dyRowBase + yC;
            ${body}
          }
        }`;
}

/**
 * Partial filter gradients, [chunks, kh * kw * inChannels * outChannels], from NHWC x and dy.
 * `blocked` (both channel counts multiples of 4): each thread owns a 4 x 4 block of (input
 * channel, output channel) weights and reads x and dy as vec4s, 2 loads per 16 multiply-adds
 * instead of 2 per 1. Otherwise one weight per thread; consecutive threads take consecutive
 * output channels, so their dy reads are contiguous and their x reads one broadcast address.
 */
function filterGradientPartialsProgram(plan: FilterGradientPlan, blocked: boolean): ElementProgram {
  const shape = [plan.chunks, plan.filterSize];
  const key = `prolearnConv2DFilterGradientPartials_${blocked ? "blocked4x4" : "scalar"}`;
  const options = { threads: plan.chunks * plan.threadsPerChunk };
  if (!blocked) {
    return new ElementProgram(
      key,
      ["x", "dy"],
      shape,
      UNIFORMS,
      `let filterSize = uniforms.outShape[1];
        let chunk = index / filterSize;
        var f = index - chunk * filterSize;
        let d2 = f % uniforms.outChannels;
        f = f / uniforms.outChannels;
        let d1 = f % uniforms.inChannels;
        f = f / uniforms.inChannels;
        let wC = f % uniforms.filterWidth;
        let wR = f / uniforms.filterWidth;
        var sum = 0.0;
        ${rowLoop("sum = sum + x[xPixel * uniforms.inChannels + d1] * dy[dyPixel * uniforms.outChannels + d2];")}
        setOutputAtIndex(index, sum);`,
      options,
    );
  }
  return new ElementProgram(
    key,
    ["x", "dy"],
    shape,
    UNIFORMS,
    `let filterSize = uniforms.outShape[1];
        let blocksPerChunk = filterSize / 16;
        let chunk = index / blocksPerChunk;
        var f = index - chunk * blocksPerChunk;
        let outQuads = uniforms.outChannels / 4;
        let inQuads = uniforms.inChannels / 4;
        let d2 = (f % outQuads) * 4;
        f = f / outQuads;
        let d1 = (f % inQuads) * 4;
        f = f / inQuads;
        let wC = f % uniforms.filterWidth;
        let wR = f / uniforms.filterWidth;
        var s0 = vec4<f32>(0.0);
        var s1 = vec4<f32>(0.0);
        var s2 = vec4<f32>(0.0);
        var s3 = vec4<f32>(0.0);
        ${rowLoop(`let xv = x[(xPixel * uniforms.inChannels + d1) / 4];
            let dv = dy[(dyPixel * uniforms.outChannels + d2) / 4];
            s0 = s0 + xv.x * dv;
            s1 = s1 + xv.y * dv;
            s2 = s2 + xv.z * dv;
            s3 = s3 + xv.w * dv;`)}
        let base = chunk * filterSize + ((wR * uniforms.filterWidth + wC) * uniforms.inChannels + d1) * uniforms.outChannels + d2;
        let rowStride = uniforms.outChannels;
        for (var j = 0; j < 4; j = j + 1) {
          setOutputAtIndex(base + j, s0[j]);
          setOutputAtIndex(base + rowStride + j, s1[j]);
          setOutputAtIndex(base + 2 * rowStride + j, s2[j]);
          setOutputAtIndex(base + 3 * rowStride + j, s3[j]);
        }`,
    // One thread per 4 x 4 block of weights, reading x and dy as vec4s.
    { ...options, bound: "uniforms.size / 16", variableComponents: [4, 4] },
  );
}

/**
 * Sums the partial filters in chunk order, one weight per thread (consecutive threads read
 * consecutive addresses). tfjs's own Sum would transpose first, and its reduction cannot
 * dispatch more than 65,535 outputs on some adapters.
 */
function sumPartialsProgram(filterShape: number[]): ElementProgram {
  return new ElementProgram(
    "prolearnSumFilterGradientPartials",
    ["partials"],
    filterShape,
    "chunks : i32,",
    `var sum = 0.0;
        for (var c = 0; c < uniforms.chunks; c = c + 1) {
          sum = sum + partials[c * uniforms.size + index];
        }
        setOutputAtIndex(index, sum);`,
  );
}

type Conv2DInfoArgs = Parameters<typeof tf.backend_util.computeConv2DInfo>;
/** Attributes both convolution gradients share. */
interface ConvGradientAttrs {
  strides: Conv2DInfoArgs[2];
  pad: Conv2DInfoArgs[4];
  dataFormat: "NHWC" | "NCHW";
  dimRoundingMode?: Conv2DInfoArgs[5];
}
interface FilterGradientAttrs extends ConvGradientAttrs {
  filterShape: [number, number, number, number];
}

/** The kernels this module replaces, and tfjs-backend-webgpu's own, kept for what ours leave to them. */
const REPLACED = ["Conv2DBackpropFilter", "Conv2DBackpropInput"] as const;
const stock = new Map<string, KernelFunc>();
let installed = false;

function runStock(name: (typeof REPLACED)[number], args: unknown): TensorInfo {
  return stock.get(name)!(args as Parameters<KernelFunc>[0]) as TensorInfo;
}

function filterGradient(args: { inputs: { x: TensorInfo; dy: TensorInfo }; backend: unknown; attrs: unknown }): TensorInfo {
  const { x, dy } = args.inputs;
  const attrs = args.attrs as FilterGradientAttrs;
  if (attrs.dataFormat === "NCHW" || x.dtype !== "float32" || dy.dtype !== "float32") return runStock("Conv2DBackpropFilter", args);
  const backend = args.backend as WebgpuBackendLike;
  const info = tf.backend_util.computeConv2DInfo(
    x.shape as [number, number, number, number],
    attrs.filterShape,
    attrs.strides,
    1,
    attrs.pad,
    attrs.dimRoundingMode,
    false,
    "channelsLast",
  );
  const filterSize = info.filterHeight * info.filterWidth * info.inChannels * info.outChannels;
  const batchRows = info.batchSize * info.outHeight;
  const blocked = info.inChannels % 4 === 0 && info.outChannels % 4 === 0;
  const plan = planFilterGradient(filterSize, batchRows, blocked ? 16 : 1);
  const partials = backend.runWebGPUProgram(filterGradientPartialsProgram(plan, blocked), [x, dy], "float32", [
    { type: "int32", data: [info.padInfo.top, info.padInfo.left] },
    { type: "int32", data: [info.strideHeight, info.strideWidth] },
    { type: "int32", data: [info.outHeight] },
    { type: "int32", data: [info.outWidth] },
    { type: "int32", data: [info.inHeight] },
    { type: "int32", data: [info.inWidth] },
    { type: "int32", data: [info.inChannels] },
    { type: "int32", data: [info.outChannels] },
    { type: "int32", data: [info.filterWidth] },
    { type: "int32", data: [batchRows] },
    { type: "int32", data: [plan.rowsPerChunk] },
  ]);
  const result = backend.runWebGPUProgram(sumPartialsProgram(attrs.filterShape), [partials], "float32", [int(plan.chunks)]);
  backend.disposeData(partials.dataId);
  return result;
}

/**
 * One output of the AdamW step (`which`: 0 the parameter, 1 the first moment, 2 the second), the
 * same formula as `adamWStep` in model-kernels.ts. Three dispatches per tensor instead of about
 * 15 ops and 7 scalar uploads: the segmenter has 120 parameter tensors, and on an H200 each op
 * costs ~0.1 ms of host time.
 */
function adamWProgram(shape: number[], which: 0 | 1 | 2): ElementProgram {
  const result = [
    `if (uniforms.decayed != 0) {
          p = p * uniforms.keep;
        }
        let denominator = sqrt(vi / uniforms.correction2) + uniforms.epsilon;
        setOutputAtIndex(index, p - ((mi / uniforms.correction1) / denominator) * uniforms.lr);`,
    "setOutputAtIndex(index, mi);",
    "setOutputAtIndex(index, vi);",
  ][which];
  return new ElementProgram(
    `prolearnAdamW_${which}`,
    ["param", "gradient", "m", "v"],
    shape,
    "beta1 : f32, oneMinusBeta1 : f32, beta2 : f32, oneMinusBeta2 : f32, keep : f32, correction1 : f32, correction2 : f32, epsilon : f32, lr : f32, decayed : i32,",
    // Every variant reads all four inputs (see ElementProgram).
    `var p = param[index];
        let g = gradient[index];
        let mi = m[index] * uniforms.beta1 + g * uniforms.oneMinusBeta1;
        let vi = v[index] * uniforms.beta2 + (g * g) * uniforms.oneMinusBeta2;
        ${result}`,
  );
}

function adamW(args: { inputs: { param: TensorInfo; gradient: TensorInfo; m: TensorInfo; v: TensorInfo }; backend: unknown; attrs: unknown }): TensorInfo[] {
  const { param, gradient, m, v } = args.inputs;
  const a = args.attrs as AdamWAttrs;
  const backend = args.backend as WebgpuBackendLike;
  const uniforms = [
    ...[a.beta1, 1 - a.beta1, a.beta2, 1 - a.beta2, 1 - a.decay, a.correction1, a.correction2, a.epsilon, a.lr].map(float),
    int(a.decay === 0 ? 0 : 1),
  ];
  return ([0, 1, 2] as const).map((which) => backend.runWebGPUProgram(adamWProgram(param.shape, which), [param, gradient, m, v], "float32", uniforms));
}

/** The filter [kh, kw, in, out] rotated by 180 degrees with in and out swapped: [kh, kw, out, in]. */
function flippedFilterProgram(filterShape: number[]): ElementProgram {
  const [kh, kw, inChannels, outChannels] = filterShape as [number, number, number, number];
  return new ElementProgram(
    "prolearnFlipFilter",
    // `filter` is a reserved word in WGSL.
    ["weights"],
    [kh, kw, outChannels, inChannels],
    "kh : i32, kw : i32, inChannels : i32, outChannels : i32,",
    `let i = index % uniforms.inChannels;
        var t = index / uniforms.inChannels;
        let o = t % uniforms.outChannels;
        t = t / uniforms.outChannels;
        let b = t % uniforms.kw;
        let a = t / uniforms.kw;
        setOutputAtIndex(index, weights[(((uniforms.kh - 1 - a) * uniforms.kw + (uniforms.kw - 1 - b)) * uniforms.inChannels + i) * uniforms.outChannels + o]);`,
  );
}

interface InputGradientAttrs extends ConvGradientAttrs {
  inputShape: [number, number, number, number];
}

/**
 * The input gradient of a stride-1 convolution is a convolution of dy with the flipped filter
 * (padded by kernel - 1 - pad on each side), and tfjs-backend-webgpu's forward convolution is a
 * tiled matrix product, 2.5x faster than its `Conv2DBackpropInput` at the train stage's batch of
 * 32 on an H200. Strides above 1 (the up-sampling transposed convolutions) keep the stock kernel.
 */
function inputGradient(args: { inputs: { dy: TensorInfo; filter: TensorInfo }; backend: unknown; attrs: unknown }): TensorInfo {
  const { dy, filter } = args.inputs;
  const attrs = args.attrs as InputGradientAttrs;
  if (attrs.dataFormat === "NCHW" || dy.dtype !== "float32" || filter.dtype !== "float32") return runStock("Conv2DBackpropInput", args);
  const info = tf.backend_util.computeConv2DInfo(
    attrs.inputShape,
    filter.shape as [number, number, number, number],
    attrs.strides,
    1,
    attrs.pad,
    attrs.dimRoundingMode,
    false,
    "channelsLast",
  );
  const pads = {
    top: info.filterHeight - 1 - info.padInfo.top,
    bottom: info.filterHeight - 1 - info.padInfo.bottom,
    left: info.filterWidth - 1 - info.padInfo.left,
    right: info.filterWidth - 1 - info.padInfo.right,
  };
  if (info.strideHeight !== 1 || info.strideWidth !== 1 || Object.values(pads).some((p) => p < 0)) return runStock("Conv2DBackpropInput", args);
  const backend = args.backend as WebgpuBackendLike;
  const [kh, kw, inChannels, outChannels] = filter.shape as [number, number, number, number];
  const flipped = backend.runWebGPUProgram(flippedFilterProgram(filter.shape), [filter], "float32", [int(kh), int(kw), int(inChannels), int(outChannels)]);
  const result = tf.getKernel("Conv2D", "webgpu")!.kernelFunc({
    inputs: { x: dy, filter: flipped },
    backend: args.backend as never,
    attrs: {
      strides: [1, 1],
      pad: [
        [0, 0],
        [pads.top, pads.bottom],
        [pads.left, pads.right],
        [0, 0],
      ],
      dataFormat: "NHWC",
      dilations: [1, 1],
      dimRoundingMode: attrs.dimRoundingMode,
    } as never,
  }) as TensorInfo;
  backend.disposeData(flipped.dataId);
  return result;
}

/**
 * Replaces tfjs-backend-webgpu's `Conv2DBackpropFilter` and `Conv2DBackpropInput` (NHWC,
 * float32; anything else goes to the stock kernels) and adds the AdamW and normalisation kernels. Call after the webgpu backend is registered. Idempotent.
 */
export function installFastWebgpuKernels(): void {
  if (installed) return;
  const ours: Record<(typeof REPLACED)[number], unknown> = { Conv2DBackpropFilter: filterGradient, Conv2DBackpropInput: inputGradient };
  for (const name of REPLACED) {
    const config = tf.getKernel(name, "webgpu");
    if (!config) throw new Error(`tfjs-backend-webgpu has no ${name} kernel to replace (is it loaded?)`);
    if (!stock.has(name)) stock.set(name, config.kernelFunc);
    tf.unregisterKernel(name, "webgpu");
    tf.registerKernel({ kernelName: name, backendName: "webgpu", kernelFunc: ours[name] as KernelFunc });
  }
  const added: Record<string, unknown> = { [MODEL_KERNELS.adamW]: adamW, ...WEBGPU_NORM_KERNELS };
  for (const [kernelName, kernelFunc] of Object.entries(added)) {
    if (!tf.getKernel(kernelName, "webgpu")) tf.registerKernel({ kernelName, backendName: "webgpu", kernelFunc: kernelFunc as KernelFunc });
  }
  installed = true;
}

/** Puts the stock convolution gradients back (benchmarks compare them with ours in one process). */
export function uninstallFastWebgpuKernels(): void {
  if (!installed) return;
  for (const name of REPLACED) {
    tf.unregisterKernel(name, "webgpu");
    tf.registerKernel({ kernelName: name, backendName: "webgpu", kernelFunc: stock.get(name)! });
  }
  installed = false;
}

export function fastWebgpuKernelsInstalled(): boolean {
  return installed;
}
