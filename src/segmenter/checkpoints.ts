import { existsSync, rmSync } from "node:fs";
import path from "node:path";
import { ModelError } from "../errors.js";
import type { ResolvedPipeline } from "../pipeline/spec.js";
import type { StageContext } from "../pipeline/stage.js";
import { hashJson } from "../util/hash.js";
import type { EpochRecord, TrainResult, TrainSettings } from "./loop.js";
import { disposeParams, initParams, parameterShapes, type ModelConfig, type ParamStore } from "./model.js";
import { tf } from "./runtime.js";
import { packTensors, readFloat32File, readJson, unpackTensors, writeFloat32File, writeJsonAtomic, WEIGHTS_FORMAT, type TensorEntry } from "./weights.js";

/** The training fields of a stage's params: TrainSettings whose seed defaults to the dataset's. */
export type TrainingParams = Omit<TrainSettings, "seed"> & { seed?: number };

export function trainSettings(params: TrainingParams, pipeline: ResolvedPipeline): TrainSettings {
  return {
    epochs: params.epochs,
    batchSize: params.batchSize,
    learningRate: params.learningRate,
    minLearningRate: params.minLearningRate,
    weightDecay: params.weightDecay,
    patience: params.patience,
    seed: params.seed ?? pipeline.dataset.seed,
  };
}

export function resolveChannels(channels: 1 | 3 | "auto", pipeline: ResolvedPipeline): 1 | 3 {
  if (channels !== "auto") return channels;
  return pipeline.dataset.kind === "kvasir-seg" ? 3 : 1;
}

/**
 * A checkpoint folder outside the stage's output, stable across runs of the same work: the hash
 * of the stage name and code version, its params, the input digests and the dataset seed. A
 * killed run finds its folder again on the next run and resumes; new stage code starts afresh.
 */
export function checkpointFolder(ctx: StageContext<unknown>, purpose: string): { dir: string; key: string } {
  const inputs = Object.fromEntries(Object.entries(ctx.inputs).map(([name, input]) => [name, input.digest]));
  const key = hashJson({ stage: ctx.stage, version: ctx.version, purpose, params: ctx.params, inputs, seed: ctx.pipeline.dataset.seed });
  return freshWhenForced(ctx, purpose, { dir: path.join(ctx.pipeline.workdir, "checkpoints", `${ctx.stage}-${purpose}-${key.slice(0, 16)}`), key });
}

/**
 * A forced stage (`run --force`) trains from scratch: its checkpoint folder is emptied first and
 * the log says so, so `--force` never silently reuses a finished training.
 */
function freshWhenForced(ctx: StageContext<unknown>, purpose: string, checkpoint: { dir: string; key: string }): { dir: string; key: string } {
  if (ctx.fresh && existsSync(checkpoint.dir)) {
    rmSync(checkpoint.dir, { recursive: true, force: true });
    ctx.log(`forced: removed the ${purpose} checkpoint ${path.basename(checkpoint.dir)}; training starts from scratch`);
  }
  return checkpoint;
}

/**
 * A checkpoint folder keyed only on what the training it holds depends on (`work`: e.g. the
 * network, the training settings and the input digests that feed it) and the stage's code
 * version, so params that do not change the training (how many examples evaluate writes, its
 * batch size) reuse it.
 */
export function checkpointFolderFor(ctx: StageContext<unknown>, purpose: string, work: Record<string, unknown>): { dir: string; key: string } {
  const key = hashJson({ stage: ctx.stage, version: ctx.version, purpose, work, seed: ctx.pipeline.dataset.seed });
  return freshWhenForced(ctx, purpose, { dir: path.join(ctx.pipeline.workdir, "checkpoints", `${ctx.stage}-${purpose}-${key.slice(0, 16)}`), key });
}

/** Says plainly when a training resumed from its checkpoint instead of training every epoch. */
export function logResumed(ctx: StageContext<unknown>, purpose: string, dir: string, result: Pick<TrainResult, "resumedEpochs" | "epochsRun">): void {
  if (result.resumedEpochs <= 0) return;
  const all = result.resumedEpochs >= result.epochsRun;
  ctx.log(
    `${purpose} training resumed from checkpoint ${path.basename(dir)}: ${all ? `all ${result.epochsRun} epochs were restored, none trained` : `${result.resumedEpochs} of ${result.epochsRun} epochs restored`} ` +
      `(\`prolearn run --force ${ctx.stage}\` trains from scratch)`,
  );
}

export function inputFile(ctx: StageContext<unknown>, stage: string, name: string): string {
  const file = ctx.inputs[stage]?.files[name];
  if (!file) throw new ModelError(`stage ${ctx.stage} needs ${name} from stage ${stage}`, { hint: `add \`${stage}: {}\` to the pipeline` });
  return file;
}

/** What model.json / guide-model.json hold: the architecture, the weights index and how it was trained. */
export interface ModelFile {
  format: typeof WEIGHTS_FORMAT;
  kind: "guide" | "prolearn" | "unet";
  weights: string;
  config: ModelConfig;
  tensors: TensorEntry[];
  training: TrainSettings & { backend: string; bestEpoch: number; bestValDice: number | null; epochsRun: number; stoppedEarly: boolean };
  extra?: Record<string, unknown>;
}

export async function saveModel(
  dir: string,
  jsonName: string,
  binName: string,
  kind: ModelFile["kind"],
  config: ModelConfig,
  store: ParamStore,
  training: ModelFile["training"],
  extra?: Record<string, unknown>,
): Promise<void> {
  const { entries, values } = await packTensors([...store].map(([name, entry]) => [name, entry.variable]));
  await writeFloat32File(path.join(dir, binName), values);
  const file: ModelFile = {
    format: WEIGHTS_FORMAT,
    kind,
    weights: binName,
    config,
    tensors: entries,
    training: { ...training, bestValDice: Number.isFinite(training.bestValDice) ? training.bestValDice : null },
    extra,
  };
  await writeJsonAtomic(path.join(dir, jsonName), file);
}

/** Loads a model file and its weights into fresh variables (checked against the architecture). */
export async function loadModel(jsonFile: string): Promise<{ file: ModelFile; store: ParamStore }> {
  const file = await readJson<ModelFile>(jsonFile);
  if (file.format !== WEIGHTS_FORMAT) throw new ModelError(`unknown model format ${String(file.format)}`, { location: { file: jsonFile } });
  const values = await readFloat32File(path.join(path.dirname(jsonFile), file.weights));
  return { file, store: storeFromWeights(file.config, file.tensors, values, jsonFile) };
}

/** Fresh variables for `config` holding the tensors `entries` index in `values`; `source` names the file in errors. */
function storeFromWeights(config: ModelConfig, entries: TensorEntry[], allValues: Float32Array, source: string): ParamStore {
  const values = unpackTensors(entries, allValues, source);
  const external: Record<string, Float32Array> = {};
  for (const spec of parameterShapes(config)) {
    const v = values.get(spec.name);
    if (!v) throw new ModelError(`weights lack tensor ${spec.name}`, { location: { file: source } });
    const size = spec.shape.reduce((a, b) => a * b, 1);
    if (v.length !== size) throw new ModelError(`tensor ${spec.name} has ${v.length} values, the architecture needs ${size}`, { location: { file: source } });
    external[spec.name] = v;
  }
  const store = initParams(config, 0, external);
  for (const [name, entry] of store) {
    if (parameterShapes(config).find((s) => s.name === name)?.init !== "external")
      tf.tidy(() => entry.variable.assign(tf.tensor(external[name]!, entry.variable.shape)));
  }
  return store;
}

/**
 * What the baseline stage's models.json holds: one architecture and, per seed, how that model
 * trained and where its tensors lie in the one weights file (offsets into it).
 */
export interface SeedModelsFile {
  format: typeof WEIGHTS_FORMAT;
  kind: "unet";
  weights: string;
  config: ModelConfig;
  models: { seed: number; training: ModelFile["training"]; tensors: TensorEntry[] }[];
}

/** Writes models of one architecture, one per seed, as `jsonName` and one weights file `binName`. */
export async function saveSeedModels(
  dir: string,
  jsonName: string,
  binName: string,
  config: ModelConfig,
  models: readonly { seed: number; training: ModelFile["training"]; entries: TensorEntry[]; values: Float32Array }[],
): Promise<void> {
  const total = models.reduce((n, m) => n + m.values.length, 0);
  const values = new Float32Array(total);
  const index: SeedModelsFile["models"] = [];
  let offset = 0;
  for (const m of models) {
    values.set(m.values, offset);
    index.push({
      seed: m.seed,
      training: { ...m.training, bestValDice: Number.isFinite(m.training.bestValDice) ? m.training.bestValDice : null },
      tensors: m.entries.map((e) => ({ ...e, offset: e.offset + offset })),
    });
    offset += m.values.length;
  }
  await writeFloat32File(path.join(dir, binName), values);
  const file: SeedModelsFile = { format: WEIGHTS_FORMAT, kind: "unet", weights: binName, config, models: index };
  await writeJsonAtomic(path.join(dir, jsonName), file);
}

/** Reads a seed-models file; `load(seed)` builds that seed's variables (the caller disposes them). */
export async function openSeedModels(jsonFile: string): Promise<{ file: SeedModelsFile; load(seed: number): ParamStore | undefined }> {
  const file = await readJson<SeedModelsFile>(jsonFile);
  if (file.format !== WEIGHTS_FORMAT || !Array.isArray(file.models))
    throw new ModelError(`unknown seed-models format ${String(file.format)}`, { location: { file: jsonFile } });
  const values = await readFloat32File(path.join(path.dirname(jsonFile), file.weights));
  return {
    file,
    load(seed) {
      const model = file.models.find((m) => m.seed === seed);
      return model ? storeFromWeights(file.config, model.tensors, values, jsonFile) : undefined;
    },
  };
}

export { disposeParams };

export function historyJson(result: TrainResult, extra: Record<string, unknown> = {}): Record<string, unknown> {
  // Wall-clock seconds and resumedEpochs stay out: history.json is a content-addressed output,
  // and how long this execution took, or whether it resumed from a checkpoint, would give an
  // identical rerun new bytes (and every downstream stage a new cache key). Those are facts of
  // the execution: the stage's seconds are in the catalog, resumedEpochs in the stage summary.
  const clean = ({ seconds: _seconds, ...r }: EpochRecord) => ({
    ...r,
    valDice: Number.isFinite(r.valDice) ? r.valDice : null,
    valIou: Number.isFinite(r.valIou) ? r.valIou : null,
  });
  return {
    epochs: result.history.map(clean),
    bestEpoch: result.bestEpoch,
    bestValDice: Number.isFinite(result.bestValDice) ? result.bestValDice : null,
    epochsRun: result.epochsRun,
    stoppedEarly: result.stoppedEarly,
    ...extra,
  };
}

/** Seconds-free view of a result for summaries (history timings differ between runs). */
export function trainingSummary(result: TrainResult): Record<string, unknown> {
  return {
    epochsRun: result.epochsRun,
    bestEpoch: result.bestEpoch,
    bestValDice: Number.isFinite(result.bestValDice) ? result.bestValDice : null,
    stoppedEarly: result.stoppedEarly,
    resumedEpochs: result.resumedEpochs,
    finalLoss: result.history.at(-1)?.loss ?? null,
  };
}
