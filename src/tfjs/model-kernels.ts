/**
 * Typed-array cpu kernels for the pieces of the language-guided U-Net that the stock tfjs cpu
 * backend runs as long chains of broadcasting ops (each allocating index arrays per element):
 * instance/layer normalisation, multi-head cross-attention, x2 nearest up-sampling and the
 * embedding-gather gradient (stock: UnsortedSegmentSum, which compares every row with every id),
 * and the AdamW update (about 15 ops per parameter tensor, one pass here). Profiled on a guided step at 64 x 64, base 8, batch 8, these chains took over 95% of the
 * step; see bench/RESULTS.md (training section).
 *
 * Each is registered on the `cpu` backend under its own kernel name (nothing stock is replaced);
 * src/segmenter/fused-ops.ts calls them through tf.customGrad when the active backend is cpu and
 * falls back to the equivalent composite tfjs ops on any other backend. The AdamW kernel also has
 * a webgpu version (webgpu-kernels.ts); src/segmenter/optim.ts uses whichever the backend has.
 */
import * as tf from "@tensorflow/tfjs-core";
import type { KernelFunc, TensorInfo } from "@tensorflow/tfjs-core";
import "@tensorflow/tfjs-backend-cpu";
import type { CpuBackendLike, KernelArgs } from "./cpu-kernels.js";

export const MODEL_KERNELS = {
  groupNorm: "ProlearnGroupNorm",
  groupNormGrad: "ProlearnGroupNormGrad",
  attention: "ProlearnAttention",
  attentionGrad: "ProlearnAttentionGrad",
  upsample: "ProlearnUpsample2x",
  upsampleGrad: "ProlearnUpsample2xGrad",
  scatterRows: "ProlearnScatterAddRows",
  adamW: "ProlearnAdamW",
} as const;

/** Attributes of the AdamW kernel: the same numbers src/segmenter/optim.ts's op sequence uses. */
export interface AdamWAttrs {
  beta1: number;
  beta2: number;
  epsilon: number;
  lr: number;
  /** lr * weight decay, or 0 for tensors that are not decayed. */
  decay: number;
  /** 1 - beta1^t and 1 - beta2^t. */
  correction1: number;
  correction2: number;
}

/**
 * One AdamW step over flat arrays, returning [param, m, v]. Every operation is rounded to float32
 * exactly where the op-by-op version rounds (each tfjs op writes a Float32Array and takes its
 * scalars as float32), so both give the same bits; test/train/optim.test.ts checks that.
 */
export function adamWStep(
  param: Float32Array,
  gradient: Float32Array,
  m: Float32Array,
  v: Float32Array,
  a: AdamWAttrs,
): [Float32Array, Float32Array, Float32Array] {
  const f = Math.fround;
  const beta1 = f(a.beta1);
  const oneMinusBeta1 = f(1 - a.beta1);
  const beta2 = f(a.beta2);
  const oneMinusBeta2 = f(1 - a.beta2);
  const keep = f(1 - a.decay);
  const correction1 = f(a.correction1);
  const correction2 = f(a.correction2);
  const epsilon = f(a.epsilon);
  const lr = f(a.lr);
  const n = param.length;
  const nextParam = new Float32Array(n);
  const nextM = new Float32Array(n);
  const nextV = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    const g = gradient[i]!;
    const mi = f(f(m[i]! * beta1) + f(g * oneMinusBeta1));
    const vi = f(f(v[i]! * beta2) + f(f(g * g) * oneMinusBeta2));
    const decayed = a.decay === 0 ? param[i]! : f(param[i]! * keep);
    const denominator = f(f(Math.sqrt(f(vi / correction2))) + epsilon);
    const update = f(f(f(mi / correction1) / denominator) * lr);
    nextM[i] = mi;
    nextV[i] = vi;
    nextParam[i] = decayed - update;
  }
  return [nextParam, nextM, nextV];
}

function floats(backend: CpuBackendLike, t: TensorInfo): Float32Array {
  const values = backend.data.get(t.dataId).values;
  if (values instanceof Float32Array) return values;
  if (values instanceof Int32Array || values instanceof Uint8Array) return Float32Array.from(values);
  throw new Error(`model kernel: expected numeric values, got ${t.dtype}`);
}

function ints(backend: CpuBackendLike, t: TensorInfo): Int32Array {
  const values = backend.data.get(t.dataId).values;
  if (values instanceof Int32Array) return values;
  if (values instanceof Float32Array) return Int32Array.from(values);
  throw new Error(`model kernel: expected integer ids, got ${t.dtype}`);
}

/**
 * Normalisation of x viewed as [groups, span, channels]: each (group, channel) is normalised over
 * its `span` values, then scaled and shifted per channel, optionally followed by ReLU.
 * Instance norm of NHWC = [B, H*W, C]; layer norm of rows [R, C] = [R, C, 1].
 * Outputs: y, xhat (the normalised values, for the gradient), invStd [groups * channels].
 */
export function groupNormForward(
  x: Float32Array,
  gamma: Float32Array,
  beta: Float32Array,
  groups: number,
  span: number,
  channels: number,
  epsilon: number,
  relu: boolean,
): { y: Float32Array; xhat: Float32Array; invStd: Float32Array } {
  const y = new Float32Array(x.length);
  const xhat = new Float32Array(x.length);
  const invStd = new Float32Array(groups * channels);
  const mean = new Float64Array(channels);
  const sums = new Float64Array(channels);
  const step = chunkFloats(channels);
  for (let g = 0; g < groups; g++) {
    const base = g * span * channels;
    const end = base + span * channels;
    sums.fill(0);
    for (let from = base; from < end; from += step) {
      const to = Math.min(end, from + step);
      for (let c = 0; c < channels; c++) {
        let sum = 0;
        for (let i = from + c; i < to; i += channels) sum += x[i]!;
        sums[c] += sum;
      }
    }
    for (let c = 0; c < channels; c++) {
      mean[c] = sums[c]! / span;
      sums[c] = 0;
    }
    for (let from = base; from < end; from += step) {
      const to = Math.min(end, from + step);
      for (let c = 0; c < channels; c++) {
        const m = mean[c]!;
        let sum = 0;
        for (let i = from + c; i < to; i += channels) {
          const d = x[i]! - m;
          sum += d * d;
        }
        sums[c] += sum;
      }
    }
    for (let c = 0; c < channels; c++) invStd[g * channels + c] = 1 / Math.sqrt(sums[c]! / span + epsilon);
    for (let from = base; from < end; from += step) {
      const to = Math.min(end, from + step);
      for (let c = 0; c < channels; c++) {
        const m = mean[c]!;
        const inv = invStd[g * channels + c]!;
        const scale = gamma[c]!;
        const shift = beta[c]!;
        if (relu) {
          for (let i = from + c; i < to; i += channels) {
            const h = (x[i]! - m) * inv;
            xhat[i] = h;
            const v = h * scale + shift;
            y[i] = (v + Math.abs(v)) * 0.5;
          }
        } else {
          for (let i = from + c; i < to; i += channels) {
            const h = (x[i]! - m) * inv;
            xhat[i] = h;
            y[i] = h * scale + shift;
          }
        }
      }
    }
  }
  return { y, xhat, invStd };
}

/**
 * Both group-norm kernels walk a group in chunks of about 16 KiB and, inside a chunk, one channel
 * at a time: the sums then live in registers instead of a per-channel array (read and written
 * for every element when the loop runs pixel by pixel), and the chunk stays in L1 across the
 * channel passes. With the branch-free ReLU and its gradient, 2.5-3x faster than pixel order.
 */
function chunkFloats(channels: number): number {
  return Math.max(1, Math.floor(4096 / channels)) * channels;
}

export function groupNormBackward(
  dy: Float32Array,
  xhat: Float32Array,
  invStd: Float32Array,
  gamma: Float32Array,
  y: Float32Array | null,
  groups: number,
  span: number,
  channels: number,
): { dx: Float32Array; dgamma: Float32Array; dbeta: Float32Array } {
  const dx = new Float32Array(dy.length);
  const dgamma = new Float64Array(channels);
  const dbeta = new Float64Array(channels);
  const sumDz = new Float64Array(channels);
  const sumDzXhat = new Float64Array(channels);
  const step = chunkFloats(channels);
  for (let g = 0; g < groups; g++) {
    const base = g * span * channels;
    const end = base + span * channels;
    sumDz.fill(0);
    sumDzXhat.fill(0);
    for (let from = base; from < end; from += step) {
      const to = Math.min(end, from + step);
      for (let c = 0; c < channels; c++) {
        let dzSum = 0;
        let dzXhatSum = 0;
        // dz = dy * step(y) after a fused ReLU; +(y > 0) compiles without a branch, which random
        // signs would mispredict half the time.
        if (y) {
          for (let i = from + c; i < to; i += channels) {
            const dz = dy[i]! * +(y[i]! > 0);
            dzSum += dz;
            dzXhatSum += dz * xhat[i]!;
          }
        } else {
          for (let i = from + c; i < to; i += channels) {
            const dz = dy[i]!;
            dzSum += dz;
            dzXhatSum += dz * xhat[i]!;
          }
        }
        sumDz[c] += dzSum;
        sumDzXhat[c] += dzXhatSum;
      }
    }
    for (let c = 0; c < channels; c++) {
      dbeta[c] += sumDz[c]!;
      dgamma[c] += sumDzXhat[c]!;
    }
    for (let from = base; from < end; from += step) {
      const to = Math.min(end, from + step);
      for (let c = 0; c < channels; c++) {
        // d/dx of gamma * (x - mean) * inv: inv * gamma * (dz - mean(dz) - xhat * mean(dz * xhat)).
        const k = invStd[g * channels + c]! * gamma[c]!;
        const meanDz = sumDz[c]! / span;
        const meanDzXhat = sumDzXhat[c]! / span;
        if (y) for (let i = from + c; i < to; i += channels) dx[i] = k * (dy[i]! * +(y[i]! > 0) - meanDz - xhat[i]! * meanDzXhat);
        else for (let i = from + c; i < to; i += channels) dx[i] = k * (dy[i]! - meanDz - xhat[i]! * meanDzXhat);
      }
    }
  }
  return { dx, dgamma: Float32Array.from(dgamma), dbeta: Float32Array.from(dbeta) };
}

export interface AttentionShape {
  batch: number;
  queries: number;
  tokens: number;
  channels: number;
  heads: number;
}

/**
 * softmax(q k^T / sqrt(headDim) over the unmasked tokens) v, per head; q [B, N, C], k and v
 * [B, L, C], mask [B, L] (> 0 = real token). Head h owns channels h*headDim .. (h+1)*headDim.
 * A row whose tokens are all masked attends uniformly (as softmax of equal -1e9 biases does).
 * Returns out [B, N, C] and the weights [B, heads, N, L].
 */
export function attentionForward(
  q: Float32Array,
  k: Float32Array,
  v: Float32Array,
  mask: Float32Array,
  shape: AttentionShape,
): { out: Float32Array; weights: Float32Array } {
  const { batch: B, queries: N, tokens: L, channels: C, heads: H } = shape;
  const hd = C / H;
  const scale = 1 / Math.sqrt(hd);
  const out = new Float32Array(B * N * C);
  const weights = new Float32Array(B * H * N * L);
  const row = new Float64Array(L);
  for (let b = 0; b < B; b++) {
    let valid = 0;
    for (let l = 0; l < L; l++) if (mask[b * L + l]! > 0) valid++;
    for (let h = 0; h < H; h++) {
      for (let n = 0; n < N; n++) {
        const qo = (b * N + n) * C + h * hd;
        let max = -Infinity;
        for (let l = 0; l < L; l++) {
          if (valid > 0 && !(mask[b * L + l]! > 0)) {
            row[l] = -Infinity;
            continue;
          }
          const ko = (b * L + l) * C + h * hd;
          let dot = 0;
          for (let d = 0; d < hd; d++) dot += q[qo + d]! * k[ko + d]!;
          row[l] = valid > 0 ? dot * scale : 0;
          if (row[l]! > max) max = row[l]!;
        }
        let total = 0;
        for (let l = 0; l < L; l++) {
          const e = row[l] === -Infinity ? 0 : Math.exp(row[l]! - max);
          row[l] = e;
          total += e;
        }
        const wo = ((b * H + h) * N + n) * L;
        const oo = (b * N + n) * C + h * hd;
        for (let l = 0; l < L; l++) {
          const w = row[l]! / total;
          weights[wo + l] = w;
          if (w === 0) continue;
          const vo = (b * L + l) * C + h * hd;
          for (let d = 0; d < hd; d++) out[oo + d] += w * v[vo + d]!;
        }
      }
    }
  }
  return { out, weights };
}

export function attentionBackward(
  dOut: Float32Array,
  q: Float32Array,
  k: Float32Array,
  v: Float32Array,
  weights: Float32Array,
  shape: AttentionShape,
): { dq: Float32Array; dk: Float32Array; dv: Float32Array } {
  const { batch: B, queries: N, tokens: L, channels: C, heads: H } = shape;
  const hd = C / H;
  const scale = 1 / Math.sqrt(hd);
  const dq = new Float32Array(q.length);
  const dk = new Float32Array(k.length);
  const dv = new Float32Array(v.length);
  const dw = new Float64Array(L);
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < H; h++) {
      for (let n = 0; n < N; n++) {
        const wo = ((b * H + h) * N + n) * L;
        const oo = (b * N + n) * C + h * hd;
        let weighted = 0;
        for (let l = 0; l < L; l++) {
          const vo = (b * L + l) * C + h * hd;
          let dot = 0;
          for (let d = 0; d < hd; d++) dot += dOut[oo + d]! * v[vo + d]!;
          dw[l] = dot;
          weighted += weights[wo + l]! * dot;
        }
        for (let l = 0; l < L; l++) {
          const w = weights[wo + l]!;
          if (w === 0) continue;
          const ko = (b * L + l) * C + h * hd;
          const ds = w * (dw[l]! - weighted) * scale;
          for (let d = 0; d < hd; d++) {
            dq[oo + d] += ds * k[ko + d]!;
            dk[ko + d] += ds * q[oo + d]!;
            dv[ko + d] += w * dOut[oo + d]!;
          }
        }
      }
    }
  }
  return { dq, dk, dv };
}

/** Nearest-neighbour x2 up-sampling of NHWC, and its gradient (the sum over each 2x2 block). */
export function upsample2xForward(x: Float32Array, batch: number, height: number, width: number, channels: number): Float32Array {
  const y = new Float32Array(x.length * 4);
  const rowOut = 2 * width * channels;
  for (let b = 0; b < batch; b++) {
    for (let i = 0; i < height; i++) {
      const src = (b * height + i) * width * channels;
      const dst = (b * 2 * height + 2 * i) * rowOut;
      for (let j = 0; j < width; j++) {
        for (let c = 0; c < channels; c++) {
          const value = x[src + j * channels + c]!;
          const o = dst + 2 * j * channels + c;
          y[o] = value;
          y[o + channels] = value;
        }
      }
      y.copyWithin(dst + rowOut, dst, dst + rowOut);
    }
  }
  return y;
}

export function upsample2xBackward(dy: Float32Array, batch: number, height: number, width: number, channels: number): Float32Array {
  const dx = new Float32Array(dy.length / 4);
  const rowOut = 2 * width * channels;
  for (let b = 0; b < batch; b++) {
    for (let i = 0; i < height; i++) {
      const dst = (b * height + i) * width * channels;
      const src = (b * 2 * height + 2 * i) * rowOut;
      for (let j = 0; j < width; j++) {
        for (let c = 0; c < channels; c++) {
          const o = src + 2 * j * channels + c;
          dx[dst + j * channels + c] = dy[o]! + dy[o + channels]! + dy[o + rowOut]! + dy[o + rowOut + channels]!;
        }
      }
    }
  }
  return dx;
}

/** out[ids[i]] += rows[i] for rows [N, D]: the gradient of gathering rows of a [count, D] table. */
export function scatterAddRows(rows: Float32Array, ids: Int32Array, count: number, width: number): Float32Array {
  const out = new Float32Array(count * width);
  for (let i = 0; i < ids.length; i++) {
    const id = ids[i]!;
    if (id < 0 || id >= count) throw new Error(`scatterAddRows: id ${id} outside 0..${count - 1}`);
    const o = id * width;
    const r = i * width;
    for (let d = 0; d < width; d++) out[o + d] += rows[r + d]!;
  }
  return out;
}

const KERNELS: Record<string, (args: KernelArgs) => TensorInfo | TensorInfo[]> = {
  [MODEL_KERNELS.groupNorm]: ({ inputs, backend, attrs }) => {
    const { x, gamma, beta } = inputs as { x: TensorInfo; gamma: TensorInfo; beta: TensorInfo };
    const { groups, span, channels, epsilon, relu } = attrs as { groups: number; span: number; channels: number; epsilon: number; relu: boolean };
    const r = groupNormForward(floats(backend, x), floats(backend, gamma), floats(backend, beta), groups, span, channels, epsilon, relu);
    return [
      backend.makeTensorInfo(x.shape, "float32", r.y),
      backend.makeTensorInfo(x.shape, "float32", r.xhat),
      backend.makeTensorInfo([groups * channels], "float32", r.invStd),
    ];
  },
  [MODEL_KERNELS.groupNormGrad]: ({ inputs, backend, attrs }) => {
    const { dy, xhat, invStd, gamma, y } = inputs as { dy: TensorInfo; xhat: TensorInfo; invStd: TensorInfo; gamma: TensorInfo; y: TensorInfo };
    const { groups, span, channels, relu } = attrs as { groups: number; span: number; channels: number; relu: boolean };
    const r = groupNormBackward(
      floats(backend, dy),
      floats(backend, xhat),
      floats(backend, invStd),
      floats(backend, gamma),
      relu ? floats(backend, y) : null,
      groups,
      span,
      channels,
    );
    return [
      backend.makeTensorInfo(dy.shape, "float32", r.dx),
      backend.makeTensorInfo([channels], "float32", r.dgamma),
      backend.makeTensorInfo([channels], "float32", r.dbeta),
    ];
  },
  [MODEL_KERNELS.attention]: ({ inputs, backend, attrs }) => {
    const { q, k, v, mask } = inputs as { q: TensorInfo; k: TensorInfo; v: TensorInfo; mask: TensorInfo };
    const [B, N, C] = q.shape as [number, number, number];
    const shape: AttentionShape = { batch: B, queries: N, tokens: k.shape[1]!, channels: C, heads: attrs.heads as number };
    const r = attentionForward(floats(backend, q), floats(backend, k), floats(backend, v), floats(backend, mask), shape);
    return [backend.makeTensorInfo([B, N, C], "float32", r.out), backend.makeTensorInfo([B, shape.heads, N, shape.tokens], "float32", r.weights)];
  },
  [MODEL_KERNELS.attentionGrad]: ({ inputs, backend, attrs }) => {
    const { dy, q, k, v, weights } = inputs as { dy: TensorInfo; q: TensorInfo; k: TensorInfo; v: TensorInfo; weights: TensorInfo };
    const [B, N, C] = q.shape as [number, number, number];
    const shape: AttentionShape = { batch: B, queries: N, tokens: k.shape[1]!, channels: C, heads: attrs.heads as number };
    const r = attentionBackward(floats(backend, dy), floats(backend, q), floats(backend, k), floats(backend, v), floats(backend, weights), shape);
    return [
      backend.makeTensorInfo(q.shape, "float32", r.dq),
      backend.makeTensorInfo(k.shape, "float32", r.dk),
      backend.makeTensorInfo(v.shape, "float32", r.dv),
    ];
  },
  [MODEL_KERNELS.upsample]: ({ inputs, backend }) => {
    const { x } = inputs as { x: TensorInfo };
    const [B, H, W, C] = x.shape as [number, number, number, number];
    return backend.makeTensorInfo([B, 2 * H, 2 * W, C], "float32", upsample2xForward(floats(backend, x), B, H, W, C));
  },
  [MODEL_KERNELS.upsampleGrad]: ({ inputs, backend }) => {
    const { dy } = inputs as { dy: TensorInfo };
    const [B, H2, W2, C] = dy.shape as [number, number, number, number];
    return backend.makeTensorInfo([B, H2 / 2, W2 / 2, C], "float32", upsample2xBackward(floats(backend, dy), B, H2 / 2, W2 / 2, C));
  },
  [MODEL_KERNELS.adamW]: ({ inputs, backend, attrs }) => {
    const { param, gradient, m, v } = inputs as { param: TensorInfo; gradient: TensorInfo; m: TensorInfo; v: TensorInfo };
    const next = adamWStep(floats(backend, param), floats(backend, gradient), floats(backend, m), floats(backend, v), attrs as unknown as AdamWAttrs);
    return next.map((values) => backend.makeTensorInfo(param.shape, "float32", values));
  },
  [MODEL_KERNELS.scatterRows]: ({ inputs, backend, attrs }) => {
    const { rows, ids } = inputs as { rows: TensorInfo; ids: TensorInfo };
    const count = attrs.count as number;
    const width = rows.shape[rows.shape.length - 1]!;
    return backend.makeTensorInfo([count, width], "float32", scatterAddRows(floats(backend, rows), ints(backend, ids), count, width));
  },
};

let registered = false;

/** Registers the model kernels on the cpu backend (idempotent; nothing stock is replaced). */
export function registerModelKernels(): void {
  if (registered) return;
  registered = true;
  for (const [kernelName, kernelFunc] of Object.entries(KERNELS)) {
    if (tf.getKernel(kernelName, "cpu")) continue;
    tf.registerKernel({ kernelName, backendName: "cpu", kernelFunc: kernelFunc as unknown as KernelFunc });
  }
}
