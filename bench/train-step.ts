/**
 * One optimisation step of the language-guided U-Net (src/segmenter/model.ts: convs, instance norm,
 * cross-attention over report tokens, Dice + BCE, AdamW) on the cpu backend with the fast
 * convolution kernels, with this package's fused model kernels (src/tfjs/model-kernels.ts)
 * and with the same maths as composite tfjs ops (the path before those kernels), interleaved in
 * the same run so machine load hits both alike. Also the image-only U-Net (the baseline) step.
 * Defaults = the demo pipeline's guide stage: 64 x 64, base 8, depth 3, batch 8, reports of
 * 14 words in 256 token slots.
 * Usage: node --import tsx bench/train-step.ts [imageSize=64] [baseChannels=8] [batch=8] [steps=3] [depth=3]
 */
import os from "node:os";
import { setFusedOps } from "../src/segmenter/fused-ops.js";
import { segmenterForward, type Batch } from "../src/segmenter/guidance.js";
import { diceBceLoss, initParams, trainableVariables, type ModelConfig } from "../src/segmenter/model.js";
import { AdamW } from "../src/segmenter/optim.js";
import { initBackend, tf } from "../src/segmenter/runtime.js";

const [size, base, batchSize, steps, depth] = [64, 8, 8, 3, 3].map((d, i) => Number(process.argv[2 + i] ?? d)) as [number, number, number, number, number];
await initBackend("cpu");
(tf.backend() as unknown as { firstUse: boolean }).firstUse = false;
const slots = 256;
const words = 14;
const guided: ModelConfig = {
  net: { imageSize: size, inChannels: 1, baseChannels: base, depth, heads: 4, tokenDim: 64 },
  guidance: { kind: "vocab", vocab: Array.from({ length: 40 }, (_, i) => `w${i}`), tokenDim: 64, maxTokens: slots },
};
const plain: ModelConfig = { net: { ...guided.net, tokenDim: null }, guidance: { kind: "none" } };
const images = Float32Array.from({ length: batchSize * size * size }, (_, i) => ((i * 7919) % 255) / 255);
const masks = Float32Array.from({ length: batchSize * size * size }, (_, i) => ((i * 31) % 7 < 2 ? 1 : 0));
const ids = Int32Array.from({ length: batchSize * slots }, (_, i) => (i % slots < words ? 2 + (i % 30) : 0));

function stepper(config: ModelConfig): () => number {
  const store = initParams(config, 1);
  const variables = trainableVariables(store);
  const optimizer = new AdamW();
  const batch: Batch = { size: batchSize, images, masks, guidance: config.guidance.kind === "vocab" ? { kind: "vocab", ids } : { kind: "none" } };
  return () => {
    const started = performance.now();
    const { value, grads } = tf.variableGrads(
      () => diceBceLoss(segmenterForward(store, config, batch).logits, tf.tensor4d(masks, [batchSize, size, size, 1])),
      [...variables.values()],
    );
    const named: Record<string, tf.Tensor> = {};
    for (const [name, v] of variables) named[name] = grads[v.name]!;
    optimizer.apply(variables, named, 1e-3);
    value.dataSync();
    value.dispose();
    Object.values(grads).forEach((g) => g.dispose());
    return performance.now() - started;
  };
}

const runs = { fused: stepper(guided), composite: stepper(guided), plainFused: stepper(plain), plainComposite: stepper(plain) };
const times: Record<keyof typeof runs, number[]> = { fused: [], composite: [], plainFused: [], plainComposite: [] };
for (let s = 0; s < steps + 1; s++) {
  for (const key of Object.keys(runs) as (keyof typeof runs)[]) {
    setFusedOps(key === "fused" || key === "plainFused");
    const ms = runs[key]();
    if (s > 0) times[key].push(ms); // the first step of each warms up
  }
}
setFusedOps(true);
const median = (xs: number[]) => xs.slice().sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const m = Object.fromEntries(Object.entries(times).map(([k, v]) => [k, median(v)])) as Record<keyof typeof runs, number>;
console.log(
  `U-Net step on cpu, ${size}x${size}, base ${base}, depth ${depth}, batch ${batchSize}, ${words} words in ${slots} slots; median of ${steps}; load ${os.loadavg()[0]!.toFixed(2)} on ${os.cpus().length} cores`,
);
console.log(`  guided, composite tfjs ops (baseline): ${m.composite.toFixed(0)} ms`);
console.log(`  guided, fused model kernels:           ${m.fused.toFixed(0)} ms  (${(m.composite / m.fused).toFixed(1)}x faster)`);
console.log(`  image-only, composite tfjs ops:        ${m.plainComposite.toFixed(0)} ms`);
console.log(`  image-only, fused model kernels:       ${m.plainFused.toFixed(0)} ms  (${(m.plainComposite / m.plainFused).toFixed(1)}x faster)`);
