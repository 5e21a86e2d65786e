/**
 * How GEMM calls run on the WebAssembly micro-kernels, as self-contained functions: the GEMM
 * worker threads are started from their source text (gemm-threads.ts), so these may reference
 * nothing outside their own bodies but each other.
 */

export interface GemmKernels {
  nn4: GemmKernelFn;
  nn1: GemmKernelFn;
  tn4: GemmKernelFn;
  tn1: GemmKernelFn;
}

/** (M, N, K, a, lda, b, ldb, c, ldc), pointers and leading dimensions in bytes. */
export type GemmKernelFn = (m: number, n: number, k: number, a: number, lda: number, b: number, ldb: number, c: number, ldc: number) => void;

/** Int32s per queued call in a GemmBatch: transposedA, m, n, k, a, lda, b, ldb, c, ldc. */
export const GEMM_CALL_INTS = 10;

/**
 * C[m, n] += op(A)[m, k] * B[k, n] over the float view `f` of the kernels' memory, offsets and
 * leading dimensions in floats: the 4-row kernel over whole 8-column strips, the 1-row kernel for
 * leftover rows, scalar code for columns that do not fill a strip (e.g. a 1-channel head).
 */
export function runGemmCall(
  kernels: GemmKernels,
  f: Float32Array,
  transposedA: boolean,
  m: number,
  n: number,
  k: number,
  a: number,
  lda: number,
  b: number,
  ldb: number,
  c: number,
  ldc: number,
): void {
  if (m === 0 || n === 0 || k === 0) return;
  const n8 = n & ~7;
  const m4 = m & ~3;
  const four = transposedA ? kernels.tn4 : kernels.nn4;
  const one = transposedA ? kernels.tn1 : kernels.nn1;
  if (n8 > 0) {
    if (m4 > 0) four(m4, n8, k, a * 4, lda * 4, b * 4, ldb * 4, c * 4, ldc * 4);
    for (let i = m4; i < m; i++) {
      const aRow = transposedA ? a + i : a + i * lda;
      one(1, n8, k, aRow * 4, lda * 4, b * 4, ldb * 4, (c + i * ldc) * 4, ldc * 4);
    }
  }
  if (n8 === n) return;
  const aStepI = transposedA ? 1 : lda;
  const aStepP = transposedA ? lda : 1;
  for (let i = 0; i < m; i++) {
    const aRow = a + i * aStepI;
    for (let j = n8; j < n; j++) {
      let sum = 0;
      let pa = aRow;
      let pb = b + j;
      for (let p = 0; p < k; p++) {
        sum += f[pa]! * f[pb]!;
        pa += aStepP;
        pb += ldb;
      }
      f[c + i * ldc + j] += sum;
    }
  }
}

/**
 * Runs queued calls [from, to) whose descriptors (GEMM_CALL_INTS int32s each) start at index
 * `descriptors` of `d`: the memory's int32 view in a worker, or the queue itself on one thread.
 */
export function runGemmCalls(kernels: GemmKernels, f: Float32Array, d: Int32Array, descriptors: number, from: number, to: number): void {
  for (let call = from; call < to; call++) {
    const at = descriptors + call * 10;
    runGemmCall(kernels, f, d[at] === 1, d[at + 1]!, d[at + 2]!, d[at + 3]!, d[at + 4]!, d[at + 5]!, d[at + 6]!, d[at + 7]!, d[at + 8]!, d[at + 9]!);
  }
}

/**
 * Takes groups of queued calls one at a time from the shared counter `ctrl[next]` until none is
 * left, and runs each whole. Group g's calls are [ends[g - 1], ends[g]) (from 0 for g = 0), with
 * `ends` at int32 index `groupEnds` of `d`. Every thread of a dispatch runs this loop, so a thread
 * that starts late or runs slow simply takes fewer groups. Returns how many groups it ran.
 */
export function runGemmGroups(
  kernels: GemmKernels,
  f: Float32Array,
  d: Int32Array,
  ctrl: Int32Array,
  next: number,
  descriptors: number,
  groupEnds: number,
  groupCount: number,
): number {
  for (let ran = 0; ; ran++) {
    const group = Atomics.add(ctrl, next, 1);
    if (group >= groupCount) return ran;
    const from = group === 0 ? 0 : d[groupEnds + group - 1]!;
    runGemmCalls(kernels, f, d, descriptors, from, d[groupEnds + group]!);
  }
}
