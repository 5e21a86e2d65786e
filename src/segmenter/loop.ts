import { mkdir, rm, stat } from "node:fs/promises";
import path from "node:path";
import { InterruptedError, ModelError } from "../errors.js";
import type { Batch } from "./guidance.js";
import { segmenterForward } from "./guidance.js";
import { SegmentationMeter, type SegmentationScores } from "./metrics.js";
import { diceBceLoss, trainableVariables, type ModelConfig, type ParamStore } from "./model.js";
import { AdamW, cosineLearningRate } from "./optim.js";
import { deriveSeed, mulberry32, permutation } from "./prng.js";
import { tf } from "./runtime.js";
import { packTensors, readFloat32File, readJson, unpackTensors, writeFloat32File, writeJsonAtomic, type TensorEntry } from "./weights.js";

export interface TrainSettings {
  epochs: number;
  batchSize: number;
  learningRate: number;
  minLearningRate: number;
  weightDecay: number;
  /** Stop after this many epochs without a better validation Dice (0 = never stop early). */
  patience: number;
  seed: number;
}

export interface EpochRecord {
  epoch: number;
  loss: number;
  learningRate: number;
  /** Per-image mean Dice on the validation samples (NaN when there are none). */
  valDice: number;
  valIou: number;
  seconds: number;
}

export interface TrainResult {
  history: EpochRecord[];
  bestEpoch: number;
  bestValDice: number;
  epochsRun: number;
  stoppedEarly: boolean;
  /** Epochs restored from a checkpoint instead of trained in this call. */
  resumedEpochs: number;
}

export interface TrainJob {
  config: ModelConfig;
  store: ParamStore;
  settings: TrainSettings;
  trainCount: number;
  valCount: number;
  /** Builds a training batch from training-sample indices (masks required) for 0-based `epoch`. */
  trainBatch(indices: number[], epoch: number): Batch;
  /** Builds a validation batch (masks required). */
  valBatch(indices: number[]): Batch;
  /** Folder for the resumable checkpoint; absent = no checkpoints. */
  checkpointDir?: string;
  /** Anything that must match for a checkpoint to be reused (params, input digests). */
  checkpointKey?: string;
  signal?: AbortSignal;
  onEpoch?(record: EpochRecord): void;
  onStep?(done: number, total: number): void;
}

interface CheckpointState {
  format: "prolearn-checkpoint/1";
  key: string;
  epochsDone: number;
  optimizerStep: number;
  history: EpochRecord[];
  bestEpoch: number;
  bestValDice: number;
  sinceBest: number;
  finished: boolean;
  stoppedEarly: boolean;
  tensors: TensorEntry[];
}

/** Validation (or test) scores of a model over batches of samples. */
export async function evaluateBatches(
  config: ModelConfig,
  store: ParamStore,
  count: number,
  batchSize: number,
  makeBatch: (indices: number[]) => Batch,
  onImage?: (index: number, probabilities: Float32Array) => void,
): Promise<SegmentationScores> {
  const meter = new SegmentationMeter();
  const pixels = config.net.imageSize * config.net.imageSize;
  for (let start = 0; start < count; start += batchSize) {
    const indices = Array.from({ length: Math.min(batchSize, count - start) }, (_, i) => start + i);
    const batch = makeBatch(indices);
    const probabilityTensor = tf.tidy(() => tf.sigmoid(segmenterForward(store, config, batch).logits));
    const probabilities = (await probabilityTensor.data()) as Float32Array;
    probabilityTensor.dispose();
    if (!batch.masks) throw new Error("evaluation batches need masks");
    indices.forEach((index, b) => {
      const p = probabilities.subarray(b * pixels, (b + 1) * pixels);
      meter.add(p, batch.masks!.subarray(b * pixels, (b + 1) * pixels));
      onImage?.(index, p);
    });
  }
  return meter.result();
}

async function snapshot(store: ParamStore): Promise<Map<string, Float32Array>> {
  const out = new Map<string, Float32Array>();
  for (const [name, entry] of store) out.set(name, Float32Array.from((await entry.variable.data()) as Float32Array));
  return out;
}

function restore(store: ParamStore, values: Map<string, Float32Array>, prefix = ""): void {
  for (const [name, entry] of store) {
    const v = values.get(prefix + name);
    if (!v) throw new ModelError(`checkpoint lacks tensor ${prefix + name}`, { hint: "the checkpoint was written by other code; rerun with --force" });
    tf.tidy(() => entry.variable.assign(tf.tensor(v, entry.variable.shape)));
  }
}

async function exists(file: string): Promise<boolean> {
  try {
    await stat(file);
    return true;
  } catch {
    return false;
  }
}

async function saveCheckpoint(
  dir: string,
  state: Omit<CheckpointState, "tensors">,
  store: ParamStore,
  optimizer: AdamW,
  best: Map<string, Float32Array>,
): Promise<void> {
  const tensors: [string, tf.Tensor | Float32Array][] = [];
  for (const [name, entry] of store) tensors.push([`param/${name}`, entry.variable]);
  for (const [name, m] of optimizer.m) tensors.push([`adam.m/${name}`, m]);
  for (const [name, v] of optimizer.v) tensors.push([`adam.v/${name}`, v]);
  for (const [name, values] of best) tensors.push([`best/${name}`, values]);
  const { entries, values } = await packTensors(tensors);
  // Weights first under a fresh name, then the state that points at them: a kill between the
  // two leaves the previous state with its own, still complete, weights file.
  const weightsName = `weights-${state.epochsDone}.bin`;
  await writeFloat32File(path.join(dir, weightsName), values);
  await writeJsonAtomic(path.join(dir, "state.json"), { ...state, weights: weightsName, tensors: entries });
  if (state.epochsDone > 0) await rm(path.join(dir, `weights-${state.epochsDone - 1}.bin`), { force: true });
}

/**
 * Trains with Dice + BCE, AdamW and a per-step cosine schedule; keeps the weights of the epoch
 * with the best validation Dice (or of the last epoch when there is no validation split) and
 * leaves them in `store`. Shuffling of epoch e is seeded by (seed, e), so a run resumed from the
 * checkpoint of epoch k replays epochs k+1.. exactly as the uninterrupted run would.
 */
export async function trainSegmenter(job: TrainJob): Promise<TrainResult> {
  const { settings, store, config } = job;
  const optimizer = new AdamW({ weightDecay: settings.weightDecay });
  const variables = trainableVariables(store);
  const stepsPerEpoch = Math.ceil(job.trainCount / settings.batchSize);
  const totalSteps = stepsPerEpoch * settings.epochs;
  const key = job.checkpointKey ?? "";
  let state: Omit<CheckpointState, "tensors"> = {
    format: "prolearn-checkpoint/1",
    key,
    epochsDone: 0,
    optimizerStep: 0,
    history: [],
    bestEpoch: -1,
    bestValDice: -Infinity,
    sinceBest: 0,
    finished: false,
    stoppedEarly: false,
  };
  let best = await snapshot(store);
  let resumedEpochs = 0;
  if (job.checkpointDir) {
    await mkdir(job.checkpointDir, { recursive: true });
    const stateFile = path.join(job.checkpointDir, "state.json");
    if (await exists(stateFile)) {
      const saved = await readJson<CheckpointState & { weights: string }>(stateFile);
      if (saved.format === "prolearn-checkpoint/1" && saved.key === key) {
        const values = unpackTensors(saved.tensors, await readFloat32File(path.join(job.checkpointDir, saved.weights)), stateFile);
        restore(store, values, "param/");
        for (const [name, variable] of variables) {
          const m = values.get(`adam.m/${name}`);
          const v = values.get(`adam.v/${name}`);
          if (m && v) {
            optimizer.m.set(
              name,
              tf.tidy(() => tf.variable(tf.tensor(m, variable.shape), false)),
            );
            optimizer.v.set(
              name,
              tf.tidy(() => tf.variable(tf.tensor(v, variable.shape), false)),
            );
          }
        }
        optimizer.step = saved.optimizerStep;
        best = new Map([...store.keys()].map((name) => [name, Float32Array.from(values.get(`best/${name}`) ?? values.get(`param/${name}`)!)]));
        const { tensors: _tensors, weights: _weights, ...rest } = saved;
        state = rest;
        resumedEpochs = state.epochsDone;
      }
    }
  }

  try {
    while (!state.finished && state.epochsDone < settings.epochs) {
      const epoch = state.epochsDone;
      const started = performance.now();
      const order = permutation(mulberry32(deriveSeed(settings.seed, "shuffle", epoch)), job.trainCount);
      let lossSum = 0;
      let lr = settings.learningRate;
      for (let s = 0; s < stepsPerEpoch; s++) {
        if (job.signal?.aborted) throw new InterruptedError("interrupted; the next run resumes from the last checkpoint");
        const indices = order.slice(s * settings.batchSize, (s + 1) * settings.batchSize);
        const batch = job.trainBatch(indices, epoch);
        if (!batch.masks) throw new Error("training batches need masks");
        lr = cosineLearningRate(optimizer.step, totalSteps, settings.learningRate, settings.minLearningRate);
        const { value, grads } = tf.variableGrads(() => {
          const { logits } = segmenterForward(store, config, batch);
          const targets = tf.tensor4d(batch.masks!, [batch.size, config.net.imageSize, config.net.imageSize, 1]);
          return diceBceLoss(logits, targets);
        }, [...variables.values()]);
        const named: Record<string, tf.Tensor> = {};
        for (const [name, variable] of variables) if (grads[variable.name]) named[name] = grads[variable.name]!;
        optimizer.apply(variables, named, lr);
        lossSum += ((await value.data()) as Float32Array)[0]! * indices.length;
        value.dispose();
        for (const g of Object.values(grads)) g.dispose();
        job.onStep?.(epoch * stepsPerEpoch + s + 1, totalSteps);
        await new Promise((resolve) => setImmediate(resolve));
      }
      const val = job.valCount > 0 ? await evaluateBatches(config, store, job.valCount, settings.batchSize, job.valBatch) : undefined;
      const record: EpochRecord = {
        epoch: epoch + 1,
        loss: lossSum / job.trainCount,
        learningRate: lr,
        valDice: val?.dice ?? Number.NaN,
        valIou: val?.iou ?? Number.NaN,
        seconds: (performance.now() - started) / 1000,
      };
      // Without validation samples the last epoch is "best": training runs its full budget.
      const score = val ? val.dice : epoch;
      state.history.push(record);
      state.epochsDone = epoch + 1;
      state.optimizerStep = optimizer.step;
      if (score > state.bestValDice) {
        state.bestValDice = score;
        state.bestEpoch = epoch + 1;
        state.sinceBest = 0;
        best = await snapshot(store);
      } else {
        state.sinceBest++;
      }
      if (settings.patience > 0 && state.sinceBest >= settings.patience && job.valCount > 0) {
        state.finished = true;
        state.stoppedEarly = true;
      }
      if (state.epochsDone >= settings.epochs) state.finished = true;
      if (job.checkpointDir) await saveCheckpoint(job.checkpointDir, state, store, optimizer, best);
      job.onEpoch?.(record);
      if (job.signal?.aborted && !state.finished)
        throw new InterruptedError(`interrupted after epoch ${state.epochsDone}; the next run resumes from its checkpoint`);
    }
    restore(store, best);
  } finally {
    optimizer.dispose();
  }
  return {
    history: state.history,
    bestEpoch: state.bestEpoch,
    bestValDice: job.valCount > 0 ? state.bestValDice : Number.NaN,
    epochsRun: state.epochsDone,
    stoppedEarly: state.stoppedEarly,
    resumedEpochs,
  };
}
