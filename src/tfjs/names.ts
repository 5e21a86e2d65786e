/**
 * The values of every stage's `backend` param, in a module that loads no TensorFlow.js: the
 * stage definitions (and so `prolearn plan`) and the CLI import it, while ./index.js starts the
 * backends.
 */
export const TRAINING_BACKENDS = ["auto", "cpu", "webgpu", "tensorflow"] as const;
export type TrainingBackendRequest = (typeof TRAINING_BACKENDS)[number];
export type TrainingBackendName = Exclude<TrainingBackendRequest, "auto">;

/**
 * What a queue worker must offer for a training stage on this backend: a forced GPU backend
 * needs a `--capabilities gpu` worker; `auto` and `cpu` run on any worker.
 */
export function backendCapabilities(backend: TrainingBackendRequest): readonly "gpu"[] {
  return backend === "webgpu" || backend === "tensorflow" ? ["gpu"] : [];
}
