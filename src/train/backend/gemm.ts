/**
 * Single-precision matrix multiply for the CPU training kernels.
 *
 * Plain JavaScript tops out near 3 GFLOP/s here (scalar doubles, 16 xmm registers), which keeps a
 * 224 x 224 U-Net step an order of magnitude behind PyTorch. WebAssembly SIMD (f32x4, on by
 * default since Node 16) reaches ~25 GFLOP/s with a 4 x 8 register block, so the micro-kernels are
 * emitted here as WebAssembly bytecode at load time: no binary blob, no build step, no dependency.
 *
 * All matrices live in one shared WebAssembly.Memory. Callers reserve scratch space with
 * `GemmWorkspace.reserve` (a bump allocator reset per kernel call) and address it in floats.
 * Every function ACCUMULATES into C (C += A * B); zero C first for a plain product.
 */

// ---- a minimal WebAssembly encoder (only what the micro-kernels need) ----

function uleb(value: number): number[] {
  const out: number[] = [];
  let n = value >>> 0;
  do {
    let byte = n & 0x7f;
    n >>>= 7;
    if (n !== 0) byte |= 0x80;
    out.push(byte);
  } while (n !== 0);
  return out;
}

function sleb(value: number): number[] {
  const out: number[] = [];
  let n = value | 0;
  for (;;) {
    const byte = n & 0x7f;
    n >>= 7;
    if ((n === 0 && (byte & 0x40) === 0) || (n === -1 && (byte & 0x40) !== 0)) {
      out.push(byte);
      return out;
    }
    out.push(byte | 0x80);
  }
}

const ascii = (s: string): number[] => [...uleb(s.length), ...Array.from(s, (c) => c.charCodeAt(0))];
const section = (id: number, bytes: number[]): number[] => [id, ...uleb(bytes.length), ...bytes];
const vector = (items: number[][]): number[] => [...uleb(items.length), ...items.flat()];

const T_I32 = 0x7f;
const T_V128 = 0x7b;
const localGet = (i: number) => [0x20, ...uleb(i)];
const localSet = (i: number) => [0x21, ...uleb(i)];
const localTee = (i: number) => [0x22, ...uleb(i)];
const i32Const = (v: number) => [0x41, ...sleb(v)];
const I32_ADD = [0x6a];
const I32_SUB = [0x6b];
const I32_MUL = [0x6c];
const I32_SHL = [0x74];
const I32_GE_S = [0x4e];
const f32Load = (offset: number) => [0x2a, 2, ...uleb(offset)];
const v128Load = (offset: number) => [0xfd, ...uleb(0), 2, ...uleb(offset)];
const v128Store = (offset: number) => [0xfd, ...uleb(11), 2, ...uleb(offset)];
const F32X4_SPLAT = [0xfd, ...uleb(19)];
const F32X4_ADD = [0xfd, ...uleb(228)];
const F32X4_MUL = [0xfd, ...uleb(230)];
const V128_ZERO = [0xfd, ...uleb(12), ...new Array<number>(16).fill(0)];
const BLOCK = [0x02, 0x40];
const LOOP = [0x03, 0x40];
const END = [0x0b];
const br = (depth: number) => [0x0c, ...uleb(depth)];
const brIf = (depth: number) => [0x0d, ...uleb(depth)];

/**
 * One micro-kernel: C[M, N] += op(A)[M, K] * B[K, N], M a multiple of `rows`, N a multiple of 8,
 * K >= 1. Pointers and leading dimensions are in bytes. `transposedA` reads A as [K, M] (element
 * (i, p) at a + p*lda + i*4), which is how the weight gradient consumes im2col patches without
 * transposing them.
 * Params: M N K a lda b ldb c ldc.
 */
function microKernel(rows: number, transposedA: boolean): number[] {
  const [M, N, K, A, LDA, B, LDB, C, LDC] = [0, 1, 2, 3, 4, 5, 6, 7, 8];
  let next = 9;
  const i = next++, j = next++, p = next++, pa = next++, pb = next++, pc = next++;
  const rowOffset: number[] = [];
  for (let r = 1; r < rows; r++) rowOffset.push(next++);
  const i32Locals = next - 9;
  const acc: Array<[number, number]> = [];
  for (let r = 0; r < rows; r++) acc.push([next++, next++]);
  const b0 = next++, b1 = next++, av = next++;
  const v128Locals = next - 9 - i32Locals;

  const code: number[] = [];
  if (!transposedA) for (let r = 1; r < rows; r++) code.push(...localGet(LDA), ...i32Const(r), ...I32_MUL, ...localSet(rowOffset[r - 1]!));
  code.push(...i32Const(0), ...localSet(i), ...BLOCK, ...LOOP);
  code.push(...localGet(i), ...localGet(M), ...I32_GE_S, ...brIf(1));
  code.push(...i32Const(0), ...localSet(j), ...BLOCK, ...LOOP);
  code.push(...localGet(j), ...localGet(N), ...I32_GE_S, ...brIf(1));
  for (const [x, y] of acc) code.push(...V128_ZERO, ...localSet(x), ...V128_ZERO, ...localSet(y));
  // pa = a + i * (transposedA ? 4 : lda); pb = b + j * 4
  code.push(...localGet(A), ...localGet(i));
  if (transposedA) code.push(...i32Const(2), ...I32_SHL);
  else code.push(...localGet(LDA), ...I32_MUL);
  code.push(...I32_ADD, ...localSet(pa));
  code.push(...localGet(B), ...localGet(j), ...i32Const(2), ...I32_SHL, ...I32_ADD, ...localSet(pb));
  code.push(...localGet(K), ...localSet(p), ...LOOP);
  code.push(...localGet(pb), ...v128Load(0), ...localSet(b0), ...localGet(pb), ...v128Load(16), ...localSet(b1));
  for (let r = 0; r < rows; r++) {
    code.push(...localGet(pa));
    if (transposedA) code.push(...f32Load(4 * r));
    else {
      if (r > 0) code.push(...localGet(rowOffset[r - 1]!), ...I32_ADD);
      code.push(...f32Load(0));
    }
    code.push(...F32X4_SPLAT, ...localSet(av));
    code.push(...localGet(acc[r]![0]), ...localGet(av), ...localGet(b0), ...F32X4_MUL, ...F32X4_ADD, ...localSet(acc[r]![0]));
    code.push(...localGet(acc[r]![1]), ...localGet(av), ...localGet(b1), ...F32X4_MUL, ...F32X4_ADD, ...localSet(acc[r]![1]));
  }
  code.push(...localGet(pa), ...(transposedA ? localGet(LDA) : i32Const(4)), ...I32_ADD, ...localSet(pa));
  code.push(...localGet(pb), ...localGet(LDB), ...I32_ADD, ...localSet(pb));
  code.push(...localGet(p), ...i32Const(1), ...I32_SUB, ...localTee(p), ...brIf(0), ...END);
  // pc = c + i * ldc + j * 4; C[rows x 8] += accumulators
  code.push(...localGet(C), ...localGet(i), ...localGet(LDC), ...I32_MUL, ...I32_ADD);
  code.push(...localGet(j), ...i32Const(2), ...I32_SHL, ...I32_ADD, ...localSet(pc));
  for (let r = 0; r < rows; r++) {
    code.push(...localGet(pc), ...localGet(pc), ...v128Load(0), ...localGet(acc[r]![0]), ...F32X4_ADD, ...v128Store(0));
    code.push(...localGet(pc), ...localGet(pc), ...v128Load(16), ...localGet(acc[r]![1]), ...F32X4_ADD, ...v128Store(16));
    if (r < rows - 1) code.push(...localGet(pc), ...localGet(LDC), ...I32_ADD, ...localSet(pc));
  }
  code.push(...localGet(j), ...i32Const(8), ...I32_ADD, ...localSet(j), ...br(0), ...END, ...END);
  code.push(...localGet(i), ...i32Const(rows), ...I32_ADD, ...localSet(i), ...br(0), ...END, ...END, ...END);
  const body = [...vector([[...uleb(i32Locals), T_I32], [...uleb(v128Locals), T_V128]]), ...code];
  return [...uleb(body.length), ...body];
}

const KERNELS = [
  { name: "nn4", rows: 4, transposedA: false },
  { name: "nn1", rows: 1, transposedA: false },
  { name: "tn4", rows: 4, transposedA: true },
  { name: "tn1", rows: 1, transposedA: true },
] as const;

function gemmModuleBytes(): Uint8Array {
  const types = section(1, vector([[0x60, ...vector(new Array<number[]>(9).fill([T_I32])), 0]]));
  const imports = section(2, vector([[...ascii("env"), ...ascii("memory"), 0x02, 0x00, 1]]));
  const functions = section(3, vector(KERNELS.map(() => [0])));
  const exports = section(7, vector(KERNELS.map((k, index) => [...ascii(k.name), 0x00, ...uleb(index)])));
  const code = section(10, vector(KERNELS.map((k) => microKernel(k.rows, k.transposedA))));
  return new Uint8Array([0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, ...types, ...imports, ...functions, ...exports, ...code]);
}

/** The slice of the WebAssembly JS API used here (the project's lib settings carry no DOM types). */
interface WasmMemory {
  readonly buffer: ArrayBuffer;
  grow(pages: number): number;
}
interface WasmApi {
  Memory: new (descriptor: { initial: number }) => WasmMemory;
  Module: new (bytes: Uint8Array) => object;
  Instance: new (module: object, imports: object) => { exports: Record<string, unknown> };
}
const wasm = (globalThis as unknown as { WebAssembly: WasmApi }).WebAssembly;

type KernelFn = (m: number, n: number, k: number, a: number, lda: number, b: number, ldb: number, c: number, ldc: number) => void;

const PAGE_BYTES = 65536;

/**
 * Scratch space in WebAssembly memory plus the GEMM entry points. Offsets are in floats. One
 * workspace per process is enough: tfjs runs kernels synchronously, one at a time.
 */
export class GemmWorkspace {
  readonly memory: WasmMemory;
  private readonly kernels: Record<(typeof KERNELS)[number]["name"], KernelFn>;
  private view: Float32Array;
  private top = 0;

  constructor() {
    this.memory = new wasm.Memory({ initial: 16 });
    const instance = new wasm.Instance(new wasm.Module(gemmModuleBytes()), { env: { memory: this.memory } });
    this.kernels = instance.exports as unknown as GemmWorkspace["kernels"];
    this.view = new Float32Array(this.memory.buffer);
  }

  /** Frees every reservation; earlier offsets become invalid. */
  reset(): void {
    this.top = 0;
  }

  /** Reserves `floats` floats (16-byte aligned) and returns the offset in floats. */
  reserve(floats: number): number {
    const offset = this.top;
    this.top = offset + ((floats + 3) & ~3);
    const needed = this.top * 4;
    if (needed > this.memory.buffer.byteLength) {
      this.memory.grow(Math.ceil((needed - this.memory.buffer.byteLength) / PAGE_BYTES));
      this.view = new Float32Array(this.memory.buffer);
    }
    return offset;
  }

  /** The current view of the whole memory (it changes when memory grows, so re-read after reserve). */
  get f32(): Float32Array {
    return this.view;
  }

  /**
   * C[m, n] += A[m, k] * B[k, n] (or A^T when `transposedA`: A stored [k, m]), row-major, offsets
   * and leading dimensions in floats.
   */
  gemm(transposedA: boolean, m: number, n: number, k: number, a: number, lda: number, b: number, ldb: number, c: number, ldc: number): void {
    if (m === 0 || n === 0 || k === 0) return;
    const n8 = n & ~7;
    const m4 = m & ~3;
    const [four, one] = transposedA ? [this.kernels.tn4, this.kernels.tn1] : [this.kernels.nn4, this.kernels.nn1];
    if (n8 > 0) {
      if (m4 > 0) four(m4, n8, k, a * 4, lda * 4, b * 4, ldb * 4, c * 4, ldc * 4);
      for (let i = m4; i < m; i++) {
        const aRow = transposedA ? a + i : a + i * lda;
        one(1, n8, k, aRow * 4, lda * 4, b * 4, ldb * 4, (c + i * ldc) * 4, ldc * 4);
      }
    }
    if (n8 < n) this.gemmTailColumns(transposedA, m, n8, n, k, a, lda, b, ldb, c, ldc);
  }

  /** Columns [from, to) that do not fill an 8-wide SIMD strip (e.g. a 1-channel head). */
  private gemmTailColumns(transposedA: boolean, m: number, from: number, to: number, k: number, a: number, lda: number, b: number, ldb: number, c: number, ldc: number): void {
    const f = this.view;
    const aStepI = transposedA ? 1 : lda;
    const aStepP = transposedA ? lda : 1;
    for (let i = 0; i < m; i++) {
      const aRow = a + i * aStepI;
      for (let j = from; j < to; j++) {
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
}

let shared: GemmWorkspace | undefined;

/** The process-wide workspace, created on first use. */
export function gemmWorkspace(): GemmWorkspace {
  shared ??= new GemmWorkspace();
  return shared;
}
