import * as tf from "@tensorflow/tfjs-core";
import { initTrainingBackend, TRAINING_BACKENDS, type TrainingBackendInfo, type TrainingBackendRequest } from "./backend/index.js";
import { registerModelKernels } from "./backend/model-kernels.js";
import { registerTrainingGradients } from "./gradients.js";

export { tf, TRAINING_BACKENDS, type TrainingBackendRequest };

// Attention, gather and softmax gradients (the backend registers the convolutional ones).
registerTrainingGradients();
// Normalisation, attention, up-sampling and embedding-gradient kernels for the cpu backend.
registerModelKernels();

/**
 * Starts the training backend (once per process; see src/train/backend) and makes sure every
 * gradient the segmenter needs is registered. `auto` picks libtensorflow or a real GPU when the
 * machine has one, else the cpu backend with the fast convolution kernels.
 */
export async function initBackend(requested: TrainingBackendRequest = "auto", log?: (line: string) => void): Promise<TrainingBackendInfo> {
  const info = await initTrainingBackend({ backend: requested, log });
  registerTrainingGradients();
  registerModelKernels();
  return info;
}
