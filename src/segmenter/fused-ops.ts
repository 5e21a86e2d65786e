import * as tf from "@tensorflow/tfjs-core";
import { MODEL_KERNELS } from "../tfjs/model-kernels.js";

/**
 * The U-Net's normalisation, attention, up-sampling and embedding lookups as single ops. On the
 * cpu backend each runs one typed-array kernel forward and one backward
 * (src/tfjs/model-kernels.ts) through tf.customGrad; webgpu has the normalisation ones
 * (webgpu-norm.ts). Where the active backend lacks a kernel, or with `setFusedOps(false)` (tests
 * and benchmarks compare the two), the same maths runs as composite tfjs ops. Both paths compute
 * the same values within float32 rounding.
 */
let enabled = true;

export function setFusedOps(on: boolean): void {
  enabled = on;
}

function fused(kernel: string): boolean {
  return enabled && tf.getKernel(kernel, tf.getBackend()) !== undefined;
}

const EPSILON = 1e-5;

function run(kernel: string, inputs: Record<string, tf.Tensor>, attrs: Record<string, unknown> = {}): tf.Tensor[] {
  const out = tf.engine().runKernel(kernel, inputs as never, attrs as never) as tf.Tensor | tf.Tensor[];
  return Array.isArray(out) ? out : [out];
}

function groupNorm(x: tf.Tensor, gamma: tf.Tensor, beta: tf.Tensor, groups: number, span: number, channels: number, relu: boolean): tf.Tensor {
  const attrs = { groups, span, channels, epsilon: EPSILON, relu };
  const op = tf.customGrad((...args: unknown[]) => {
    const [xi, g, b, save] = args as [tf.Tensor, tf.Tensor, tf.Tensor, tf.GradSaveFunc];
    const [y, xhat, invStd] = run(MODEL_KERNELS.groupNorm, { x: xi, gamma: g, beta: b }, attrs) as [tf.Tensor, tf.Tensor, tf.Tensor];
    save([xhat, invStd, g, y]);
    return {
      value: y,
      gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => {
        const [sxhat, sinv, sg, sy] = saved as [tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor];
        const [dx, dgamma, dbeta] = run(MODEL_KERNELS.groupNormGrad, { dy, xhat: sxhat, invStd: sinv, gamma: sg, y: sy }, attrs) as [
          tf.Tensor,
          tf.Tensor,
          tf.Tensor,
        ];
        return [dx, tf.reshape(dgamma, sg.shape), tf.reshape(dbeta, sg.shape)];
      },
    };
  });
  return op(x, gamma, beta);
}

/** Instance normalisation of NHWC over H and W per image and channel, scale and shift per channel, optional ReLU. */
export function instanceNorm(x: tf.Tensor4D, gamma: tf.Tensor, beta: tf.Tensor, relu: boolean): tf.Tensor4D {
  const [b, h, w, c] = x.shape;
  if (fused(MODEL_KERNELS.groupNorm)) return groupNorm(x, gamma, beta, b, h * w, c, relu) as tf.Tensor4D;
  const mean = tf.mean(x, [1, 2], true);
  const centred = tf.sub(x, mean);
  const variance = tf.mean(tf.square(centred), [1, 2], true);
  const y = tf.add(tf.mul(tf.div(centred, tf.sqrt(tf.add(variance, EPSILON))), gamma), beta) as tf.Tensor4D;
  return relu ? tf.relu(y) : y;
}

/** Layer normalisation of each row of [R, C] without scale and shift. */
export function normalizeRows(x: tf.Tensor2D): tf.Tensor2D {
  const [rows, channels] = x.shape;
  if (fused(MODEL_KERNELS.groupNorm)) {
    return tf.tidy(() => {
      const one = tf.ones([1]);
      const zero = tf.zeros([1]);
      return tf.reshape(groupNorm(tf.reshape(x, [rows, channels, 1]), one, zero, rows, channels, 1, false), [rows, channels]) as tf.Tensor2D;
    });
  }
  const centred = tf.sub(x, tf.mean(x, 1, true));
  return tf.div(centred, tf.sqrt(tf.add(tf.mean(tf.square(centred), 1, true), EPSILON))) as tf.Tensor2D;
}

/**
 * Multi-head attention of queries q [B, N, C] over tokens k, v [B, L, C] with a [B, L] token mask
 * (1 = real). Returns the attended values [B, N, C] and, when asked, the weights [B, heads, N, L].
 */
export function multiHeadAttention(
  q: tf.Tensor3D,
  k: tf.Tensor3D,
  v: tf.Tensor3D,
  mask: tf.Tensor2D,
  heads: number,
  keepWeights: boolean,
): { out: tf.Tensor3D; weights?: tf.Tensor4D } {
  const [batch, positions, channels] = q.shape;
  const length = k.shape[1];
  const headDim = channels / heads;
  if (fused(MODEL_KERNELS.attention)) {
    if (keepWeights) {
      // Inference (token scoring): no gradient, so both outputs come straight from the kernel.
      const [out, weights] = run(MODEL_KERNELS.attention, { q, k, v, mask }, { heads }) as [tf.Tensor3D, tf.Tensor4D];
      return { out, weights };
    }
    const op = tf.customGrad((...args: unknown[]) => {
      const [qi, ki, vi, mi, save] = args as [tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor, tf.GradSaveFunc];
      const [out, weights] = run(MODEL_KERNELS.attention, { q: qi, k: ki, v: vi, mask: mi }, { heads }) as [tf.Tensor, tf.Tensor];
      save([qi, ki, vi, weights, mi]);
      return {
        value: out,
        gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => {
          const [sq, sk, sv, sw, sm] = saved as [tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor];
          const [dq, dk, dv] = run(MODEL_KERNELS.attentionGrad, { dy, q: sq, k: sk, v: sv, weights: sw }, { heads }) as [tf.Tensor, tf.Tensor, tf.Tensor];
          return [dq, dk, dv, tf.zerosLike(sm)];
        },
      };
    });
    return { out: op(q, k, v, mask) as tf.Tensor3D };
  }
  const split = (t: tf.Tensor3D, n: number) => tf.transpose(tf.reshape(t, [batch, n, heads, headDim]), [0, 2, 1, 3]);
  const maskBias = tf.reshape(tf.mul(tf.sub(1, mask), -1e9), [batch, 1, 1, length]);
  const scores = tf.add(tf.mul(tf.matMul(split(q, positions), split(k, length), false, true), 1 / Math.sqrt(headDim)), maskBias);
  const weights = tf.softmax(scores, -1) as tf.Tensor4D;
  const out = tf.reshape(tf.transpose(tf.matMul(weights, split(v, length)), [0, 2, 1, 3]), [batch, positions, channels]) as tf.Tensor3D;
  return { out, weights: keepWeights ? weights : undefined };
}

/**
 * Nearest-neighbour x2 up-sampling. The composite form is a broadcast multiply, not
 * tf.image.resizeNearestNeighbor: the cpu backend's ResizeNearestNeighborGrad (tfjs 4.22) returns
 * wrong gradients (checked against finite differences in test/train/model.test.ts).
 */
export function upsample2x(x: tf.Tensor4D): tf.Tensor4D {
  const [b, h, w, c] = x.shape;
  if (fused(MODEL_KERNELS.upsample)) {
    const op = tf.customGrad((...args: unknown[]) => {
      const [xi] = args as [tf.Tensor];
      return {
        value: run(MODEL_KERNELS.upsample, { x: xi })[0]!,
        gradFunc: (dy: tf.Tensor) => [run(MODEL_KERNELS.upsampleGrad, { dy })[0]!],
      };
    });
    return op(x) as tf.Tensor4D;
  }
  const spread = tf.mul(tf.reshape(x, [b, h, 1, w, 1, c]), tf.ones([1, 1, 2, 1, 2, 1]));
  return tf.reshape(spread, [b, h * 2, w * 2, c]) as tf.Tensor4D;
}

/** Rows of `table` [V, D] at integer `ids` (any shape); result shape [...ids.shape, D]. */
export function gatherRows(table: tf.Tensor2D, ids: tf.Tensor): tf.Tensor {
  if (fused(MODEL_KERNELS.scatterRows)) {
    const [count, width] = table.shape;
    const op = tf.customGrad((...args: unknown[]) => {
      const [t, i, save] = args as [tf.Tensor2D, tf.Tensor, tf.GradSaveFunc];
      save([i]);
      return {
        value: tf.gather(t, i),
        gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => {
          const flatIds = tf.reshape(saved[0]!, [saved[0]!.size]);
          const rows = tf.reshape(dy, [saved[0]!.size, width]);
          return [run(MODEL_KERNELS.scatterRows, { rows, ids: flatIds }, { count })[0]!, tf.zerosLike(saved[0]!)];
        },
      };
    });
    return op(table, ids);
  }
  return tf.gather(table, ids);
}
