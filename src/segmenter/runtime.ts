import * as tf from "@tensorflow/tfjs-core";
import { initTrainingBackend, TRAINING_BACKENDS, type TrainingBackendInfo, type TrainingBackendRequest } from "../tfjs/backends.js";
import { registerModelKernels } from "../tfjs/model-kernels.js";
import { registerTrainingGradients } from "../tfjs/gradients.js";

export { tf, TRAINING_BACKENDS, type TrainingBackendRequest };

// Every gradient the segmenter trains through (src/tfjs/gradients.ts).
registerTrainingGradients();
// Normalisation, attention, up-sampling and embedding-gradient kernels for the cpu backend.
registerModelKernels();

/**
 * Starts the training backend (once per process; see src/tfjs) and makes sure every
 * gradient the segmenter needs is registered. `auto` picks libtensorflow or a real GPU when the
 * machine has one, else the cpu backend with the fast convolution kernels.
 */
export async function initBackend(requested: TrainingBackendRequest = "auto", log?: (line: string) => void): Promise<TrainingBackendInfo> {
  const info = await initTrainingBackend({ backend: requested, log });
  registerTrainingGradients();
  registerModelKernels();
  return info;
}

/**
 * What computed a training run, for stage summaries (the catalog and the run report): the
 * backend, its adapter (GPU or CPU model) and, on the cpu backend, the GEMM thread count (it sets
 * the speed; the weights are the same for any count).
 */
export function computedOn(info: TrainingBackendInfo): { backend: TrainingBackendInfo["backend"]; adapter: string; cpuThreads?: number } {
  return { backend: info.backend, adapter: info.adapter, ...(info.threads !== undefined ? { cpuThreads: info.threads } : {}) };
}
