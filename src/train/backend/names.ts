import type { TRAINING_BACKENDS as STARTABLE_BACKENDS } from "./index.js";

/**
 * The values of every stage's `backend` param, in a module that loads no TensorFlow.js: the
 * stage definitions (and so `prolearn plan`) import it, while ./index.js starts the backends.
 */
export const TRAINING_BACKENDS = ["auto", "cpu", "webgpu", "tensorflow"] as const;
export type TrainingBackendRequest = (typeof TRAINING_BACKENDS)[number];

// Compile-time guard (no runtime import): this list must equal the one ./index.js can start.
type Same<A, B> = [A] extends [B] ? ([B] extends [A] ? true : false) : false;
const sameBackends: Same<typeof TRAINING_BACKENDS, typeof STARTABLE_BACKENDS> = true;
void sameBackends;
