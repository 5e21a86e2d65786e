import * as tf from "@tensorflow/tfjs-core";
import { RELU_GRAD_KERNEL } from "./cpu-kernels.js";

/**
 * Gradients for the kernels the segmenter trains through: convolution, transposed convolution,
 * max-pool, ReLU, concat, element-wise arithmetic, the BCE-with-logits pieces, and the attention
 * side (batched matmul, softmax, transpose, gather of embedding rows). The one place this package
 * registers tfjs gradients; the network (src/segmenter) calls registerTrainingGradients.
 *
 * Node loads tfjs-core's CommonJS bundle, which registers no gradients; upstream registers them
 * from the ESM-only `dist/register_all_gradients.js`, whose extension-less imports Node's ESM
 * loader rejects. These follow upstream's definitions. A kernel that already has a gradient (from
 * another module of this package or a future tfjs build) keeps it.
 */
type Tensor = tf.Tensor;
type Attrs = Record<string, unknown>;
type GradFunc = (dy: Tensor, saved: Tensor[], attrs: Attrs) => Record<string, () => Tensor> | Array<() => Tensor>;
interface GradientDefinition {
  kernelName: string;
  inputsToSave?: string[];
  outputsToSave?: boolean[];
  saveAllInputs?: boolean;
  gradFunc: GradFunc;
}

function reduceToShape(dy: Tensor, shape: number[], broadcastShape: number[]): Tensor {
  const axes = tf.backend_util.getReductionAxes(shape, broadcastShape);
  return tf.reshape(axes.length > 0 ? tf.sum(dy, axes) : dy, shape);
}

function axesOf(axis: unknown, rank: number): number[] {
  const list = axis === null || axis === undefined ? Array.from({ length: rank }, (_, i) => i) : Array.isArray(axis) ? (axis as number[]) : [axis as number];
  return list.map((a) => (a < 0 ? a + rank : a));
}

/** dy of a reduction, reshaped so it broadcasts back over the reduced axes of x. */
function keepDims(dy: Tensor, x: Tensor, axis: unknown): Tensor {
  const shape = x.shape.slice();
  for (const a of axesOf(axis, x.rank)) shape[a] = 1;
  return tf.reshape(dy, shape);
}

function runKernel(name: string, inputs: Record<string, Tensor>, attrs: Attrs): Tensor {
  return tf.engine().runKernel(name, inputs as never, attrs as never) as Tensor;
}

const convAttrs = (attrs: Attrs): Attrs => ({
  strides: attrs.strides,
  pad: attrs.pad,
  dataFormat: attrs.dataFormat ?? "NHWC",
  dimRoundingMode: attrs.dimRoundingMode,
});

const GRADIENTS: GradientDefinition[] = [
  {
    kernelName: "Add",
    inputsToSave: ["a", "b"],
    gradFunc: (dy, [a, b]) => {
      const out = tf.backend_util.assertAndGetBroadcastShape(a!.shape, b!.shape);
      return { a: () => reduceToShape(dy, a!.shape, out), b: () => reduceToShape(dy, b!.shape, out) };
    },
  },
  {
    kernelName: "Sub",
    inputsToSave: ["a", "b"],
    gradFunc: (dy, [a, b]) => {
      const out = tf.backend_util.assertAndGetBroadcastShape(a!.shape, b!.shape);
      return { a: () => reduceToShape(dy, a!.shape, out), b: () => reduceToShape(tf.neg(dy), b!.shape, out) };
    },
  },
  {
    kernelName: "Multiply",
    inputsToSave: ["a", "b"],
    gradFunc: (dy, [a, b]) => {
      const out = tf.backend_util.assertAndGetBroadcastShape(a!.shape, b!.shape);
      return {
        a: () => reduceToShape(tf.mul(dy, tf.cast(b!, "float32")), a!.shape, out),
        b: () => reduceToShape(tf.mul(dy, tf.cast(a!, "float32")), b!.shape, out),
      };
    },
  },
  { kernelName: "Neg", gradFunc: (dy) => ({ x: () => tf.neg(dy) }) },
  { kernelName: "Abs", inputsToSave: ["x"], gradFunc: (dy, [x]) => ({ x: () => tf.mul(dy, tf.sign(tf.cast(x!, "float32"))) }) },
  { kernelName: "Exp", outputsToSave: [true], gradFunc: (dy, [y]) => ({ x: () => tf.mul(dy, y!) }) },
  { kernelName: "Log1p", inputsToSave: ["x"], gradFunc: (dy, [x]) => ({ x: () => tf.div(dy, tf.add(x!, 1)) }) },
  {
    kernelName: "Relu",
    inputsToSave: ["x"],
    gradFunc: (dy, [x]) => ({
      x: () =>
        // One fused pass on the cpu backend when the fast kernels are installed (cpu-kernels.ts).
        dy.dtype === "float32" && x!.dtype === "float32" && tf.getKernel(RELU_GRAD_KERNEL, tf.getBackend())
          ? runKernel(RELU_GRAD_KERNEL, { dy, x: x! }, {})
          : tf.mul(dy, tf.step(tf.cast(x!, "float32"))),
    }),
  },
  { kernelName: "Sigmoid", outputsToSave: [true], gradFunc: (dy, [y]) => ({ x: () => tf.mul(dy, tf.mul(y!, tf.sub(1, y!))) }) },
  { kernelName: "Reshape", inputsToSave: ["x"], gradFunc: (dy, [x]) => ({ x: () => tf.reshape(dy, x!.shape) }) },
  { kernelName: "Sum", inputsToSave: ["x"], gradFunc: (dy, [x], attrs) => ({ x: () => tf.mul(keepDims(dy, x!, attrs.axis), tf.onesLike(x!)) }) },
  {
    kernelName: "Mean",
    inputsToSave: ["x"],
    gradFunc: (dy, [x], attrs) => {
      const axes = axesOf(attrs.axis, x!.rank);
      const count = axes.reduce((n, a) => n * x!.shape[a]!, 1);
      return { x: () => tf.div(tf.mul(keepDims(dy, x!, attrs.axis), tf.onesLike(x!)), count) };
    },
  },
  {
    kernelName: "Concat",
    saveAllInputs: true,
    gradFunc: (dy, saved, attrs) => {
      const axis = axesOf(attrs.axis, saved[0]!.rank)[0]!;
      const sizes = saved.map((t) => t.shape[axis]!);
      return tf.split(dy, sizes, axis).map((part) => () => part);
    },
  },
  {
    kernelName: "MaxPool",
    inputsToSave: ["x"],
    outputsToSave: [true],
    gradFunc: (dy, [x, y], attrs) => ({
      x: () =>
        runKernel(
          "MaxPoolGrad",
          { dy, input: x!, output: y! },
          { filterSize: attrs.filterSize, strides: attrs.strides, pad: attrs.pad, dimRoundingMode: attrs.dimRoundingMode },
        ),
    }),
  },
  {
    kernelName: "Conv2D",
    inputsToSave: ["x", "filter"],
    gradFunc: (dy, [x, filter], attrs) => {
      const dilations = attrs.dilations ?? 1;
      if (!tf.backend_util.tupleValuesAreOne(dilations as number | [number, number])) {
        throw new Error(`conv2d gradient needs dilations 1, got ${String(dilations)}`);
      }
      return {
        x: () => runKernel("Conv2DBackpropInput", { dy, filter: filter! }, { ...convAttrs(attrs), inputShape: x!.shape }),
        filter: () => runKernel("Conv2DBackpropFilter", { x: x!, dy }, { ...convAttrs(attrs), filterShape: filter!.shape }),
      };
    },
  },
  {
    // tf.conv2dTranspose is this kernel run forward; its gradients are a conv and a weight gradient.
    kernelName: "Conv2DBackpropInput",
    inputsToSave: ["dy", "filter"],
    gradFunc: (ddx, [dy, filter], attrs) => ({
      dy: () => runKernel("Conv2D", { x: ddx, filter: filter! }, { ...convAttrs(attrs), dilations: 1 }),
      filter: () => runKernel("Conv2DBackpropFilter", { x: ddx, dy: dy! }, { ...convAttrs(attrs), filterShape: filter!.shape }),
    }),
  },
  {
    kernelName: "RealDiv",
    inputsToSave: ["a", "b"],
    gradFunc: (dy, [a, b]) => {
      const out = tf.backend_util.assertAndGetBroadcastShape(a!.shape, b!.shape);
      return {
        a: () => reduceToShape(tf.div(dy, b!), a!.shape, out),
        b: () => reduceToShape(tf.neg(tf.div(tf.mul(dy, a!), tf.square(b!))), b!.shape, out),
      };
    },
  },
  { kernelName: "Cast", gradFunc: (dy) => ({ x: () => tf.clone(dy) }) },
  {
    kernelName: "Transpose",
    gradFunc: (dy, _saved, attrs) => {
      const perm = attrs.perm as number[];
      const inverse = new Array<number>(perm.length);
      perm.forEach((p, i) => (inverse[p] = i));
      return { x: () => tf.transpose(dy, inverse) };
    },
  },
  { kernelName: "Sqrt", inputsToSave: ["x"], gradFunc: (dy, [x]) => ({ x: () => tf.div(dy, tf.mul(tf.sqrt(tf.cast(x!, "float32")), 2)) }) },
  { kernelName: "Square", inputsToSave: ["x"], gradFunc: (dy, [x]) => ({ x: () => tf.mul(dy, tf.mul(tf.cast(x!, "float32"), 2)) }) },
  {
    kernelName: "Softmax",
    outputsToSave: [true],
    gradFunc: (dy, [y], attrs) => {
      const dim = attrs.dim as number;
      return {
        logits: () => {
          const dyTimesY = tf.mul(dy, y!);
          return tf.sub(dyTimesY, tf.mul(tf.sum(dyTimesY, [dim], true), y!));
        },
      };
    },
  },
  {
    kernelName: "BatchMatMul",
    inputsToSave: ["a", "b"],
    gradFunc: (dy, [a, b], attrs) => {
      const ta = attrs.transposeA as boolean;
      const tb = attrs.transposeB as boolean;
      if (!ta && !tb) return { a: () => tf.matMul(dy, b!, false, true), b: () => tf.matMul(a!, dy, true, false) };
      if (!ta && tb) return { a: () => tf.matMul(dy, b!, false, false), b: () => tf.matMul(dy, a!, true, false) };
      if (ta && !tb) return { a: () => tf.matMul(b!, dy, false, true), b: () => tf.matMul(a!, dy, false, false) };
      return { a: () => tf.matMul(b!, dy, true, true), b: () => tf.matMul(dy, a!, true, true) };
    },
  },
  {
    kernelName: "GatherV2",
    inputsToSave: ["x", "indices"],
    gradFunc: (dy, [x, indices], attrs) => {
      const axis = axesOf(attrs.axis, x!.rank)[0]!;
      if (axis !== 0 || ((attrs.batchDims as number | undefined) ?? 0) !== 0)
        throw new Error("gather gradient is implemented for axis 0 without batch dims only");
      return {
        x: () => {
          const inner = x!.shape.slice(1);
          const values = tf.reshape(dy, [indices!.size, ...inner]);
          return tf.unsortedSegmentSum(values, tf.reshape(indices!, [indices!.size]) as tf.Tensor1D, x!.shape[0]!);
        },
        indices: () => tf.zerosLike(indices!),
      };
    },
  },
];

let registered = false;

/** Registers the gradients above where none exists yet. Idempotent. */
export function registerTrainingGradients(): void {
  if (registered) return;
  registered = true;
  for (const config of GRADIENTS) {
    if (tf.getGradient(config.kernelName)) continue;
    tf.registerGradient(config as unknown as tf.GradConfig);
  }
}
