/**
 * Typed-array versions of the non-convolution kernels that dominate a U-Net step on the stock cpu
 * backend once convolutions are fast (measured at 64 x 64, batch 4: SplitV from the concat
 * gradient, MaxPoolGrad, bias-gradient Sum, broadcast Add/Multiply). The stock broadcast path
 * allocates index arrays per element; these loop over flat arrays. Each returns undefined for a
 * case it does not cover so the caller can use the stock kernel.
 */

export type BinaryOp = "Add" | "Sub" | "Multiply" | "RealDiv";

function sizeOf(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

/** Shape without leading 1s, so [1, 1, C] and [C] compare equal as broadcast suffixes. */
function trimmed(shape: readonly number[]): number[] {
  let i = 0;
  while (i < shape.length && shape[i] === 1) i++;
  return shape.slice(i);
}

function isSuffix(small: readonly number[], big: readonly number[]): boolean {
  const s = trimmed(small);
  if (s.length > big.length) return false;
  const offset = big.length - s.length;
  for (let i = 0; i < s.length; i++) if (s[i] !== big[offset + i]) return false;
  return true;
}

/**
 * Element-wise a op b when one operand's shape is the other's (output's) trailing dims, so
 * broadcasting is a repeat of a flat block. Returns [values, shape] or undefined.
 */
export function binaryBroadcastSuffix(
  op: BinaryOp,
  aShape: number[],
  a: Float32Array,
  bShape: number[],
  b: Float32Array,
): [Float32Array, number[]] | undefined {
  const aIsOut = aShape.length >= bShape.length && isSuffix(bShape, aShape);
  const bIsOut = !aIsOut && bShape.length >= aShape.length && isSuffix(aShape, bShape);
  if (!aIsOut && !bIsOut) return undefined;
  const shape = aIsOut ? aShape.slice() : bShape.slice();
  const n = sizeOf(shape);
  const out = new Float32Array(n);
  const aSize = a.length;
  const bSize = b.length;
  if (aSize === 0 || bSize === 0 || n % aSize !== 0 || n % bSize !== 0) return undefined;
  let ia = 0;
  let ib = 0;
  switch (op) {
    case "Add":
      for (let i = 0; i < n; i++) {
        out[i] = a[ia]! + b[ib]!;
        if (++ia === aSize) ia = 0;
        if (++ib === bSize) ib = 0;
      }
      break;
    case "Sub":
      for (let i = 0; i < n; i++) {
        out[i] = a[ia]! - b[ib]!;
        if (++ia === aSize) ia = 0;
        if (++ib === bSize) ib = 0;
      }
      break;
    case "Multiply":
      for (let i = 0; i < n; i++) {
        out[i] = a[ia]! * b[ib]!;
        if (++ia === aSize) ia = 0;
        if (++ib === bSize) ib = 0;
      }
      break;
    case "RealDiv":
      for (let i = 0; i < n; i++) {
        out[i] = a[ia]! / b[ib]!;
        if (++ia === aSize) ia = 0;
        if (++ib === bSize) ib = 0;
      }
      break;
  }
  return [out, shape];
}

/**
 * Sum over axes that are all leading (e.g. a bias gradient over batch, rows, columns) or all
 * trailing. Accumulates in float64 like the stock kernel. Returns undefined for other axis sets.
 */
export function sumContiguousAxes(shape: number[], x: Float32Array, axes: number[]): Float32Array | undefined {
  const rank = shape.length;
  const sorted = [...new Set(axes)].sort((p, q) => p - q);
  if (sorted.length === 0) return undefined;
  const leading = sorted.every((axis, i) => axis === i);
  const trailing = sorted.every((axis, i) => axis === rank - sorted.length + i);
  if (!leading && !trailing) return undefined;
  if (leading) {
    const inner = sizeOf(shape.slice(sorted.length));
    const outer = sizeOf(shape.slice(0, sorted.length));
    const acc = new Float64Array(inner);
    for (let o = 0, base = 0; o < outer; o++, base += inner) for (let j = 0; j < inner; j++) acc[j] += x[base + j]!;
    return Float32Array.from(acc);
  }
  const inner = sizeOf(shape.slice(rank - sorted.length));
  const outer = sizeOf(shape.slice(0, rank - sorted.length));
  const out = new Float32Array(outer);
  for (let o = 0, base = 0; o < outer; o++, base += inner) {
    let s = 0;
    for (let j = 0; j < inner; j++) s += x[base + j]!;
    out[o] = s;
  }
  return out;
}

/**
 * Copies `count` blocks of `length` floats from src (block i at srcOffset + i * srcPitch) to dst
 * (at dstOffset + i * dstPitch). Short blocks (the channels of one pixel) are copied in a loop:
 * a subarray per block would allocate two objects per pixel.
 */
function copyBlocks(
  src: Float32Array,
  srcOffset: number,
  srcPitch: number,
  dst: Float32Array,
  dstOffset: number,
  dstPitch: number,
  count: number,
  length: number,
): void {
  if (length >= 256) {
    for (let i = 0; i < count; i++) {
      const from = srcOffset + i * srcPitch;
      dst.set(src.subarray(from, from + length), dstOffset + i * dstPitch);
    }
    return;
  }
  for (let i = 0; i < count; i++) {
    let from = srcOffset + i * srcPitch;
    let to = dstOffset + i * dstPitch;
    const end = from + length;
    while (from < end) dst[to++] = src[from++]!;
  }
}

/** Splits x along `axis` into pieces of the given sizes: one block copy per outer index. */
export function splitAlongAxis(shape: number[], x: Float32Array, axis: number, sizes: number[]): Float32Array[] {
  const outer = sizeOf(shape.slice(0, axis));
  const inner = sizeOf(shape.slice(axis + 1));
  const rowLength = shape[axis]! * inner;
  const outputs: Float32Array[] = [];
  let offset = 0;
  for (const size of sizes) {
    const block = size * inner;
    const out = new Float32Array(outer * block);
    copyBlocks(x, offset, rowLength, out, 0, block, outer, block);
    outputs.push(out);
    offset += block;
  }
  return outputs;
}

/**
 * Max-pool gradient for NHWC windows that tile the input without overlap or padding (the 2x2,
 * stride-2 "valid" pooling of a U-Net): each dy goes to the first maximum of its window in
 * row-major order, the stock kernel's tie rule.
 */
export function maxPoolGradTiled(
  x: Float32Array,
  dy: Float32Array,
  g: { batch: number; inHeight: number; inWidth: number; channels: number; outHeight: number; outWidth: number; size: number },
): Float32Array {
  const { batch, inHeight: H, inWidth: W, channels: C, outHeight: OH, outWidth: OW, size: S } = g;
  const dx = new Float32Array(batch * H * W * C);
  for (let b = 0; b < batch; b++) {
    for (let oy = 0; oy < OH; oy++) {
      for (let ox = 0; ox < OW; ox++) {
        const dyBase = ((b * OH + oy) * OW + ox) * C;
        const corner = ((b * H + oy * S) * W + ox * S) * C;
        for (let c = 0; c < C; c++) {
          let best = -Infinity;
          let at = -1;
          for (let wy = 0; wy < S; wy++) {
            let idx = corner + wy * W * C + c;
            for (let wx = 0; wx < S; wx++, idx += C) {
              const v = x[idx]!;
              if (v > best) {
                best = v;
                at = idx;
              }
            }
          }
          if (at >= 0) dx[at] = dy[dyBase + c]!;
        }
      }
    }
  }
  return dx;
}

/**
 * max(x, 0), NaN kept (the stock kernel's Math.max(0, x)). Branch-free: activations are ~half
 * negative at random, and a data-dependent branch costs ~4x the whole loop in mispredictions.
 * (v + |v|) / 2 is exact in float64.
 */
export function relu(x: Float32Array): Float32Array {
  const out = new Float32Array(x.length);
  for (let i = 0; i < x.length; i++) {
    const v = x[i]!;
    out[i] = (v + Math.abs(v)) * 0.5;
  }
  return out;
}

/**
 * dy * step(x) in one pass, NaN where x is NaN, as Multiply(dy, Step(x)) gives. The main loop is
 * branch-free (a select on NaN inside it measured 6x slower); NaNs are patched in a second pass
 * only when one was seen.
 */
export function reluGrad(dy: Float32Array, x: Float32Array): Float32Array {
  const out = new Float32Array(x.length);
  let nans = 0;
  for (let i = 0; i < x.length; i++) {
    const v = x[i]!;
    nans += +Number.isNaN(v);
    out[i] = dy[i]! * +(v > 0);
  }
  if (nans > 0) for (let i = 0; i < x.length; i++) if (Number.isNaN(x[i]!)) out[i] = NaN;
  return out;
}

/** 1 where x > 0, else alpha; NaN kept, as the stock kernel. Branch-free for alpha 0 (ReLU masks). */
export function step(x: Float32Array, alpha: number): Float32Array {
  const out = new Float32Array(x.length);
  if (alpha === 0) {
    let nans = 0;
    for (let i = 0; i < x.length; i++) {
      const v = x[i]!;
      nans += +Number.isNaN(v);
      out[i] = +(v > 0);
    }
    if (nans > 0) for (let i = 0; i < x.length; i++) if (Number.isNaN(x[i]!)) out[i] = NaN;
    return out;
  }
  for (let i = 0; i < x.length; i++) {
    const v = x[i]!;
    out[i] = v > 0 ? 1 : Number.isNaN(v) ? NaN : alpha;
  }
  return out;
}

/** Concatenates along `axis`: one block copy per input per outer index (the inverse of splitAlongAxis). */
export function concatAlongAxis(shapes: number[][], values: Float32Array[], axis: number): Float32Array {
  const outer = sizeOf(shapes[0]!.slice(0, axis));
  const blocks = shapes.map((s) => sizeOf(s.slice(axis)));
  const rowLength = blocks.reduce((a, b) => a + b, 0);
  const out = new Float32Array(outer * rowLength);
  let offset = 0;
  values.forEach((v, k) => {
    const block = blocks[k]!;
    copyBlocks(v, 0, block, out, offset, rowLength, outer, block);
    offset += block;
  });
  return out;
}

/**
 * Max-pool forward for NHWC windows that tile the input (no overlap, no padding). NaN is skipped
 * and an all-NaN window gives -Infinity, as the stock kernel (it only takes strictly larger values).
 */
export function maxPoolTiled(
  x: Float32Array,
  g: { batch: number; inHeight: number; inWidth: number; channels: number; outHeight: number; outWidth: number; size: number },
): Float32Array {
  const { batch, inHeight: H, inWidth: W, channels: C, outHeight: OH, outWidth: OW, size: S } = g;
  const out = new Float32Array(batch * OH * OW * C);
  const best = new Float64Array(C);
  for (let b = 0; b < batch; b++) {
    for (let oy = 0; oy < OH; oy++) {
      for (let ox = 0; ox < OW; ox++) {
        best.fill(-Infinity);
        for (let wy = 0; wy < S; wy++) {
          for (let wx = 0; wx < S; wx++) {
            const base = ((b * H + oy * S + wy) * W + ox * S + wx) * C;
            for (let c = 0; c < C; c++) {
              const v = x[base + c]!;
              const m = best[c]!;
              best[c] = v > m ? v : m;
            }
          }
        }
        out.set(best, ((b * OH + oy) * OW + ox) * C);
      }
    }
  }
  return out;
}
