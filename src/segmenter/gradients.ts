import * as tf from "@tensorflow/tfjs-core";

/**
 * Gradient functions for the kernels the segmenter uses.
 *
 * Why this file exists: @tensorflow/tfjs-core's CommonJS entry (what Node loads) registers no
 * gradients at all; upstream registers them from the ESM-only `dist/register_all_gradients.js`,
 * whose extension-less imports Node's ESM loader refuses. So we register the few we need,
 * written against the public API and following upstream's definitions. A gradient already
 * registered (by another module or a future tfjs build) is left alone.
 */
type Tensor = tf.Tensor;
type Attrs = Record<string, unknown>;
type GradFunc = (dy: Tensor, saved: Tensor[], attrs: Attrs) => Record<string, () => Tensor> | (() => Tensor)[];

function reduceToShape(dy: Tensor, shape: number[], outShape: number[]): Tensor {
  let result = dy;
  const axes = tf.backend_util.getReductionAxes(shape, outShape);
  if (axes.length > 0) result = tf.sum(result, axes);
  return tf.reshape(result, shape);
}

function binaryShapes(a: Tensor, b: Tensor): number[] {
  return tf.backend_util.assertAndGetBroadcastShape(a.shape, b.shape);
}

function expandReduced(dy: Tensor, x: Tensor, axis: unknown): Tensor {
  const axes = normaliseAxes(axis, x.rank);
  const shape = x.shape.slice();
  for (const a of axes) shape[a] = 1;
  return tf.reshape(dy, shape);
}

function normaliseAxes(axis: unknown, rank: number): number[] {
  const list = axis === null || axis === undefined ? Array.from({ length: rank }, (_, i) => i) : Array.isArray(axis) ? (axis as number[]) : [axis as number];
  return list.map((a) => (a < 0 ? a + rank : a));
}

const GRADIENTS: { kernelName: string; inputsToSave?: string[]; outputsToSave?: boolean[]; saveAllInputs?: boolean; gradFunc: GradFunc }[] = [
  {
    kernelName: "Add",
    inputsToSave: ["a", "b"],
    gradFunc: (dy, [a, b]) => {
      const out = binaryShapes(a!, b!);
      return { a: () => reduceToShape(dy, a!.shape, out), b: () => reduceToShape(dy, b!.shape, out) };
    },
  },
  {
    kernelName: "Sub",
    inputsToSave: ["a", "b"],
    gradFunc: (dy, [a, b]) => {
      const out = binaryShapes(a!, b!);
      return { a: () => reduceToShape(dy, a!.shape, out), b: () => reduceToShape(tf.neg(dy), b!.shape, out) };
    },
  },
  {
    kernelName: "Multiply",
    inputsToSave: ["a", "b"],
    gradFunc: (dy, [a, b]) => {
      const out = binaryShapes(a!, b!);
      return {
        a: () => reduceToShape(tf.mul(dy, tf.cast(b!, "float32")), a!.shape, out),
        b: () => reduceToShape(tf.mul(dy, tf.cast(a!, "float32")), b!.shape, out),
      };
    },
  },
  {
    kernelName: "RealDiv",
    inputsToSave: ["a", "b"],
    gradFunc: (dy, [a, b]) => {
      const out = binaryShapes(a!, b!);
      return {
        a: () => reduceToShape(tf.div(dy, b!), a!.shape, out),
        b: () => reduceToShape(tf.neg(tf.div(tf.mul(dy, a!), tf.square(b!))), b!.shape, out),
      };
    },
  },
  { kernelName: "Neg", gradFunc: (dy) => ({ x: () => tf.neg(dy) }) },
  { kernelName: "Cast", gradFunc: (dy) => ({ x: () => tf.clone(dy) }) },
  { kernelName: "Reshape", inputsToSave: ["x"], gradFunc: (dy, [x]) => ({ x: () => tf.reshape(dy, x!.shape) }) },
  {
    kernelName: "Transpose",
    gradFunc: (dy, _saved, attrs) => {
      const perm = attrs.perm as number[];
      const inverse = new Array<number>(perm.length);
      perm.forEach((p, i) => (inverse[p] = i));
      return { x: () => tf.transpose(dy, inverse) };
    },
  },
  { kernelName: "Relu", inputsToSave: ["x"], gradFunc: (dy, [x]) => ({ x: () => tf.mul(dy, tf.cast(tf.greater(x!, 0), "float32")) }) },
  { kernelName: "Sigmoid", outputsToSave: [true], gradFunc: (dy, [y]) => ({ x: () => tf.mul(dy, tf.mul(y!, tf.sub(1, y!))) }) },
  { kernelName: "Exp", outputsToSave: [true], gradFunc: (dy, [y]) => ({ x: () => tf.mul(dy, y!) }) },
  { kernelName: "Log1p", inputsToSave: ["x"], gradFunc: (dy, [x]) => ({ x: () => tf.div(dy, tf.add(x!, 1)) }) },
  { kernelName: "Abs", inputsToSave: ["x"], gradFunc: (dy, [x]) => ({ x: () => tf.mul(dy, tf.sign(tf.cast(x!, "float32"))) }) },
  { kernelName: "Sqrt", inputsToSave: ["x"], gradFunc: (dy, [x]) => ({ x: () => tf.div(dy, tf.mul(tf.sqrt(tf.cast(x!, "float32")), 2)) }) },
  { kernelName: "Square", inputsToSave: ["x"], gradFunc: (dy, [x]) => ({ x: () => tf.mul(dy, tf.mul(tf.cast(x!, "float32"), 2)) }) },
  {
    kernelName: "Sum",
    inputsToSave: ["x"],
    gradFunc: (dy, [x], attrs) => ({ x: () => tf.mul(expandReduced(dy, x!, attrs.axis), tf.onesLike(x!)) }),
  },
  {
    kernelName: "Mean",
    inputsToSave: ["x"],
    gradFunc: (dy, [x], attrs) => {
      const axes = normaliseAxes(attrs.axis, x!.rank);
      const count = axes.reduce((n, a) => n * x!.shape[a]!, 1);
      return { x: () => tf.div(tf.mul(expandReduced(dy, x!, attrs.axis), tf.onesLike(x!)), count) };
    },
  },
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
    kernelName: "Concat",
    saveAllInputs: true,
    gradFunc: (dy, saved, attrs) => {
      const axis = normaliseAxes(attrs.axis, saved[0]!.rank)[0]!;
      const parts = tf.split(dy, saved.map((t) => t.shape[axis]!), axis);
      return parts.map((t) => () => t);
    },
  },
  {
    kernelName: "Conv2D",
    inputsToSave: ["x", "filter"],
    gradFunc: (dy, [x, filter], attrs) => {
      const common = { strides: attrs.strides, pad: attrs.pad, dataFormat: attrs.dataFormat, dimRoundingMode: attrs.dimRoundingMode };
      return {
        x: () => tf.engine().runKernel("Conv2DBackpropInput", { dy, filter: filter! }, { ...common, inputShape: x!.shape } as never) as Tensor,
        filter: () => tf.engine().runKernel("Conv2DBackpropFilter", { x: x!, dy }, { ...common, filterShape: filter!.shape } as never) as Tensor,
      };
    },
  },
  {
    kernelName: "MaxPool",
    inputsToSave: ["x"],
    outputsToSave: [true],
    gradFunc: (dy, [x, y], attrs) => ({
      x: () =>
        tf.engine().runKernel("MaxPoolGrad", { dy, input: x!, output: y! }, { filterSize: attrs.filterSize, strides: attrs.strides, pad: attrs.pad, dimRoundingMode: attrs.dimRoundingMode } as never) as Tensor,
    }),
  },
  {
    kernelName: "GatherV2",
    inputsToSave: ["x", "indices"],
    gradFunc: (dy, [x, indices], attrs) => {
      const axis = normaliseAxes(attrs.axis, x!.rank)[0]!;
      if (axis !== 0 || ((attrs.batchDims as number | undefined) ?? 0) !== 0) throw new Error("gather gradient is implemented for axis 0 without batch dims only");
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

export function registerTrainingGradients(): void {
  if (registered) return;
  registered = true;
  for (const config of GRADIENTS) {
    if (tf.getGradient(config.kernelName)) continue;
    tf.registerGradient(config as unknown as tf.GradConfig);
  }
}
