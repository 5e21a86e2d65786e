/**
 * One optimisation step of the language-guided U-Net (src/train/model.ts: convs, instance norm,
 * cross-attention over report tokens, Dice + BCE, AdamW) on the cpu backend, with this package's
 * fast convolution kernels and with the stock tfjs kernels, in the same run.
 * Usage: node --import tsx bench/train-step.ts [imageSize=32] [baseChannels=8] [batch=4] [steps=3]
 */
import { installFastCpuKernels, uninstallFastCpuKernels } from "../src/train/backend/index.js";
import { segmenterForward, type Batch } from "../src/train/guidance.js";
import { diceBceLoss, initParams, trainableVariables, type ModelConfig } from "../src/train/model.js";
import { AdamW } from "../src/train/optim.js";
import { initBackend, tf } from "../src/train/runtime.js";

const [size, base, batchSize, steps] = [32, 8, 4, 3].map((d, i) => Number(process.argv[2 + i] ?? d)) as [number, number, number, number];
await initBackend("cpu");
const tokens = 32;
const config: ModelConfig = {
  net: { imageSize: size, inChannels: 1, baseChannels: base, depth: 4, heads: 4, tokenDim: 32 },
  guidance: { kind: "vocab", vocab: Array.from({ length: 64 }, (_, i) => `w${i}`), tokenDim: 32, maxTokens: tokens },
};
const batch: Batch = {
  size: batchSize,
  images: Float32Array.from({ length: batchSize * size * size }, (_, i) => ((i * 7919) % 255) / 255),
  masks: Float32Array.from({ length: batchSize * size * size }, (_, i) => ((i * 31) % 7 < 2 ? 1 : 0)),
  guidance: { kind: "vocab", ids: Int32Array.from({ length: batchSize * tokens }, (_, i) => (i % tokens < 20 ? 2 + (i % 60) : 0)) },
};

function timeSteps(): number {
  const store = initParams(config, 1);
  const variables = trainableVariables(store);
  const optimizer = new AdamW();
  const times: number[] = [];
  for (let s = 0; s < steps + 1; s++) {
    const started = performance.now();
    const { value, grads } = tf.variableGrads(() => diceBceLoss(segmenterForward(store, config, batch).logits, tf.tensor4d(batch.masks!, [batchSize, size, size, 1])), [...variables.values()]);
    const named: Record<string, tf.Tensor> = {};
    for (const [name, v] of variables) named[name] = grads[v.name]!;
    optimizer.apply(variables, named, 1e-3);
    value.dataSync();
    value.dispose();
    Object.values(grads).forEach((g) => g.dispose());
    if (s > 0) times.push(performance.now() - started); // the first step warms up
  }
  optimizer.dispose();
  for (const e of store.values()) e.variable.dispose();
  return times.sort((a, b) => a - b)[Math.floor(times.length / 2)]!;
}

const fast = timeSteps();
uninstallFastCpuKernels();
const stock = timeSteps();
installFastCpuKernels();
console.log(`guided U-Net step, ${size}x${size}, base ${base}, batch ${batchSize}, ${tokens} tokens (median of ${steps}):`);
console.log(`  stock cpu kernels: ${(stock / 1000).toFixed(2)} s`);
console.log(`  fast cpu kernels:  ${(fast / 1000).toFixed(2)} s  (${(stock / fast).toFixed(1)}x faster)`);
