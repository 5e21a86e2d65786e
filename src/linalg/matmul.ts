/**
 * Batched matrix multiply (tfjs BatchMatMul semantics: optional transposes, batch dims equal or
 * one side's batch of 1 broadcast) on the WebAssembly SIMD GEMM. Attention layers of the
 * language-guided U-Net run on it.
 */
import { GemmBatch, gemmWorkspace, type GemmWorkspace } from "./gemm.js";

/** Rows of C per group when a product is split between threads (a multiple of 4). */
const ROWS_PER_GROUP = 32;

/** Reused by every call: a batch is emptied when it runs. */
const queue = new GemmBatch();

export interface MatMulShape {
  batch: number;
  /** Batches of A and B: equal to `batch`, or 1 for a side that is broadcast. */
  batchA: number;
  batchB: number;
  m: number;
  n: number;
  k: number;
  transposeA: boolean;
  transposeB: boolean;
}

/** out[batch, m, n] = op(A)[m, k] * op(B)[k, n] per batch. */
export function batchMatMul(a: Float32Array, b: Float32Array, s: MatMulShape, ws: GemmWorkspace = gemmWorkspace()): Float32Array {
  const { batch, batchA, batchB, m, n, k, transposeA, transposeB } = s;
  const out = new Float32Array(batch * m * n);
  if (m === 0 || n === 0 || k === 0) return out;
  ws.reset();
  const aOff = ws.reserve(m * k);
  const bOff = ws.reserve(k * n);
  const cOff = ws.reserve(m * n);
  let loadedA = -1;
  let loadedB = -1;
  for (let i = 0; i < batch; i++) {
    const ia = batchA === 1 ? 0 : i;
    const ib = batchB === 1 ? 0 : i;
    const f = ws.f32;
    if (ia !== loadedA) {
      // Stored as given: [m, k], or [k, m] when transposed (the GEMM reads A^T directly).
      f.set(a.subarray(ia * m * k, (ia + 1) * m * k), aOff);
      loadedA = ia;
    }
    if (ib !== loadedB) {
      const src = ib * k * n;
      if (transposeB) {
        // B is stored [n, k]; the GEMM wants [k, n].
        for (let p = 0; p < k; p++) for (let j = 0; j < n; j++) f[bOff + p * n + j] = b[src + j * k + p]!;
      } else {
        f.set(b.subarray(src, src + k * n), bOff);
      }
      loadedB = ib;
    }
    f.fill(0, cOff, cOff + m * n);
    // Row blocks of C are independent: the workspace's threads share them (the dense layers of
    // the segmenter's attention are one product over every image position).
    const lda = transposeA ? m : k;
    for (let row = 0; row < m; row += ROWS_PER_GROUP) {
      const rows = Math.min(ROWS_PER_GROUP, m - row);
      queue.push(transposeA, rows, n, k, transposeA ? aOff + row : aOff + row * lda, lda, bOff, n, cOff + row * n, n);
      queue.endGroup();
    }
    ws.runBatch(queue);
    out.set(ws.f32.subarray(cOff, cOff + m * n), i * m * n);
  }
  return out;
}
