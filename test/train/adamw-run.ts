import { AdamW } from "../../src/segmenter/optim.js";
import { tf } from "../../src/segmenter/runtime.js";

export interface AdamWRun {
  shapes: Record<string, number[]>;
  initial: Record<string, Float32Array>;
  /** One gradient per parameter name for each step. */
  gradientsPerStep: Array<Record<string, Float32Array>>;
  /** Learning rate of step `step` (0-based). */
  lr: (step: number) => number;
  fused?: boolean;
  /** Runs each step's update (default: just calls it); tests wrap it, e.g. in tf.profile. */
  eachStep?: (apply: () => void) => Promise<void>;
}

/**
 * Trains fresh variables with AdamW (weight decay 0.05) on given gradients on the active backend
 * and reads back each parameter, `name/m` and `name/v`. Everything it makes is disposed.
 */
export async function runAdamW(run: AdamWRun): Promise<Map<string, Float32Array>> {
  const variables = new Map(Object.entries(run.shapes).map(([name, shape]) => [name, tf.tidy(() => tf.variable(tf.tensor(run.initial[name]!, shape)))]));
  const optimizer = new AdamW({ weightDecay: 0.05, fused: run.fused });
  for (const [step, gradients] of run.gradientsPerStep.entries()) {
    const tensors = Object.fromEntries(Object.entries(gradients).map(([name, values]) => [name, tf.tensor(values, run.shapes[name])]));
    const apply = () => optimizer.apply(variables, tensors, run.lr(step));
    await (run.eachStep ? run.eachStep(apply) : Promise.resolve(apply()));
    Object.values(tensors).forEach((t) => t.dispose());
  }
  const out = new Map<string, Float32Array>();
  for (const [name, variable] of variables) {
    out.set(name, Float32Array.from(await variable.data()));
    out.set(`${name}/m`, Float32Array.from(await optimizer.m.get(name)!.data()));
    out.set(`${name}/v`, Float32Array.from(await optimizer.v.get(name)!.data()));
    variable.dispose();
  }
  optimizer.dispose();
  return out;
}
