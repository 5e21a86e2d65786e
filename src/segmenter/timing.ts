/**
 * Times training steps of the ProLearn segmenter itself (src/segmenter/model.ts with PSA guidance:
 * convs, instance norm, cross-attention to the guidance tokens, Dice + BCE, AdamW), the network
 * the `train` stage runs, with the train stage's default architecture unless told otherwise.
 * `prolearn bench train --model segmenter` and the GPU check use it to say what a real training
 * step costs on a backend; the reference U-Net (reference-unet.ts) is the one to compare with
 * PyTorch.
 */
import { timeTrainingSteps, type TrainingStepTiming } from "../tfjs/reference-unet.js";
import { segmenterForward, type Batch } from "./guidance.js";
import { diceBceLoss, disposeParams, initParams, trainableVariables, type ModelConfig } from "./model.js";
import { AdamW } from "./optim.js";
import { deriveSeed, mulberry32, normalArray } from "./prng.js";
import { tf } from "./runtime.js";

export interface SegmenterTimingOptions {
  size: number;
  batch: number;
  steps: number;
  warmup?: number;
  /** Defaults: the train stage's (32 and 4). */
  baseChannels?: number;
  depth?: number;
  channels?: 1 | 3;
  seed?: number;
  /** Profile one extra step's kernels (`profileTrainingStep`). */
  profile?: boolean;
}

/** The train stage's PSA defaults, with a BiomedCLIP-sized (512) embedding and 16 prototypes. */
export function segmenterTimingConfig(options: Pick<SegmenterTimingOptions, "size" | "baseChannels" | "depth" | "channels">): ModelConfig {
  return {
    net: {
      imageSize: options.size,
      inChannels: options.channels ?? 1,
      baseChannels: options.baseChannels ?? 32,
      depth: options.depth ?? 4,
      heads: 4,
      tokenDim: 64,
    },
    guidance: { kind: "psa", embeddingDim: 512, prototypes: 16, topK: 3, temperature: 0.07, guidanceTokens: 4, tokenDim: 64 },
  };
}

export async function timeSegmenterTraining(options: SegmenterTimingOptions): Promise<TrainingStepTiming & { config: ModelConfig }> {
  const config = segmenterTimingConfig(options);
  if (config.guidance.kind !== "psa") throw new Error("unreachable");
  const { prototypes, embeddingDim, topK } = config.guidance;
  const seed = options.seed ?? 0;
  const random = mulberry32(deriveSeed(seed, "segmenter-timing"));
  const store = initParams(config, seed, {
    "psa.query": normalArray(random, prototypes * embeddingDim, 1),
    "psa.response": normalArray(random, prototypes * embeddingDim, 1),
  });
  const variables = trainableVariables(store);
  const optimizer = new AdamW();
  const pixels = options.batch * options.size * options.size;
  const batch: Batch = {
    size: options.batch,
    images: Float32Array.from({ length: pixels * config.net.inChannels }, () => random()),
    masks: Float32Array.from({ length: pixels }, () => (random() < 0.3 ? 1 : 0)),
    guidance: {
      kind: "psa",
      indices: Int32Array.from({ length: options.batch * topK }, () => Math.floor(random() * prototypes)),
      weights: new Float32Array(options.batch * topK).fill(1 / topK),
    },
  };
  try {
    const timing = await timeTrainingSteps(
      async () => {
        const { value, grads } = tf.variableGrads(
          () => diceBceLoss(segmenterForward(store, config, batch).logits, tf.tensor4d(batch.masks!, [batch.size, options.size, options.size, 1])),
          [...variables.values()],
        );
        const named: Record<string, tf.Tensor> = {};
        for (const [name, variable] of variables) if (grads[variable.name]) named[name] = grads[variable.name]!;
        optimizer.apply(variables, named, 1e-4);
        const loss = (await value.data())[0]!;
        value.dispose();
        Object.values(grads).forEach((g) => g.dispose());
        return loss;
      },
      { steps: options.steps, warmup: options.warmup ?? 1, profile: options.profile },
    );
    const params = [...store.values()].reduce((n, entry) => n + entry.variable.size, 0);
    return { ...timing, params, config };
  } finally {
    optimizer.dispose();
    disposeParams(store);
  }
}
