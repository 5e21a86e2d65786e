import * as tf from "@tensorflow/tfjs-core";
import { EnvironmentError } from "../errors.js";
import { registerTrainingGradients } from "./gradients.js";

registerTrainingGradients();

export { tf };

let active: Promise<string> | undefined;
let activeRequest: string | undefined;

/**
 * Selects the TensorFlow.js backend once per process. `auto` prefers the project's fast training
 * kernels (src/train/backend, when present) and falls back to the stock pure-JS `cpu` backend.
 * Returns the backend name in use.
 */
export function initBackend(requested = "auto"): Promise<string> {
  if (active && activeRequest === requested) return active;
  activeRequest = requested;
  active = (async () => {
    const fast = await loadFastBackend();
    if (fast) return fast(requested);
    if (requested !== "auto" && requested !== "cpu") {
      throw new EnvironmentError(`training backend "${requested}" is not available in this build`, { hint: "use backend: cpu (or auto)" });
    }
    await import("@tensorflow/tfjs-backend-cpu");
    if (!(await tf.setBackend("cpu"))) throw new EnvironmentError("the TensorFlow.js cpu backend failed to initialise");
    await tf.ready();
    return tf.getBackend();
  })();
  return active;
}

type FastInit = (requested: string) => Promise<string>;

async function loadFastBackend(): Promise<FastInit | undefined> {
  // The fast kernels live in ./backend (another module of this package); a variable specifier
  // keeps this file compiling while that module is absent.
  const specifier = "./backend/index.js";
  let mod: { initTrainingBackend?: (options: { backend: string }) => Promise<unknown> | unknown };
  try {
    mod = (await import(specifier)) as typeof mod;
  } catch (error) {
    const code = (error as { code?: string }).code;
    if (code === "ERR_MODULE_NOT_FOUND" || code === "MODULE_NOT_FOUND") return undefined;
    throw error;
  }
  const init = mod.initTrainingBackend;
  if (typeof init !== "function") return undefined;
  return async (requested) => {
    await init({ backend: requested });
    await tf.ready();
    return tf.getBackend();
  };
}
