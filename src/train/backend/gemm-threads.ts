/**
 * Worker threads that run queued GEMM calls over the same shared WebAssembly memory as the main
 * thread.
 *
 * TensorFlow.js calls kernels synchronously, so the main thread cannot await a worker: it hands
 * each thread a range of calls through a SharedArrayBuffer, runs its own range, and blocks in
 * Atomics.wait until the others are done (about 60 us per round trip here, against milliseconds
 * of work per convolution). The workers are started from source text (`eval`), not from a file,
 * so the same code runs under tsx, from dist/ and inside a bundle.
 */
import os from "node:os";
import { Worker } from "node:worker_threads";
import { EnvironmentError } from "../../errors.js";
import { runGemmCall, runGemmCalls, type GemmKernels } from "./gemm-calls.js";

/** Int32 slots of the control buffer shared with the workers. */
const CONTROL = {
  /** Bumped once per dispatch; workers wait for it to change. */
  generation: 0,
  /** Workers still running the current dispatch. */
  pending: 1,
  /** Workers that have started and instantiated the kernels. */
  ready: 2,
  /** Set by a worker whose calls threw. */
  failed: 3,
  /** Int32 offset of the call descriptors in the memory. */
  descriptors: 4,
  /** Set to make the workers return. */
  stop: 5,
  /** [from, to) call range of thread t at ranges + 2t (thread 0 is the main thread). */
  ranges: 8,
} as const;

/** The most threads a pool starts, and the control buffer's capacity. */
export const MAX_GEMM_THREADS = 64;

/** How long a new pool waits for its workers to start before giving up on threads. */
const START_TIMEOUT_MS = 15_000;

/** The body of every worker thread; self-contained (it runs from its source text). */
function gemmWorkerMain(workerThreads: typeof import("node:worker_threads"), runCalls: typeof runGemmCalls): void {
  const { module, memory, control, layout, thread, generation } = workerThreads.workerData as {
    module: object;
    memory: { buffer: ArrayBufferLike };
    control: SharedArrayBuffer;
    layout: typeof CONTROL;
    thread: number;
    generation: number;
  };
  const wasmApi = (globalThis as unknown as { WebAssembly: { Instance: new (m: object, i: object) => { exports: unknown } } }).WebAssembly;
  const kernels = new wasmApi.Instance(module, { env: { memory } }).exports as GemmKernels;
  const ctrl = new Int32Array(control);
  let seen = generation;
  Atomics.add(ctrl, layout.ready, 1);
  Atomics.notify(ctrl, layout.ready);
  for (;;) {
    while (Atomics.load(ctrl, layout.generation) === seen) Atomics.wait(ctrl, layout.generation, seen);
    seen = Atomics.load(ctrl, layout.generation);
    if (Atomics.load(ctrl, layout.stop) === 1) return;
    const from = ctrl[layout.ranges + 2 * thread]!;
    const to = ctrl[layout.ranges + 2 * thread + 1]!;
    try {
      const buffer = memory.buffer;
      runCalls(kernels, new Float32Array(buffer), new Int32Array(buffer), ctrl[layout.descriptors]!, from, to);
    } catch {
      Atomics.store(ctrl, layout.failed, 1);
    }
    if (Atomics.sub(ctrl, layout.pending, 1) === 1) Atomics.notify(ctrl, layout.pending);
  }
}

// runGemmCall goes in as a declaration under whatever name a bundler gave it, which is the name
// runGemmCalls' body calls; runGemmCalls itself is passed as a value.
const WORKER_SOURCE = [
  '"use strict";',
  runGemmCall.toString(),
  `(${gemmWorkerMain.toString()})(require("node:worker_threads"), (${runGemmCalls.toString()}));`,
].join("\n");

/**
 * Threads the process-wide GEMM uses: `PROLEARN_CPU_THREADS` when set, else every core the
 * process may use (os.availableParallelism), at most 16.
 */
export function configuredGemmThreads(): number {
  const fromEnv = process.env.PROLEARN_CPU_THREADS;
  if (fromEnv !== undefined && fromEnv !== "") {
    const threads = Number(fromEnv);
    if (!Number.isInteger(threads) || threads < 1 || threads > MAX_GEMM_THREADS) {
      throw new EnvironmentError(`PROLEARN_CPU_THREADS must be an integer from 1 to ${MAX_GEMM_THREADS}, got "${fromEnv}"`, { hint: "unset it to use every core" });
    }
    return threads;
  }
  return Math.min(os.availableParallelism(), 16);
}

export class GemmThreadPool {
  private readonly ctrl: Int32Array;
  private readonly workers: Worker[];

  private constructor(ctrl: Int32Array, workers: Worker[]) {
    this.ctrl = ctrl;
    this.workers = workers;
  }

  /** Threads including the main thread. */
  get threads(): number {
    return this.workers.length + 1;
  }

  /**
   * Starts `threads - 1` workers over `memory` and waits until they are ready. Returns the reason
   * instead when they do not start in time (the caller then stays on one thread).
   */
  static start(module: object, memory: object, threads: number): GemmThreadPool | { failure: string } {
    const control = new SharedArrayBuffer(4 * (CONTROL.ranges + 2 * MAX_GEMM_THREADS));
    const ctrl = new Int32Array(control);
    const workers: Worker[] = [];
    try {
      for (let thread = 1; thread < threads; thread++) {
        const worker = new Worker(WORKER_SOURCE, {
          eval: true,
          // No tsx or other loaders in the workers: they run plain JavaScript.
          execArgv: [],
          workerData: { module, memory, control, layout: CONTROL, thread, generation: 0 },
        });
        // Idle workers block in Atomics.wait; they must not keep the process alive.
        worker.unref();
        workers.push(worker);
      }
    } catch (error) {
      for (const worker of workers) void worker.terminate();
      return { failure: `could not start GEMM worker threads: ${(error as Error).message}` };
    }
    const deadline = Date.now() + START_TIMEOUT_MS;
    for (;;) {
      const ready = Atomics.load(ctrl, CONTROL.ready);
      if (ready === workers.length) return new GemmThreadPool(ctrl, workers);
      const left = deadline - Date.now();
      if (left <= 0) break;
      Atomics.wait(ctrl, CONTROL.ready, ready, left);
    }
    for (const worker of workers) void worker.terminate();
    return { failure: `GEMM worker threads did not start within ${START_TIMEOUT_MS / 1000} s` };
  }

  /**
   * Runs calls [ranges[t][0], ranges[t][1]) on thread t (thread 0: this one) and returns when all
   * are done. Descriptors are read from int32 `descriptors` of the shared memory.
   */
  run(kernels: GemmKernels, buffer: ArrayBufferLike, descriptors: number, ranges: Array<[number, number]>): void {
    const ctrl = this.ctrl;
    const workers = this.workers.length;
    ctrl[CONTROL.descriptors] = descriptors;
    for (let thread = 1; thread <= workers; thread++) {
      const [from, to] = ranges[thread] ?? [0, 0];
      ctrl[CONTROL.ranges + 2 * thread] = from;
      ctrl[CONTROL.ranges + 2 * thread + 1] = to;
    }
    Atomics.store(ctrl, CONTROL.failed, 0);
    Atomics.store(ctrl, CONTROL.pending, workers);
    Atomics.add(ctrl, CONTROL.generation, 1);
    Atomics.notify(ctrl, CONTROL.generation);
    let mainError: unknown;
    try {
      const [from, to] = ranges[0] ?? [0, 0];
      runGemmCalls(kernels, new Float32Array(buffer), new Int32Array(buffer), descriptors, from, to);
    } catch (error) {
      mainError = error;
    }
    for (;;) {
      const pending = Atomics.load(ctrl, CONTROL.pending);
      if (pending === 0) break;
      Atomics.wait(ctrl, CONTROL.pending, pending);
    }
    if (mainError) throw mainError;
    if (Atomics.load(ctrl, CONTROL.failed) === 1) throw new Error("a GEMM worker thread failed (a kernel call went outside the workspace memory)");
  }

  /** Makes the workers return; the pool is unusable afterwards. */
  close(): void {
    Atomics.store(this.ctrl, CONTROL.stop, 1);
    Atomics.add(this.ctrl, CONTROL.generation, 1);
    Atomics.notify(this.ctrl, CONTROL.generation);
    this.workers.length = 0;
  }
}

/**
 * Splits groups of calls into at most `threads` contiguous ranges of about equal FLOPs; a group
 * never spans two ranges. `groupEnds[g]` is the call index after group g's last call.
 */
export function partitionGroups(groupEnds: readonly number[], groupFlops: readonly number[], threads: number): Array<[number, number]> {
  const total = groupFlops.reduce((sum, flops) => sum + flops, 0);
  const ranges: Array<[number, number]> = [];
  let from = 0;
  let group = 0;
  let done = 0;
  for (let thread = 0; thread < threads && group < groupEnds.length; thread++) {
    const target = ((thread + 1) * total) / threads;
    // Always take one group, then more while the range stays short of its share.
    done += groupFlops[group]!;
    group++;
    while (group < groupEnds.length && (thread === threads - 1 || done + groupFlops[group]! / 2 <= target)) {
      done += groupFlops[group]!;
      group++;
    }
    const to = groupEnds[group - 1]!;
    ranges.push([from, to]);
    from = to;
  }
  return ranges;
}
