import assert from "node:assert/strict";
import { mkdir } from "node:fs/promises";
import path from "node:path";
import { test } from "node:test";
import { loadModel, saveModel } from "../../src/segmenter/checkpoints.js";
import { segmenterForward, PrototypeIndex, type Batch } from "../../src/segmenter/guidance.js";
import { diceBceLoss, disposeParams, initParams, netForward, trainableVariables, upsample2x, type ModelConfig } from "../../src/segmenter/model.js";
import { initBackend, tf } from "../../src/segmenter/runtime.js";
import { sha256File } from "../../src/util/hash.js";
import { buildVocabulary, encodeReport, tokenizeReport, vocabularyIndex } from "../../src/segmenter/text.js";
import { scratchDir } from "./helpers.js";

const vocabConfig: ModelConfig = {
  net: { imageSize: 16, inChannels: 1, baseChannels: 4, depth: 3, heads: 4, tokenDim: 8 },
  guidance: { kind: "vocab", vocab: ["<pad>", "<unk>", "upper", "left", "lung"], tokenDim: 8, maxTokens: 6 },
};

function batchOf(size: number, seed: number): Batch {
  const images = new Float32Array(size * 16 * 16).map((_, i) => ((i * 7919 + seed) % 97) / 97);
  const masks = new Float32Array(size * 16 * 16).map((_, i) => ((i * 31 + seed) % 11 < 3 ? 1 : 0));
  const ids = new Int32Array(size * 6);
  for (let b = 0; b < size; b++) ids.set([2, 3, 4, 0, 0, 0], b * 6);
  return { size, images, masks, guidance: { kind: "vocab", ids } };
}

test("word tokenisation and vocabulary are lower-case and deterministic", () => {
  assert.deepEqual(tokenizeReport("Bilateral pulmonary infection,  two infected areas.."), ["bilateral", "pulmonary", "infection", "two", "infected", "areas"]);
  const vocab = buildVocabulary(["Upper left lung.", "upper right lung", "LOWER left"]);
  assert.deepEqual(vocab, ["<pad>", "<unk>", "left", "lung", "upper", "lower", "right"]);
  const { ids, words } = encodeReport("upper middle lung", vocabularyIndex(vocab), 5);
  assert.deepEqual([...ids], [4, 1, 3, 0, 0]);
  assert.deepEqual(words, ["upper", "middle", "lung"]);
});

test("forward shapes and per-stage attention over the report tokens", async () => {
  await initBackend("cpu");
  const store = initParams(vocabConfig, 1);
  const out = segmenterForward(store, vocabConfig, batchOf(2, 0), { attention: true });
  assert.deepEqual(out.logits.shape, [2, 16, 16, 1]);
  assert.equal(out.attention!.length, 2, "depth 3 has 2 guided decoder stages");
  const att = out.attention![0]!.arraySync() as number[][];
  assert.ok(Math.abs(att[0]!.reduce((a, b) => a + b, 0) - 1) < 1e-5, "attention over tokens sums to 1");
  assert.ok(att[0]![3]! < 1e-6, "padding gets no attention");
  disposeParams(store);
});

test("seeded initialisation is reproducible and seed-dependent", async () => {
  await initBackend("cpu");
  const a = initParams(vocabConfig, 3);
  const b = initParams(vocabConfig, 3);
  const c = initParams(vocabConfig, 4);
  const w = (s: typeof a) => Array.from(s.get("enc0.conv1.w")!.variable.dataSync());
  assert.deepEqual(w(a), w(b));
  assert.notDeepEqual(w(a), w(c));
  [a, b, c].forEach(disposeParams);
});

test("gradients reach every trainable parameter and match finite differences", async () => {
  await initBackend("cpu");
  const store = initParams(vocabConfig, 5);
  const batch = batchOf(2, 1);
  const variables = trainableVariables(store);
  const lossOf = () => diceBceLoss(segmenterForward(store, vocabConfig, batch).logits, tf.tensor4d(batch.masks!, [2, 16, 16, 1]));
  const { grads } = tf.variableGrads(lossOf, [...variables.values()]);
  for (const [name, v] of variables) {
    const g = grads[v.name];
    assert.ok(g, `gradient for ${name}`);
    if (name === "text.embedding") continue; // rows of unused words are legitimately zero
    assert.ok((tf.sum(tf.abs(g)).dataSync()[0] ?? 0) > 0, `non-zero gradient for ${name}`);
  }
  for (const name of ["enc0.conv1.w", "enc1.conv2.w", "dec0.attn.k.w", "dec1.attn.o.w", "dec1.attn.q.w", "text.embedding", "head.w"]) {
    const v = variables.get(name)!;
    const analytic = grads[v.name]!.dataSync();
    const values = v.dataSync().slice();
    const index = name === "text.embedding" ? 2 * 8 + 1 : 1;
    const eps = 1e-2;
    const at = (delta: number) => {
      const copy = values.slice();
      copy[index] = values[index]! + delta;
      v.assign(tf.tensor(copy, v.shape));
      return lossOf().dataSync()[0]!;
    };
    const numeric = (at(eps) - at(-eps)) / (2 * eps);
    v.assign(tf.tensor(values, v.shape));
    assert.ok(Math.abs(numeric - analytic[index]!) < 2e-3 + 0.05 * Math.abs(numeric), `${name}: analytic ${analytic[index]} vs numeric ${numeric}`);
  }
  disposeParams(store);
});

test("x2 up-sampling repeats each pixel and its gradient sums the copies", async () => {
  await initBackend("cpu");
  const x = tf.tensor4d([1, 2, 3, 4], [1, 2, 2, 1]);
  assert.deepEqual(Array.from(upsample2x(x).dataSync()), [1, 1, 2, 2, 1, 1, 2, 2, 3, 3, 4, 4, 3, 3, 4, 4]);
  const weights = tf.tensor4d(
    Array.from({ length: 16 }, (_, i) => i),
    [1, 4, 4, 1],
  );
  const g = tf.grad((t: tf.Tensor) => tf.sum(tf.mul(upsample2x(t as tf.Tensor4D), weights)))(x);
  assert.deepEqual(Array.from(g.dataSync()), [0 + 1 + 4 + 5, 2 + 3 + 6 + 7, 8 + 9 + 12 + 13, 10 + 11 + 14 + 15]);
});

test("the image-only U-Net needs no guidance and has no attention parameters", async () => {
  await initBackend("cpu");
  const config: ModelConfig = { net: { ...vocabConfig.net, tokenDim: null }, guidance: { kind: "none" } };
  const store = initParams(config, 1);
  assert.ok(![...store.keys()].some((k) => k.includes("attn")));
  const out = netForward(store, config.net, tf.zeros([1, 16, 16, 1]) as tf.Tensor4D, null);
  assert.deepEqual(out.logits.shape, [1, 16, 16, 1]);
  disposeParams(store);
});

test("bad sizes fail with a hint", () => {
  assert.throws(() => initParams({ ...vocabConfig, net: { ...vocabConfig.net, imageSize: 18 } }, 1), /divisible/);
});

test("weights save and load exactly, and the same weights give the same bytes", async () => {
  await initBackend("cpu");
  const config: ModelConfig = {
    net: { imageSize: 16, inChannels: 1, baseChannels: 4, depth: 3, heads: 2, tokenDim: 8 },
    guidance: { kind: "psa", embeddingDim: 6, prototypes: 3, topK: 2, temperature: 1, guidanceTokens: 2, tokenDim: 8 },
  };
  const queries = Float32Array.from({ length: 18 }, (_, i) => Math.sin(i));
  const responses = Float32Array.from({ length: 18 }, (_, i) => Math.cos(i));
  const store = initParams(config, 9, { "psa.query": queries, "psa.response": responses });
  const training = {
    epochs: 1,
    batchSize: 1,
    learningRate: 1,
    minLearningRate: 0,
    weightDecay: 0,
    patience: 0,
    seed: 9,
    backend: "cpu",
    bestEpoch: 1,
    bestValDice: 0.5,
    epochsRun: 1,
    stoppedEarly: false,
  };
  const dir = await scratchDir("weights");
  await mkdir(path.join(dir, "a"));
  await mkdir(path.join(dir, "b"));
  await saveModel(path.join(dir, "a"), "model.json", "weights.bin", "prolearn", config, store, training);
  await saveModel(path.join(dir, "b"), "model.json", "weights.bin", "prolearn", config, store, training);
  assert.equal(await sha256File(path.join(dir, "a", "weights.bin")), await sha256File(path.join(dir, "b", "weights.bin")));
  const loaded = await loadModel(path.join(dir, "a", "model.json"));
  for (const [name, entry] of store) assert.deepEqual(Array.from(loaded.store.get(name)!.variable.dataSync()), Array.from(entry.variable.dataSync()), name);
  assert.equal(loaded.store.get("psa.query")!.trainable, false, "query prototypes stay frozen");
  assert.equal(loaded.store.get("psa.response")!.trainable, true, "response prototypes are learnable");
  disposeParams(store);
  disposeParams(loaded.store);
});

test("PSA query: top-k by cosine, softmax weights, deterministic ties", () => {
  const index = new PrototypeIndex(Float32Array.from([1, 0, 0, 1, 1, 1, -1, 0]), 2);
  const hit = index.query([2, 0], 2, 1);
  assert.deepEqual(hit.indices, [0, 2]);
  const expected = Math.exp(1) / (Math.exp(1) + Math.exp(Math.SQRT1_2));
  assert.ok(Math.abs(hit.weights[0]! - expected) < 1e-6);
  assert.ok(Math.abs(hit.weights[0]! + hit.weights[1]! - 1) < 1e-12);
});

test("Sum and Mean gradients build their broadcast on the backend, not as a host array of the input's size", async () => {
  await initBackend();
  const x = tf.randomNormal([2, 8, 8, 3]);
  // A host-side ones(x.shape) would be uploaded to the GPU on every step on webgpu.
  const engine = tf.engine() as unknown as { makeTensor: (...args: unknown[]) => tf.Tensor };
  const makeTensor = engine.makeTensor;
  const sizes: number[] = [];
  engine.makeTensor = function (this: unknown, ...args: unknown[]) {
    const made = makeTensor.apply(this, args);
    sizes.push(made.size);
    return made;
  };
  try {
    const [dSum, dMean] = [tf.grad((t: tf.Tensor) => tf.sum(t, [1, 2])), tf.grad((t: tf.Tensor) => tf.mean(t, [1, 2]))].map((g) => g(x));
    assert.deepEqual(Array.from(await dSum!.data()), new Array(x.size).fill(1));
    assert.ok(Array.from(await dMean!.data()).every((v) => Math.abs(v - 1 / 64) < 1e-9));
  } finally {
    engine.makeTensor = makeTensor;
  }
  assert.ok(
    sizes.every((size) => size < x.size),
    `host tensors of sizes ${sizes.join(", ")}`,
  );
});
