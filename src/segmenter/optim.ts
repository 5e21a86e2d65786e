import * as tf from "@tensorflow/tfjs-core";
import { MODEL_KERNELS, type AdamWAttrs } from "../tfjs/model-kernels.js";

/**
 * Cosine annealing (PyTorch CosineAnnealingLR without restarts, evaluated per optimisation step):
 * lr(t) = minLr + (maxLr - minLr) * (1 + cos(pi * t / totalSteps)) / 2, clamped at t = totalSteps.
 * Stepping per batch rather than per epoch keeps the schedule smooth when a run has few epochs.
 */
export function cosineLearningRate(step: number, totalSteps: number, maxLr: number, minLr: number): number {
  if (totalSteps <= 0) return maxLr;
  const t = Math.min(Math.max(step, 0), totalSteps);
  return minLr + ((maxLr - minLr) * (1 + Math.cos((Math.PI * t) / totalSteps))) / 2;
}

export interface AdamWOptions {
  beta1?: number;
  beta2?: number;
  epsilon?: number;
  weightDecay?: number;
  /**
   * One `ProlearnAdamW` kernel per tensor where the backend has it (cpu, webgpu), else the op
   * sequence below (default true). On cpu both give the same bits.
   */
  fused?: boolean;
}

/**
 * AdamW (Loshchilov & Hutter): Adam moments on the raw gradient, and weight decay applied to the
 * weights directly (p <- p - lr * wd * p), not added to the gradient as tf.train.adam would with
 * an L2 term. Same update order as torch.optim.AdamW: decay, then the Adam step with
 * bias-corrected moments. The state (moments and step count) is plain tensors so checkpoints
 * can save and restore it exactly.
 */
export class AdamW {
  readonly beta1: number;
  readonly beta2: number;
  readonly epsilon: number;
  readonly weightDecay: number;
  readonly fused: boolean;
  step = 0;
  readonly m = new Map<string, tf.Variable>();
  readonly v = new Map<string, tf.Variable>();
  /** Names whose weights are not decayed (biases and normalisation scales/shifts by default). */
  readonly noDecay: (name: string) => boolean;

  constructor(options: AdamWOptions = {}, noDecay: (name: string) => boolean = (name) => /\.(b|ng|nb)$/.test(name)) {
    this.beta1 = options.beta1 ?? 0.9;
    this.beta2 = options.beta2 ?? 0.999;
    this.epsilon = options.epsilon ?? 1e-8;
    this.weightDecay = options.weightDecay ?? 0.01;
    this.fused = options.fused ?? true;
    this.noDecay = noDecay;
  }

  private moments(name: string, variable: tf.Variable): [tf.Variable, tf.Variable] {
    let m = this.m.get(name);
    let v = this.v.get(name);
    if (!m || !v) {
      m = tf.tidy(() => tf.variable(tf.zerosLike(variable), false));
      v = tf.tidy(() => tf.variable(tf.zerosLike(variable), false));
      this.m.set(name, m);
      this.v.set(name, v);
    }
    return [m, v];
  }

  /** Applies one update with learning rate `lr` to every variable that has a gradient. */
  apply(variables: ReadonlyMap<string, tf.Variable>, gradients: Record<string, tf.Tensor>, lr: number): void {
    this.step++;
    const t = this.step;
    const correction1 = 1 - this.beta1 ** t;
    const correction2 = 1 - this.beta2 ** t;
    const fused = this.fused && tf.getKernel(MODEL_KERNELS.adamW, tf.getBackend()) !== undefined;
    for (const [name, variable] of variables) {
      const gradient = gradients[name];
      if (!gradient) continue;
      const [m, v] = this.moments(name, variable);
      if (fused && variable.dtype === "float32" && gradient.dtype === "float32") {
        const attrs: AdamWAttrs = {
          beta1: this.beta1,
          beta2: this.beta2,
          epsilon: this.epsilon,
          lr,
          decay: this.noDecay(name) ? 0 : lr * this.weightDecay,
          correction1,
          correction2,
        };
        tf.tidy(() => {
          const [nextParam, nextM, nextV] = tf
            .engine()
            .runKernel(MODEL_KERNELS.adamW, { param: variable, gradient, m, v } as never, attrs as never) as tf.Tensor[];
          m.assign(nextM!);
          v.assign(nextV!);
          variable.assign(nextParam!);
        });
        continue;
      }
      tf.tidy(() => {
        const mNext = tf.add(tf.mul(m, this.beta1), tf.mul(gradient, 1 - this.beta1));
        const vNext = tf.add(tf.mul(v, this.beta2), tf.mul(tf.square(gradient), 1 - this.beta2));
        m.assign(mNext);
        v.assign(vNext);
        const decay = this.noDecay(name) ? 0 : lr * this.weightDecay;
        const decayed = decay === 0 ? variable : tf.mul(variable, 1 - decay);
        const denominator = tf.add(tf.sqrt(tf.div(vNext, correction2)), this.epsilon);
        const update = tf.mul(tf.div(tf.div(mNext, correction1), denominator), lr);
        variable.assign(tf.sub(decayed, update));
      });
    }
  }

  dispose(): void {
    for (const t of this.m.values()) t.dispose();
    for (const t of this.v.values()) t.dispose();
    this.m.clear();
    this.v.clear();
  }
}
