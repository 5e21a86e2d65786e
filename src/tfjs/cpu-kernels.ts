/**
 * Registers the im2col + SIMD GEMM convolution kernels on tfjs's `cpu` backend in place of the
 * stock loops (which need minutes per U-Net step). Configurations they do not cover (NCHW,
 * dilation > 1, non-float32) go to the stock kernel, kept from `tf.getKernel` before replacing it.
 */
import * as tf from "@tensorflow/tfjs-core";
import type { KernelFunc, NamedAttrMap, TensorInfo } from "@tensorflow/tfjs-core";
import "@tensorflow/tfjs-backend-cpu";
import { conv2dBackpropFilter, conv2dBackpropInput, conv2dForward, type ConvGeometry } from "./conv.js";
import { batchMatMul } from "../linalg/matmul.js";
import {
  binaryBroadcastSuffix,
  concatAlongAxis,
  maxPoolGradTiled,
  maxPoolTiled,
  relu,
  reluGrad,
  splitAlongAxis,
  step,
  sumContiguousAxes,
  type BinaryOp,
} from "./fast-ops.js";

/**
 * The kernels replaced on the cpu backend: the three convolution kernels (tf.conv2dTranspose runs
 * on them too) and the ops that dominate a U-Net step once convolutions are fast.
 */
export const FAST_CPU_KERNELS = [
  "Conv2D",
  "Conv2DBackpropInput",
  "Conv2DBackpropFilter",
  "Add",
  "Sub",
  "Multiply",
  "RealDiv",
  "Sum",
  "SplitV",
  "Concat",
  "MaxPoolGrad",
  "Relu",
  "Step",
  "BatchMatMul",
  "FusedConv2D",
  "MaxPool",
] as const;
export type FastCpuKernelName = (typeof FAST_CPU_KERNELS)[number];

/** The part of tfjs's cpu backend our kernels use (tfjs does not export its class type). */
export interface CpuBackendLike {
  data: { get(dataId: object): { values: unknown } };
  makeTensorInfo(shape: number[], dtype: "float32", values: Float32Array): TensorInfo;
}

export interface KernelArgs {
  inputs: Record<string, TensorInfo>;
  backend: CpuBackendLike;
  attrs: NamedAttrMap;
}

type ConvInfo = ReturnType<typeof tf.backend_util.computeConv2DInfo>;

const stock = new Map<FastCpuKernelName, KernelFunc>();
let installed = false;

/**
 * A kernel tfjs does not have: the ReLU gradient dy * step(x) in one pass instead of a Step and
 * a Multiply over the whole activation. Registered on `cpu` only while the fast kernels are
 * installed; the Relu gradient (gradients.ts) uses it when the running backend has it.
 */
export const RELU_GRAD_KERNEL = "ProlearnReluGrad";

function reluGradKernel(args: KernelArgs): TensorInfo {
  const { dy, x } = args.inputs as { dy: TensorInfo; x: TensorInfo };
  const dyv = float32Values(args.backend, dy);
  const xv = float32Values(args.backend, x);
  if (!dyv || !xv || dyv.length !== xv.length) throw new Error(`${RELU_GRAD_KERNEL} needs float32 dy and x of one shape`);
  return args.backend.makeTensorInfo(x.shape, "float32", reluGrad(dyv, xv));
}

function geometry(info: ConvInfo): ConvGeometry | undefined {
  if (info.dataFormat !== "channelsLast" || info.dilationHeight !== 1 || info.dilationWidth !== 1) return undefined;
  return {
    batch: info.batchSize,
    inHeight: info.inHeight,
    inWidth: info.inWidth,
    inChannels: info.inChannels,
    outHeight: info.outHeight,
    outWidth: info.outWidth,
    outChannels: info.outChannels,
    filterHeight: info.filterHeight,
    filterWidth: info.filterWidth,
    strideHeight: info.strideHeight,
    strideWidth: info.strideWidth,
    padTop: info.padInfo.top,
    padLeft: info.padInfo.left,
  };
}

function float32Values(backend: CpuBackendLike, t: TensorInfo): Float32Array | undefined {
  if (t.dtype !== "float32") return undefined;
  const values = backend.data.get(t.dataId).values;
  return values instanceof Float32Array ? values : undefined;
}

type Attrs = {
  strides: number | [number, number];
  pad: "valid" | "same" | number | tf.backend_util.ExplicitPadding;
  dataFormat: "NHWC" | "NCHW";
  dilations?: number | [number, number];
  dimRoundingMode?: "floor" | "round" | "ceil";
  inputShape?: [number, number, number, number];
  filterShape?: [number, number, number, number];
};

function convInfo(xShape: number[], filterShape: number[], attrs: Attrs, dilations: number | [number, number]): ConvInfo {
  return tf.backend_util.computeConv2DInfo(
    xShape as [number, number, number, number],
    filterShape as [number, number, number, number],
    attrs.strides,
    dilations,
    attrs.pad,
    attrs.dimRoundingMode,
    false,
    tf.backend_util.convertConv2DDataFormat(attrs.dataFormat),
  );
}

function fastConv2D(args: KernelArgs): TensorInfo {
  const { x, filter } = args.inputs as { x: TensorInfo; filter: TensorInfo };
  const attrs = args.attrs as unknown as Attrs;
  const g = geometry(convInfo(x.shape, filter.shape, attrs, attrs.dilations ?? 1));
  const xv = float32Values(args.backend, x);
  const wv = float32Values(args.backend, filter);
  if (!g || !xv || !wv) return stock.get("Conv2D")!(args as never) as TensorInfo;
  const y = conv2dForward(xv, wv, g);
  return args.backend.makeTensorInfo([g.batch, g.outHeight, g.outWidth, g.outChannels], "float32", y);
}

function fastConv2DBackpropInput(args: KernelArgs): TensorInfo {
  const { dy, filter } = args.inputs as { dy: TensorInfo; filter: TensorInfo };
  const attrs = args.attrs as unknown as Attrs;
  const g = geometry(convInfo(attrs.inputShape!, filter.shape, attrs, 1));
  const dyv = float32Values(args.backend, dy);
  const wv = float32Values(args.backend, filter);
  if (!g || !dyv || !wv) return stock.get("Conv2DBackpropInput")!(args as never) as TensorInfo;
  const dx = conv2dBackpropInput(dyv, wv, g);
  return args.backend.makeTensorInfo([g.batch, g.inHeight, g.inWidth, g.inChannels], "float32", dx);
}

function fastConv2DBackpropFilter(args: KernelArgs): TensorInfo {
  const { x, dy } = args.inputs as { x: TensorInfo; dy: TensorInfo };
  const attrs = args.attrs as unknown as Attrs;
  const g = geometry(convInfo(x.shape, attrs.filterShape!, attrs, 1));
  const xv = float32Values(args.backend, x);
  const dyv = float32Values(args.backend, dy);
  if (!g || !xv || !dyv) return stock.get("Conv2DBackpropFilter")!(args as never) as TensorInfo;
  const dw = conv2dBackpropFilter(xv, dyv, g);
  return args.backend.makeTensorInfo([g.filterHeight, g.filterWidth, g.inChannels, g.outChannels], "float32", dw);
}

function fastBinary(op: BinaryOp): (args: KernelArgs) => TensorInfo {
  return (args) => {
    const { a, b } = args.inputs as { a: TensorInfo; b: TensorInfo };
    const av = float32Values(args.backend, a);
    const bv = float32Values(args.backend, b);
    const result = av && bv ? binaryBroadcastSuffix(op, a.shape, av, b.shape, bv) : undefined;
    if (!result) return stock.get(op)!(args as never) as TensorInfo;
    return args.backend.makeTensorInfo(result[1], "float32", result[0]);
  };
}

function fastSum(args: KernelArgs): TensorInfo {
  const { x } = args.inputs as { x: TensorInfo };
  const { axis, keepDims } = args.attrs as { axis: number | number[]; keepDims: boolean };
  const xv = float32Values(args.backend, x);
  const axes = tf.util.parseAxisParam(axis, x.shape);
  const out = xv ? sumContiguousAxes(x.shape, xv, axes) : undefined;
  if (!out) return stock.get("Sum")!(args as never) as TensorInfo;
  const shape = keepDims ? x.shape.map((d, i) => (axes.includes(i) ? 1 : d)) : x.shape.filter((_, i) => !axes.includes(i));
  return args.backend.makeTensorInfo(shape, "float32", out);
}

function fastSplitV(args: KernelArgs): TensorInfo[] {
  const { x } = args.inputs as { x: TensorInfo };
  const { numOrSizeSplits, axis } = args.attrs as { numOrSizeSplits: number | number[]; axis: number };
  const xv = float32Values(args.backend, x);
  if (!xv) return stock.get("SplitV")!(args as never) as TensorInfo[];
  const $axis = tf.util.parseAxisParam(axis, x.shape)[0]!;
  const sizes = tf.backend_util.prepareSplitSize(x as tf.Tensor, numOrSizeSplits, $axis);
  const parts = splitAlongAxis(x.shape, xv, $axis, sizes);
  return parts.map((values, i) =>
    args.backend.makeTensorInfo(
      x.shape.map((d, k) => (k === $axis ? sizes[i]! : d)),
      "float32",
      values,
    ),
  );
}

type PoolAttrs = {
  filterSize: number | [number, number];
  strides: number | [number, number];
  pad: "valid" | "same" | number;
  dimRoundingMode?: "floor" | "round" | "ceil";
};

type PoolInfo = ReturnType<typeof tf.backend_util.computePool2DInfo>;

/** Square windows that tile the input: the only pooling the fast paths take. */
function tiledPool(info: PoolInfo): boolean {
  return (
    info.filterHeight === info.filterWidth &&
    info.strideHeight === info.filterHeight &&
    info.strideWidth === info.filterWidth &&
    info.padInfo.top === 0 &&
    info.padInfo.left === 0 &&
    info.dilationHeight === 1 &&
    info.dilationWidth === 1 &&
    info.dataFormat === "channelsLast"
  );
}

function poolGeometry(info: PoolInfo) {
  return {
    batch: info.batchSize,
    inHeight: info.inHeight,
    inWidth: info.inWidth,
    channels: info.inChannels,
    outHeight: info.outHeight,
    outWidth: info.outWidth,
    size: info.filterHeight,
  };
}

function fastMaxPool(args: KernelArgs): TensorInfo {
  const { x } = args.inputs as { x: TensorInfo };
  const { filterSize, strides, pad, dimRoundingMode } = args.attrs as PoolAttrs;
  const info = tf.backend_util.computePool2DInfo(x.shape as [number, number, number, number], filterSize, strides, 1, pad, dimRoundingMode);
  const xv = float32Values(args.backend, x);
  if (!xv || !tiledPool(info) || info.filterHeight === 1) return stock.get("MaxPool")!(args as never) as TensorInfo;
  return args.backend.makeTensorInfo(info.outShape, "float32", maxPoolTiled(xv, poolGeometry(info)));
}

function fastMaxPoolGrad(args: KernelArgs): TensorInfo {
  const { dy, input } = args.inputs as { dy: TensorInfo; input: TensorInfo };
  const { filterSize, strides, pad, dimRoundingMode } = args.attrs as PoolAttrs;
  const info = tf.backend_util.computePool2DInfo(input.shape as [number, number, number, number], filterSize, strides, 1, pad, dimRoundingMode);
  const xv = float32Values(args.backend, input);
  const dyv = float32Values(args.backend, dy);
  if (!tiledPool(info) || !xv || !dyv) return stock.get("MaxPoolGrad")!(args as never) as TensorInfo;
  return args.backend.makeTensorInfo(input.shape, "float32", maxPoolGradTiled(xv, dyv, poolGeometry(info)));
}

function fastRelu(args: KernelArgs): TensorInfo {
  const { x } = args.inputs as { x: TensorInfo };
  const xv = float32Values(args.backend, x);
  if (!xv) return stock.get("Relu")!(args as never) as TensorInfo;
  return args.backend.makeTensorInfo(x.shape, "float32", relu(xv));
}

function fastStep(args: KernelArgs): TensorInfo {
  const { x } = args.inputs as { x: TensorInfo };
  const xv = float32Values(args.backend, x);
  if (!xv) return stock.get("Step")!(args as never) as TensorInfo;
  return args.backend.makeTensorInfo(x.shape, "float32", step(xv, (args.attrs as { alpha?: number }).alpha ?? 0));
}

function fastConcat(args: KernelArgs): TensorInfo {
  const inputs = args.inputs as unknown as TensorInfo[];
  const { axis } = args.attrs as { axis: number | number[] };
  const values = inputs.map((t) => float32Values(args.backend, t));
  const usable = inputs.length > 1 && values.every((v) => v !== undefined && v.length > 0);
  if (!usable) return stock.get("Concat")!(args as never) as TensorInfo;
  const $axis = tf.util.parseAxisParam(axis, inputs[0]!.shape)[0]!;
  const shapes = inputs.map((t) => t.shape);
  tf.backend_util.assertParamsConsistent(shapes, $axis);
  const outShape = tf.backend_util.computeOutShape(shapes, $axis);
  return args.backend.makeTensorInfo(outShape, "float32", concatAlongAxis(shapes, values as Float32Array[], $axis));
}

function fastBatchMatMul(args: KernelArgs): TensorInfo {
  const { a, b } = args.inputs as { a: TensorInfo; b: TensorInfo };
  const { transposeA, transposeB } = args.attrs as { transposeA: boolean; transposeB: boolean };
  const av = float32Values(args.backend, a);
  const bv = float32Values(args.backend, b);
  const fallback = () => stock.get("BatchMatMul")!(args as never) as TensorInfo;
  if (!av || !bv || a.shape.length < 2 || b.shape.length < 2) return fallback();
  const ar = a.shape.length;
  const br = b.shape.length;
  const m = transposeA ? a.shape[ar - 1]! : a.shape[ar - 2]!;
  const k = transposeA ? a.shape[ar - 2]! : a.shape[ar - 1]!;
  const kb = transposeB ? b.shape[br - 1]! : b.shape[br - 2]!;
  const n = transposeB ? b.shape[br - 2]! : b.shape[br - 1]!;
  if (k !== kb) return fallback(); // the stock kernel raises tfjs's own shape error
  const outerA = a.shape.slice(0, -2);
  const outerB = b.shape.slice(0, -2);
  const batchA = outerA.reduce((p, d) => p * d, 1);
  const batchB = outerB.reduce((p, d) => p * d, 1);
  let outer: number[];
  if (outerA.length === outerB.length && outerA.every((d, i) => d === outerB[i])) outer = outerA;
  else if (batchA === 1 && outerA.length <= outerB.length) outer = outerB;
  else if (batchB === 1 && outerB.length <= outerA.length) outer = outerA;
  else return fallback();
  const batch = outer.reduce((p, d) => p * d, 1);
  const out = batchMatMul(av, bv, { batch, batchA, batchB, m, n, k, transposeA: Boolean(transposeA), transposeB: Boolean(transposeB) });
  return args.backend.makeTensorInfo([...outer, m, n], "float32", out);
}

/**
 * tf.fused.conv2d: the stock kernel calls the stock conv2D function directly (not through the
 * registry), so without this it would bypass the fast convolution. Bias per output channel (or a
 * scalar) and linear/relu/relu6/sigmoid/leakyrelu activations are applied in place.
 */
function fastFusedConv2D(args: KernelArgs): TensorInfo {
  const { x, filter, bias } = args.inputs as { x: TensorInfo; filter: TensorInfo; bias?: TensorInfo };
  const attrs = args.attrs as unknown as Attrs & { activation?: string; leakyreluAlpha?: number };
  const activation = attrs.activation ?? "linear";
  const g = geometry(convInfo(x.shape, filter.shape, attrs, attrs.dilations ?? 1));
  const xv = float32Values(args.backend, x);
  const wv = float32Values(args.backend, filter);
  const bv = bias ? float32Values(args.backend, bias) : undefined;
  const supported = ["linear", "relu", "relu6", "sigmoid", "leakyrelu"].includes(activation);
  if (!g || !xv || !wv || !supported || (bias && (!bv || (bv.length !== g.outChannels && bv.length !== 1)))) {
    return stock.get("FusedConv2D")!(args as never) as TensorInfo;
  }
  const y = conv2dForward(xv, wv, g);
  const C = g.outChannels;
  const alpha = attrs.leakyreluAlpha ?? 0.2;
  for (let i = 0, c = 0; i < y.length; i++) {
    let v = y[i]! + (bv ? bv[bv.length === 1 ? 0 : c]! : 0);
    if (activation === "relu") v = v < 0 ? 0 : v;
    else if (activation === "relu6") v = v < 0 ? 0 : v > 6 ? 6 : v;
    else if (activation === "sigmoid") v = 1 / (1 + Math.exp(-v));
    else if (activation === "leakyrelu") v = v < 0 ? alpha * v : v;
    y[i] = v;
    if (++c === C) c = 0;
  }
  return args.backend.makeTensorInfo([g.batch, g.outHeight, g.outWidth, C], "float32", y);
}

const FAST: Record<FastCpuKernelName, (args: KernelArgs) => TensorInfo | TensorInfo[]> = {
  Conv2D: fastConv2D,
  Conv2DBackpropInput: fastConv2DBackpropInput,
  Conv2DBackpropFilter: fastConv2DBackpropFilter,
  Add: fastBinary("Add"),
  Sub: fastBinary("Sub"),
  Multiply: fastBinary("Multiply"),
  RealDiv: fastBinary("RealDiv"),
  Sum: fastSum,
  SplitV: fastSplitV,
  Concat: fastConcat,
  Relu: fastRelu,
  Step: fastStep,
  BatchMatMul: fastBatchMatMul,
  FusedConv2D: fastFusedConv2D,
  MaxPoolGrad: fastMaxPoolGrad,
  MaxPool: fastMaxPool,
};

function remember(name: FastCpuKernelName): KernelFunc {
  let original = stock.get(name);
  if (!original) {
    const config = tf.getKernel(name, "cpu");
    if (!config) throw new Error(`tfjs cpu backend has no ${name} kernel to replace (is @tensorflow/tfjs-backend-cpu loaded?)`);
    original = config.kernelFunc;
    stock.set(name, original);
  }
  return original;
}

function replace(name: FastCpuKernelName, kernelFunc: KernelFunc): void {
  tf.unregisterKernel(name, "cpu");
  tf.registerKernel({ kernelName: name, backendName: "cpu", kernelFunc });
}

/** Installs the fast kernels on the cpu backend. Idempotent and cheap after the first call. */
export function installFastCpuKernels(): void {
  if (installed) return;
  for (const name of FAST_CPU_KERNELS) {
    remember(name);
    replace(name, FAST[name] as unknown as KernelFunc);
  }
  if (!tf.getKernel(RELU_GRAD_KERNEL, "cpu"))
    tf.registerKernel({ kernelName: RELU_GRAD_KERNEL, backendName: "cpu", kernelFunc: reluGradKernel as unknown as KernelFunc });
  installed = true;
}

/** Puts the stock cpu kernels back (used to compare against them and to measure the speed-up). */
export function uninstallFastCpuKernels(): void {
  if (!installed) return;
  for (const name of FAST_CPU_KERNELS) replace(name, stock.get(name)!);
  if (tf.getKernel(RELU_GRAD_KERNEL, "cpu")) tf.unregisterKernel(RELU_GRAD_KERNEL, "cpu");
  installed = false;
}

export function fastCpuKernelsInstalled(): boolean {
  return installed;
}
