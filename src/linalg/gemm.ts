/**
 * Single-precision matrix multiply for the CPU training kernels.
 *
 * Plain JavaScript tops out near 3 GFLOP/s here (scalar doubles, 16 xmm registers), which keeps a
 * 224 x 224 U-Net step an order of magnitude behind PyTorch. WebAssembly SIMD (f32x4, on by
 * default since Node 16) reaches ~25 GFLOP/s with a 4 x 8 register block, so the micro-kernels are
 * emitted here as WebAssembly bytecode at load time: no binary blob, no build step, no dependency.
 *
 * All matrices live in one WebAssembly.Memory. Callers reserve scratch space with
 * `GemmWorkspace.reserve` (a bump allocator reset per kernel call) and address it in floats.
 * Every function ACCUMULATES into C (C += A * B); zero C first for a plain product.
 *
 * The memory is a shared one: a GemmBatch of independent calls is spread over worker threads
 * (gemm-threads.ts) that run the same kernels over the same memory.
 */
import { GEMM_CALL_INTS, runGemmCall, runGemmCalls, type GemmKernels } from "./gemm-calls.js";
import { configuredGemmThreads, GemmThreadPool } from "./gemm-threads.js";

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
  const i = next++,
    j = next++,
    p = next++,
    pa = next++,
    pb = next++,
    pc = next++;
  const rowOffset: number[] = [];
  for (let r = 1; r < rows; r++) rowOffset.push(next++);
  const i32Locals = next - 9;
  const acc: Array<[number, number]> = [];
  for (let r = 0; r < rows; r++) acc.push([next++, next++]);
  const b0 = next++,
    b1 = next++,
    av = next++;
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
  const body = [
    ...vector([
      [...uleb(i32Locals), T_I32],
      [...uleb(v128Locals), T_V128],
    ]),
    ...code,
  ];
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
  // A shared memory (limits flag 3: shared, with a maximum), so GEMM worker threads can run
  // the same kernels over it.
  const imports = section(2, vector([[...ascii("env"), ...ascii("memory"), 0x02, 0x03, 1, ...uleb(MAX_PAGES)]]));
  const functions = section(3, vector(KERNELS.map(() => [0])));
  const exports = section(7, vector(KERNELS.map((k, index) => [...ascii(k.name), 0x00, ...uleb(index)])));
  const code = section(10, vector(KERNELS.map((k) => microKernel(k.rows, k.transposedA))));
  return new Uint8Array([0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, ...types, ...imports, ...functions, ...exports, ...code]);
}

/** The slice of the WebAssembly JS API used here (the project's lib settings carry no DOM types). */
interface WasmMemory {
  readonly buffer: ArrayBufferLike;
  grow(pages: number): number;
}
interface WasmApi {
  Memory: new (descriptor: { initial: number; maximum: number; shared: true }) => WasmMemory;
  Module: new (bytes: Uint8Array) => object;
  Instance: new (module: object, imports: object) => { exports: Record<string, unknown> };
}
const wasm = (globalThis as unknown as { WebAssembly: WasmApi }).WebAssembly;

const PAGE_BYTES = 65536;
/** 4 GiB, all a 32-bit WebAssembly memory can address; a shared memory must name its maximum. */
const MAX_PAGES = 65536;

/**
 * Below this many FLOPs a batch runs on the calling thread: waking the workers costs about as
 * much as ~2 MFLOP of GEMM here.
 */
const MIN_PARALLEL_FLOPS = 8e6;

/**
 * Whether work of `flops` is big enough to split between threads. It depends on the size only,
 * never on the thread count, so a caller that shapes its sums by it (the filter gradient's parts)
 * computes the same bits on any number of threads.
 */
export function worthSplitting(flops: number): boolean {
  return flops >= MIN_PARALLEL_FLOPS;
}

let compiled: object | undefined;

/**
 * GEMM calls queued for GemmWorkspace.runBatch, in groups: the calls of one group run in order on
 * one thread; calls of different groups may run at the same time, so they must not write the
 * same part of C (give each group its own output, or its own accumulator).
 */
export class GemmBatch {
  private calls = new Int32Array(GEMM_CALL_INTS * 256);
  private count = 0;
  private groupEnds: number[] = [];
  private totalFlops = 0;

  /** Queues C += op(A) * B; arguments as GemmWorkspace.gemm's. */
  push(transposedA: boolean, m: number, n: number, k: number, a: number, lda: number, b: number, ldb: number, c: number, ldc: number): void {
    if (m === 0 || n === 0 || k === 0) return;
    if ((this.count + 1) * GEMM_CALL_INTS > this.calls.length) {
      const grown = new Int32Array(this.calls.length * 2);
      grown.set(this.calls);
      this.calls = grown;
    }
    // Field by field: an array literal per call would be garbage on the convolutions' hot path.
    const d = this.calls;
    const at = this.count * GEMM_CALL_INTS;
    d[at] = transposedA ? 1 : 0;
    d[at + 1] = m;
    d[at + 2] = n;
    d[at + 3] = k;
    d[at + 4] = a;
    d[at + 5] = lda;
    d[at + 6] = b;
    d[at + 7] = ldb;
    d[at + 8] = c;
    d[at + 9] = ldc;
    this.count++;
    this.totalFlops += 2 * m * n * k;
  }

  /** Closes the current group (a no-op when it is empty). */
  endGroup(): void {
    if (this.groupEnds.length > 0 ? this.groupEnds[this.groupEnds.length - 1] === this.count : this.count === 0) return;
    this.groupEnds.push(this.count);
  }

  get flops(): number {
    return this.totalFlops;
  }

  /** @internal for GemmWorkspace.runBatch */
  drain(): { calls: Int32Array; count: number; groupEnds: number[] } {
    this.endGroup();
    const drained = { calls: this.calls, count: this.count, groupEnds: this.groupEnds };
    this.groupEnds = [];
    this.count = 0;
    this.totalFlops = 0;
    return drained;
  }
}

/**
 * Scratch space in WebAssembly memory plus the GEMM entry points. Offsets are in floats. One
 * workspace per process is enough: tfjs runs kernels synchronously, one at a time.
 */
export class GemmWorkspace {
  readonly memory: WasmMemory;
  private readonly module: object;
  private readonly kernels: GemmKernels;
  private view: Float32Array;
  private top = 0;
  private wantedThreads: number;
  private pool: GemmThreadPool | undefined;
  /** Why worker threads could not start, once they failed to (the workspace then stays on one). */
  private poolFailure: string | undefined;

  /** `threads`: how many threads runBatch may use (default 1); workers start on first need. */
  constructor(options: { threads?: number } = {}) {
    this.memory = new wasm.Memory({ initial: 16, maximum: MAX_PAGES, shared: true });
    compiled ??= new wasm.Module(gemmModuleBytes());
    this.module = compiled;
    const instance = new wasm.Instance(this.module, { env: { memory: this.memory } });
    this.kernels = instance.exports as unknown as GemmKernels;
    this.view = new Float32Array(this.memory.buffer);
    this.wantedThreads = Math.max(1, Math.floor(options.threads ?? 1));
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

  /** Threads runBatch uses for big batches (1 when worker threads could not start). */
  get threads(): number {
    return this.poolFailure ? 1 : this.wantedThreads;
  }

  /** Groups of batched calls the worker threads have run (0 before they start). */
  get groupsRunByWorkers(): number {
    return this.pool?.groupsRunByWorkers ?? 0;
  }

  /** Why worker threads failed to start, if they did; runBatch then runs on the calling thread. */
  get threadFailure(): string | undefined {
    return this.poolFailure;
  }

  /** Changes the thread count (stopping the current workers); results stay the same to the bit. */
  setThreads(threads: number): void {
    const wanted = Math.max(1, Math.floor(threads));
    if (wanted === this.wantedThreads) return;
    this.pool?.close();
    this.pool = undefined;
    this.poolFailure = undefined;
    this.wantedThreads = wanted;
  }

  /** How many threads a batch of `flops` runs on. */
  threadsFor(flops: number): number {
    return worthSplitting(flops) ? this.threads : 1;
  }

  /**
   * C[m, n] += A[m, k] * B[k, n] (or A^T when `transposedA`: A stored [k, m]), row-major, offsets
   * and leading dimensions in floats.
   */
  gemm(transposedA: boolean, m: number, n: number, k: number, a: number, lda: number, b: number, ldb: number, c: number, ldc: number): void {
    runGemmCall(this.kernels, this.view, transposedA, m, n, k, a, lda, b, ldb, c, ldc);
  }

  /**
   * Runs and empties `batch`, its groups spread over threadsFor(batch.flops) threads. May reserve
   * memory for the call list, so re-read `f32` afterwards.
   */
  runBatch(batch: GemmBatch): void {
    const threads = this.threadsFor(batch.flops);
    const { calls, count, groupEnds } = batch.drain();
    if (count === 0) return;
    const pool = threads > 1 && groupEnds.length > 1 ? this.startPool() : undefined;
    if (!pool) {
      runGemmCalls(this.kernels, this.view, calls, 0, 0, count);
      return;
    }
    // Descriptors and group ends go into the shared memory, where the workers can read them.
    const at = this.reserve(count * GEMM_CALL_INTS + groupEnds.length);
    const ends = at + count * GEMM_CALL_INTS;
    const buffer = this.memory.buffer;
    const ints = new Int32Array(buffer);
    ints.set(calls.subarray(0, count * GEMM_CALL_INTS), at);
    ints.set(groupEnds, ends);
    pool.run(this.kernels, buffer, at, ends, groupEnds.length);
  }

  private startPool(): GemmThreadPool | undefined {
    if (this.pool || this.poolFailure) return this.pool;
    const started = GemmThreadPool.start(this.module, this.memory, this.wantedThreads);
    if ("failure" in started) {
      this.poolFailure = started.failure;
      process.emitWarning(`${started.failure}; the cpu kernels run on one thread`, { code: "PROLEARN_GEMM_THREADS" });
      return undefined;
    }
    this.pool = started;
    return started;
  }
}

let shared: GemmWorkspace | undefined;

/**
 * The process-wide workspace of the training kernels, created on first use with
 * configuredGemmThreads() threads (PROLEARN_CPU_THREADS, default every core up to 16).
 */
export function gemmWorkspace(): GemmWorkspace {
  shared ??= new GemmWorkspace({ threads: configuredGemmThreads() });
  return shared;
}
