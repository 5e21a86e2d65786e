/**
 * Worker threads that run queued GEMM calls over the same shared WebAssembly memory as the main
 * thread.
 *
 * TensorFlow.js calls kernels synchronously, so the main thread cannot await a worker: it wakes
 * the workers through a SharedArrayBuffer, takes groups of calls from a shared counter like
 * them, and blocks in Atomics.wait until the others are done (about 60 us per round trip here,
 * against milliseconds of work per convolution). Taking groups from a counter, rather than
 * splitting them up front, keeps a worker that wakes late from holding everyone up; results do
 * not depend on which thread ran a group, since groups write disjoint outputs.
 *
 * The workers are started from source text (`eval`), not from a file, so the same code runs
 * under tsx, from dist/ and inside a bundle.
 */
import os from "node:os";
import { Worker } from "node:worker_threads";
import { EnvironmentError } from "../errors.js";
import { runGemmCall, runGemmCalls, runGemmGroups, type GemmKernels } from "./gemm-calls.js";

/** Int32 slots of the control buffer shared with the workers. */
const CONTROL = {
  /** Bumped once per dispatch; workers wait for it to change. */
  generation: 0,
  /**
   * Workers inside the current dispatch, plus CLOSED once the calling thread has run out of
   * groups: a worker joins only an open dispatch, so the calling thread never waits for one that
   * has not woken up yet, only for those still running a group.
   */
  active: 1,
  /** Workers that have started and instantiated the kernels. */
  ready: 2,
  /** Set by a worker whose calls threw. */
  failed: 3,
  /** Int32 offset of the call descriptors in the memory. */
  descriptors: 4,
  /** Set to make the workers return. */
  stop: 5,
  /** Int32 offset of the group ends (one per group) in the memory. */
  groupEnds: 6,
  /** How many groups the current dispatch has. */
  groupCount: 7,
  /** The next group to take. */
  next: 8,
  /** Groups the workers have run, over the pool's life. */
  workerGroups: 9,
} as const;

/** The `active` bit that closes a dispatch to late workers. */
const CLOSED = 1 << 30;

/** The most threads a pool starts. */
export const MAX_GEMM_THREADS = 64;

/** The default thread count's cap: the filter gradient splits into 16 parts, so more idle there. */
const DEFAULT_MAX_THREADS = 16;

/** How long a new pool waits for its workers to start before giving up on threads. */
const START_TIMEOUT_MS = 15_000;

/** The body of every worker thread; self-contained (it runs from its source text). */
function gemmWorkerMain(workerThreads: typeof import("node:worker_threads"), runGroups: typeof runGemmGroups): void {
  const { module, memory, control, layout, closed, generation } = workerThreads.workerData as {
    module: object;
    memory: { buffer: ArrayBufferLike };
    control: SharedArrayBuffer;
    layout: typeof CONTROL;
    closed: number;
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
    let active = Atomics.load(ctrl, layout.active);
    while ((active & closed) === 0) {
      const was = Atomics.compareExchange(ctrl, layout.active, active, active + 1);
      if (was === active) break;
      active = was;
    }
    // Woke too late: the calling thread has finished this dispatch without us.
    if ((active & closed) !== 0) continue;
    try {
      const buffer = memory.buffer;
      const ran = runGroups(
        kernels,
        new Float32Array(buffer),
        new Int32Array(buffer),
        ctrl,
        layout.next,
        ctrl[layout.descriptors]!,
        ctrl[layout.groupEnds]!,
        ctrl[layout.groupCount]!,
      );
      Atomics.add(ctrl, layout.workerGroups, ran);
    } catch {
      Atomics.store(ctrl, layout.failed, 1);
    }
    if (Atomics.sub(ctrl, layout.active, 1) === (closed | 1)) Atomics.notify(ctrl, layout.active);
  }
}

// runGemmCall and runGemmCalls go in as declarations under whatever names a bundler gave them,
// which are the names their callers' bodies use; runGemmGroups itself is passed as a value.
const WORKER_SOURCE = [
  '"use strict";',
  runGemmCall.toString(),
  runGemmCalls.toString(),
  `(${gemmWorkerMain.toString()})(require("node:worker_threads"), (${runGemmGroups.toString()}));`,
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
      throw new EnvironmentError(`PROLEARN_CPU_THREADS must be an integer from 1 to ${MAX_GEMM_THREADS}, got "${fromEnv}"`, {
        hint: "unset it to use every core",
      });
    }
    return threads;
  }
  return Math.min(os.availableParallelism(), DEFAULT_MAX_THREADS);
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

  /** Groups of calls the worker threads (not the calling thread) have run so far. */
  get groupsRunByWorkers(): number {
    return Atomics.load(this.ctrl, CONTROL.workerGroups);
  }

  /**
   * Starts `threads - 1` workers over `memory` and waits until they are ready. Returns the reason
   * instead when they do not start in time (the caller then stays on one thread).
   */
  static start(module: object, memory: object, threads: number): GemmThreadPool | { failure: string } {
    const control = new SharedArrayBuffer(4 * (CONTROL.workerGroups + 1));
    const ctrl = new Int32Array(control);
    const workers: Worker[] = [];
    try {
      for (let thread = 1; thread < threads; thread++) {
        const worker = new Worker(WORKER_SOURCE, {
          eval: true,
          // No tsx or other loaders in the workers: they run plain JavaScript.
          execArgv: [],
          workerData: { module, memory, control, layout: CONTROL, closed: CLOSED, generation: 0 },
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
   * Runs `groupCount` groups of calls on every thread, this one included, and returns when all
   * are done. Descriptors and group ends are read from those int32 offsets of the shared memory.
   */
  run(kernels: GemmKernels, buffer: ArrayBufferLike, descriptors: number, groupEnds: number, groupCount: number): void {
    const ctrl = this.ctrl;
    ctrl[CONTROL.descriptors] = descriptors;
    ctrl[CONTROL.groupEnds] = groupEnds;
    ctrl[CONTROL.groupCount] = groupCount;
    Atomics.store(ctrl, CONTROL.next, 0);
    Atomics.store(ctrl, CONTROL.failed, 0);
    // Open the dispatch only once everything a joining worker reads is in place.
    Atomics.store(ctrl, CONTROL.active, 0);
    Atomics.add(ctrl, CONTROL.generation, 1);
    Atomics.notify(ctrl, CONTROL.generation);
    let mainError: unknown;
    try {
      runGemmGroups(kernels, new Float32Array(buffer), new Int32Array(buffer), ctrl, CONTROL.next, descriptors, groupEnds, groupCount);
    } catch (error) {
      mainError = error;
      // Stop the workers from taking more groups.
      Atomics.store(ctrl, CONTROL.next, groupCount);
    }
    Atomics.or(ctrl, CONTROL.active, CLOSED);
    for (;;) {
      const active = Atomics.load(ctrl, CONTROL.active);
      if (active === CLOSED) break;
      Atomics.wait(ctrl, CONTROL.active, active);
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
