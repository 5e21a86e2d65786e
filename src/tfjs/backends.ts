/**
 * Chooses and starts the TensorFlow.js backend that training runs on.
 *
 * Order for `auto`: `tensorflow` (libtensorflow through @tensorflow/tfjs-node-gpu or
 * @tensorflow/tfjs-node, when the user's machine could install one), then `webgpu` (Dawn through
 * the `webgpu` npm package) when it finds a real GPU adapter, then `cpu` with this package's
 * im2col + SIMD GEMM convolution kernels. All GPU packages are optional: their absence only
 * removes a choice. Forcing a backend that cannot start throws EnvironmentError saying why.
 */
import { existsSync, readdirSync } from "node:fs";
import os from "node:os";
import * as tf from "@tensorflow/tfjs-core";
import "@tensorflow/tfjs-backend-cpu";
import { EnvironmentError } from "../errors.js";
import { installFastCpuKernels, fastCpuKernelsInstalled } from "./cpu-kernels.js";
import { registerTrainingGradients } from "./gradients.js";
import { gemmWorkspace } from "../linalg/gemm.js";
import { installFastWebgpuKernels } from "./webgpu-kernels.js";
import { TRAINING_BACKENDS, type TrainingBackendName, type TrainingBackendRequest } from "./names.js";

export { installFastCpuKernels, uninstallFastCpuKernels, fastCpuKernelsInstalled, FAST_CPU_KERNELS } from "./cpu-kernels.js";
export { installFastWebgpuKernels, uninstallFastWebgpuKernels, fastWebgpuKernelsInstalled, planFilterGradient } from "./webgpu-kernels.js";
export { registerTrainingGradients } from "./gradients.js";
export { conv2dForward, conv2dBackpropInput, conv2dBackpropFilter, type ConvGeometry } from "./conv.js";
export { GemmWorkspace, GemmBatch, gemmWorkspace } from "../linalg/gemm.js";
export { configuredGemmThreads } from "../linalg/gemm-threads.js";

export { TRAINING_BACKENDS, type TrainingBackendRequest, type TrainingBackendName } from "./names.js";

export interface TrainingBackendInfo {
  backend: TrainingBackendName;
  /** What computes: the GPU adapter, the libtensorflow package, or the CPU model. */
  adapter: string;
  /**
   * True when the backend runs this package's kernels: on cpu the convolutions and matrix
   * products (src/tfjs/cpu-kernels.ts), on webgpu the convolution gradients, AdamW and
   * the normalisations (webgpu-kernels.ts, webgpu-norm.ts).
   */
  fastKernels: boolean;
  /** cpu: threads the convolution GEMMs use (PROLEARN_CPU_THREADS, default every core up to 16). */
  threads?: number;
  /** webgpu on a software (or Dawn's null) adapter: only a forced `webgpu` starts on one. */
  softwareAdapter?: true;
}

/** The optional packages a GPU backend needs; none is a dependency of the core library. */
export type OptionalBackendPackage = "webgpu" | "@tensorflow/tfjs-backend-webgpu" | "@tensorflow/tfjs-node-gpu" | "@tensorflow/tfjs-node";

export interface TrainingBackendOptions {
  backend?: TrainingBackendRequest;
  /** Receives one line naming the backend that runs (and why others were skipped, for auto). */
  log?: (line: string) => void;
  /**
   * How to load an optional package, for bundles (bench/train-gpu.sh) whose bundler must see a
   * literal import. By default each is imported by name from node_modules at run time.
   */
  loaders?: Partial<Record<OptionalBackendPackage, () => Promise<unknown>>>;
  /**
   * Dawn toggles for the `webgpu` backend (`webgpu.create`), default: the comma-separated
   * `PROLEARN_DAWN_TOGGLES`. `backend=null` selects Dawn's null adapter, which runs the whole
   * WebGPU API but computes nothing (results are garbage): it checks the webgpu code path on a
   * machine without a GPU (test/train/webgpu-null.test.ts). Like any software adapter, only a
   * forced `webgpu` starts on it.
   */
  dawnToggles?: string[];
}

/** Packages that provide the `tensorflow` backend, most capable first. */
const TENSORFLOW_PACKAGES = ["@tensorflow/tfjs-node-gpu", "@tensorflow/tfjs-node"] as const;
const SOFTWARE_ADAPTER = /swiftshader|llvmpipe|lavapipe|softpipe|software|null/i;

let active: TrainingBackendInfo | undefined;
let loaders: TrainingBackendOptions["loaders"] = {};
let pending: Promise<TrainingBackendInfo> | undefined;
let dawnToggles: string[] = [];

/**
 * Starts the requested backend (default `auto`) once per process and returns what runs.
 * Later calls with `auto` or the active backend's name return the same answer without work, so
 * any module may call it before touching tensors.
 */
export async function initTrainingBackend(options: TrainingBackendOptions = {}): Promise<TrainingBackendInfo> {
  const requested = options.backend ?? "auto";
  if (!(TRAINING_BACKENDS as readonly string[]).includes(requested)) {
    throw new EnvironmentError(`unknown training backend "${String(requested)}"`, { hint: `use one of ${TRAINING_BACKENDS.join(", ")}` });
  }
  registerTrainingGradients();
  while (pending) await pending.catch(() => undefined);
  if (active && (requested === "auto" || requested === active.backend) && tf.getBackend() === active.backend) return active;
  const log = options.log ?? (() => {});
  applyOptions(options);
  pending = (requested === "auto" ? startAuto(log) : startForced(requested, log)).finally(() => {
    pending = undefined;
  });
  active = await pending;
  log(`training backend: ${active.backend} (${active.adapter})${active.backend === "cpu" ? `, ${cpuKernelsLabel(active)}` : ""}`);
  return active;
}

export interface BackendProbe {
  backend: TrainingBackendName;
  /** `software`: webgpu started, but on a software adapter (auto skips it; forcing it works). */
  status: "ok" | "software" | "unavailable";
  adapter?: string;
  reason?: string;
  hint?: string;
}

/**
 * Tries every backend in `auto`'s order and says which start, on what, and why the others do
 * not; `auto` is what initTrainingBackend would pick. For `prolearn backends`, a one-shot
 * command: it leaves the cpu backend running and initTrainingBackend's memo untouched.
 */
export async function probeTrainingBackends(
  options: Pick<TrainingBackendOptions, "loaders" | "dawnToggles"> = {},
): Promise<{ probes: BackendProbe[]; auto: TrainingBackendName }> {
  registerTrainingGradients();
  applyOptions(options);
  const probe = async (backend: TrainingBackendName, start: () => Promise<TrainingBackendInfo>): Promise<BackendProbe> => {
    try {
      const info = await start();
      if (info.softwareAdapter)
        return { backend, status: "software", adapter: info.adapter, reason: "a software adapter: slower than the cpu backend, so auto skips it" };
      return { backend, status: "ok", adapter: info.adapter };
    } catch (error) {
      const e = error as EnvironmentError;
      return { backend, status: "unavailable", reason: e.message.replace(/^\w+ backend (unavailable|not probed): /, ""), ...(e.hint ? { hint: e.hint } : {}) };
    }
  };
  const tensorflow = await probe("tensorflow", startTensorflow);
  let webgpu: BackendProbe;
  if (!gpuDeviceVisible() && !dawnToggles.length) {
    webgpu = {
      backend: "webgpu",
      status: "unavailable",
      reason: "no GPU device (/dev/nvidia*, /dev/kfd, /dev/dri/renderD*) on this machine, so Dawn was not probed",
      hint: "--backend webgpu probes Dawn anyway (a software Vulkan driver works, slowly: docs/backends.md)",
    };
  } else {
    webgpu = await probe("webgpu", () => startWebgpu({ acceptSoftware: true }));
  }
  const cpu = await probe("cpu", startCpu);
  const auto = tensorflow.status === "ok" ? "tensorflow" : webgpu.status === "ok" ? "webgpu" : "cpu";
  const cpuInfo = { fastKernels: fastCpuKernelsInstalled(), threads: gemmWorkspace().threads };
  return { probes: [tensorflow, webgpu, cpu.status === "ok" ? { ...cpu, adapter: `${cpu.adapter}, ${cpuKernelsLabel(cpuInfo)}` } : cpu], auto };
}

function applyOptions(options: Pick<TrainingBackendOptions, "loaders" | "dawnToggles">): void {
  loaders = options.loaders ?? loaders;
  dawnToggles =
    options.dawnToggles ??
    (process.env.PROLEARN_DAWN_TOGGLES ?? "")
      .split(",")
      .map((t) => t.trim())
      .filter(Boolean);
}

/** The backend started by initTrainingBackend, if any. */
export function activeTrainingBackend(): TrainingBackendInfo | undefined {
  return active;
}

/**
 * Whether this machine shows a GPU at all. On Linux a GPU has a device node; without one, probing
 * Dawn only prints Vulkan and XDG errors of its own to stderr before finding nothing, so `auto`
 * skips it. Other platforms are probed (Metal, D3D), and `--backend webgpu` always probes.
 */
function gpuDeviceVisible(): boolean {
  if (process.platform !== "linux") return true;
  if (existsSync("/dev/nvidia0") || existsSync("/dev/kfd")) return true;
  try {
    return readdirSync("/dev/dri").some((name) => name.startsWith("renderD"));
  } catch {
    return false;
  }
}

async function startAuto(log: (line: string) => void): Promise<TrainingBackendInfo> {
  const probeWebgpu = async () => {
    if (!gpuDeviceVisible()) throw new EnvironmentError("webgpu backend not probed: no GPU device (/dev/nvidia*, /dev/kfd, /dev/dri/renderD*) on this machine");
    return startWebgpu({ acceptSoftware: false });
  };
  for (const start of [startTensorflow, probeWebgpu]) {
    try {
      return await start();
    } catch (error) {
      log(`skipped: ${(error as Error).message}`);
    }
  }
  return startCpu();
}

async function startForced(name: TrainingBackendName, log: (line: string) => void): Promise<TrainingBackendInfo> {
  try {
    if (name === "tensorflow") return await startTensorflow();
    if (name === "webgpu") return await startWebgpu({ acceptSoftware: true, log });
    return await startCpu();
  } catch (error) {
    if (error instanceof EnvironmentError) throw error;
    throw new EnvironmentError(`training backend "${name}" failed to start: ${(error as Error).message}`, { cause: error, hint: "use --backend auto or cpu" });
  }
}

async function startCpu(): Promise<TrainingBackendInfo> {
  installFastCpuKernels();
  if (!(await tf.setBackend("cpu"))) throw new EnvironmentError("the TensorFlow.js cpu backend failed to initialise");
  await tf.ready();
  // The cpu backend prints an "install tfjs-node" banner on first use; the choice was made here
  // on purpose (docs/backends.md says when tfjs-node helps), so the banner is only noise.
  const cpu = tf.backend() as unknown as { firstUse?: boolean };
  if (typeof cpu.firstUse === "boolean") cpu.firstUse = false;
  const fastKernels = fastCpuKernelsInstalled();
  return { backend: "cpu", adapter: cpuModel(), fastKernels, ...(fastKernels ? { threads: gemmWorkspace().threads } : {}) };
}

function cpuKernelsLabel(info: Pick<TrainingBackendInfo, "fastKernels" | "threads">): string {
  if (!info.fastKernels) return "stock kernels";
  const threads = info.threads ?? 1;
  return `fast convolution kernels on ${threads} thread${threads === 1 ? "" : "s"}`;
}

function cpuModel(): string {
  const cpus = os.cpus();
  return `${cpus[0]?.model?.trim() || "cpu"} x${cpus.length}`;
}

/** Dynamic import by a variable name, so bundlers and tsc do not require optional packages. */
async function importOptional(name: OptionalBackendPackage): Promise<unknown> {
  const load = loaders?.[name];
  if (load) return load();
  const specifier: string = name;
  return import(specifier);
}

function isMissingModule(error: unknown): boolean {
  const code = (error as { code?: string }).code;
  return code === "ERR_MODULE_NOT_FOUND" || code === "MODULE_NOT_FOUND";
}

async function startTensorflow(): Promise<TrainingBackendInfo> {
  const failures: string[] = [];
  for (const name of TENSORFLOW_PACKAGES) {
    try {
      await importOptional(name);
    } catch (error) {
      failures.push(isMissingModule(error) ? `${name} is not installed` : `${name} failed to load: ${(error as Error).message}`);
      continue;
    }
    if (!(await tf.setBackend("tensorflow"))) {
      failures.push(`${name} loaded but the "tensorflow" backend did not initialise`);
      continue;
    }
    await tf.ready();
    return { backend: "tensorflow", adapter: `libtensorflow via ${name}`, fastKernels: false };
  }
  throw new EnvironmentError(`tensorflow backend unavailable: ${failures.join("; ")}`, {
    hint: "on a machine with internet: npm install @tensorflow/tfjs-node-gpu@4.22.0 (CUDA 11.2 + cuDNN 8) or @tensorflow/tfjs-node@4.22.0; see docs/backends.md",
  });
}

interface GpuAdapterLike {
  info?: { vendor?: string; architecture?: string; device?: string; description?: string };
  isFallbackAdapter?: boolean;
}
interface GpuLike {
  requestAdapter(options?: { powerPreference?: string }): Promise<GpuAdapterLike | null>;
}

function describeAdapter(adapter: GpuAdapterLike): string {
  const info = adapter.info ?? {};
  const parts = [info.vendor, info.architecture, info.device, info.description].filter((s): s is string => Boolean(s?.trim()));
  return parts.length ? [...new Set(parts)].join(" / ") : "unnamed adapter";
}

/**
 * `auto` refuses software adapters (slower than the cpu path); a forced `webgpu` takes whatever
 * Dawn offers and says so, since the user asked for this backend: a software Vulkan such as
 * lavapipe is how the webgpu path is checked on machines without a GPU.
 */
async function startWebgpu(options: { acceptSoftware: boolean; log?: (line: string) => void }): Promise<TrainingBackendInfo> {
  let webgpu: { create: (flags: string[]) => GpuLike; globals: Record<string, unknown> };
  try {
    webgpu = (await importOptional("webgpu")) as typeof webgpu;
  } catch (error) {
    throw new EnvironmentError(
      isMissingModule(error)
        ? "webgpu backend unavailable: the optional package `webgpu` is not installed"
        : `webgpu backend unavailable: \`webgpu\` failed to load: ${(error as Error).message}`,
      {
        hint: "npm install webgpu@0.6.2 @tensorflow/tfjs-backend-webgpu@4.22.0 (optional dependencies of prolearn)",
      },
    );
  }
  const g = globalThis as unknown as { navigator?: { gpu?: GpuLike } };
  if (!g.navigator?.gpu) {
    for (const [key, value] of Object.entries(webgpu.globals)) if (!(key in globalThis)) (globalThis as Record<string, unknown>)[key] = value;
    const gpu = webgpu.create(dawnToggles);
    if (g.navigator) Object.defineProperty(g.navigator, "gpu", { value: gpu, configurable: true });
    else Object.defineProperty(globalThis, "navigator", { value: { gpu }, configurable: true, writable: true });
  }
  const adapter = await g.navigator!.gpu!.requestAdapter({ powerPreference: "high-performance" });
  if (!adapter) {
    throw new EnvironmentError("webgpu backend unavailable: Dawn found no GPU adapter", {
      hint: "Dawn needs a Vulkan driver: for a GPU, the vendor's (NVIDIA: the proprietary driver's Vulkan ICD); for a slow software check, Mesa >= 23 lavapipe (scripts/software-vulkan.sh); see docs/backends.md",
    });
  }
  const nullAdapterRequested = dawnToggles.includes("backend=null");
  const name = nullAdapterRequested ? "Dawn null adapter (computes nothing: an API check, not results)" : describeAdapter(adapter);
  const software = nullAdapterRequested || adapter.isFallbackAdapter === true || SOFTWARE_ADAPTER.test(name);
  if (software) {
    if (!options.acceptSoftware) {
      throw new EnvironmentError(`webgpu backend unavailable: only a software adapter (${name}) was found`, {
        hint: "a software adapter is slower than the cpu backend; use --backend cpu, or force --backend webgpu",
      });
    }
    options.log?.(`warning: webgpu runs on a software adapter (${name}): expect it to be slower than --backend cpu`);
  }
  try {
    await importOptional("@tensorflow/tfjs-backend-webgpu");
  } catch (error) {
    throw new EnvironmentError(
      `webgpu backend unavailable: @tensorflow/tfjs-backend-webgpu ${isMissingModule(error) ? "is not installed" : `failed to load: ${(error as Error).message}`}`,
      {
        hint: "npm install @tensorflow/tfjs-backend-webgpu@4.22.0",
      },
    );
  }
  if (!(await tf.setBackend("webgpu"))) throw new EnvironmentError(`webgpu backend did not initialise on adapter ${name}`);
  await tf.ready();
  installFastWebgpuKernels();
  return { backend: "webgpu", adapter: name, fastKernels: true, ...(software ? { softwareAdapter: true as const } : {}) };
}
