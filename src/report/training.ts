import { readFileSync } from "node:fs";
import { EXAMPLES_TABLE, METRICS_TABLE, PER_IMAGE_TABLE } from "../evaluate/tables.js";
import { readTable, withTable } from "../io/tables.js";
import type { ExamplesPart, HistoryPart, MetricsPart, Part, ReportOptions, TrainingPart } from "./model.js";
import { type StageOutputs, guarded, spread } from "./outputs.js";
import { PREDICTION_COLOR, TRUTH_COLOR, thumbnailDataUri } from "./thumbnails.js";

/** The training section: loss curves (train), test metrics and example predictions (evaluate). */
export async function gatherTraining(outputs: StageOutputs, opts: ReportOptions): Promise<Part<TrainingPart>> {
  if (!outputs.inPipeline("train") && !outputs.inPipeline("evaluate")) {
    return { state: "absent", message: "This pipeline has no `train` or `evaluate` stage, so there are no loss curves, test metrics or predictions to show." };
  }
  const trainMissing = outputs.missing("train");
  const evalMissing = outputs.missing("evaluate");
  return {
    state: "ok",
    data: {
      history: trainMissing
        ? { state: "absent", message: trainMissing }
        : await guarded(async () => ({ state: "ok" as const, data: parseHistory(JSON.parse(readFileSync(outputs.file("train", "history.json"), "utf8"))) })),
      baselineHistory: await baselineHistory(outputs, evalMissing),
      metrics: evalMissing ? { state: "absent", message: evalMissing } : await guarded(() => gatherMetrics(outputs.file("evaluate", "metrics.parquet"))),
      examples: evalMissing
        ? { state: "absent", message: evalMissing }
        : await guarded(() => gatherExamples(outputs.file("evaluate", "examples.parquet"), outputs.file("evaluate", "per_image.parquet"), opts)),
    },
  };
}

/** The image-only U-Net's curves: the baseline stage's history.json (evaluate's baseline-history.json before evaluate 5). */
async function baselineHistory(outputs: StageOutputs, evalMissing: string | undefined): Promise<Part<HistoryPart>> {
  if (evalMissing) return { state: "absent", message: evalMissing };
  const file = outputs.optionalFile("baseline", "history.json") ?? outputs.optionalFile("evaluate", "baseline-history.json");
  if (!file)
    return {
      state: "absent",
      message: "This pipeline has no baseline stage output: no image-only U-Net was trained (add `baseline: {}` under stages).",
    };
  return guarded(async () => ({ state: "ok" as const, data: parseHistory(JSON.parse(readFileSync(file, "utf8"))) }));
}

/**
 * history.json: a list of per-epoch records (`[{epoch, loss, val_dice, ...}]`, or that list under
 * `epochs`/`history`), or columns of equal length (`{epoch: [...], loss: [...]}`). Every numeric
 * field becomes a series; `bestEpoch`/`best_epoch` marks the early-stopping choice.
 */
export function parseHistory(json: unknown): HistoryPart {
  const doc = json as Record<string, unknown>;
  let records: Record<string, unknown>[] | undefined;
  if (Array.isArray(json)) records = json as Record<string, unknown>[];
  else if (doc && typeof doc === "object") {
    const list = doc.epochs ?? doc.history;
    if (Array.isArray(list)) records = list as Record<string, unknown>[];
    else {
      const source = list && typeof list === "object" ? (list as Record<string, unknown>) : doc;
      const columns = Object.entries(source).filter(([, v]) => Array.isArray(v) && v.every((x) => typeof x === "number" || x === null)) as [
        string,
        (number | null)[],
      ][];
      if (columns.length) {
        const length = Math.max(...columns.map(([, v]) => v.length));
        records = [...Array(length).keys()].map((i) => Object.fromEntries(columns.map(([k, v]) => [k, v[i]])));
      }
    }
  }
  if (!records?.length) throw new Error("history.json holds no per-epoch records (expected a list of {epoch, loss, ...} or columns of numbers)");
  const names: string[] = [];
  for (const r of records) for (const [k, v] of Object.entries(r)) if (k !== "epoch" && typeof v === "number" && !names.includes(k)) names.push(k);
  const series = names.map((name) => ({
    name,
    points: records!
      .map((r, i) => ({ x: typeof r.epoch === "number" ? r.epoch : i + 1, y: r[name] as number }))
      .filter((p) => typeof p.y === "number" && Number.isFinite(p.y)),
  }));
  const best = doc && !Array.isArray(json) ? (doc.bestEpoch ?? doc.best_epoch) : undefined;
  return { epochs: records.length, series, bestEpoch: typeof best === "number" ? best : null };
}

const METRIC_COLUMNS = METRICS_TABLE.columns.map((c) => c.name);

/** metrics.parquet as a table of cells, with the baseline's row marked so the HTML can show deltas. */
async function gatherMetrics(file: string): Promise<Part<MetricsPart>> {
  const table = await readTable(METRICS_TABLE, file, METRIC_COLUMNS);
  const rows = Array.from({ length: table.numRows }, (_, i) => METRIC_COLUMNS.map((name) => table[name][i]!));
  // evaluate names the image-only U-Net `unet` (before version 4: `baseline`); with seeds, its first row.
  const unetRow = table.model.indexOf("unet");
  const baselineRow = unetRow >= 0 ? unetRow : table.model.indexOf("baseline");
  return { state: "ok", data: { columns: [...METRIC_COLUMNS], rows, baselineRow: baselineRow >= 0 ? baselineRow : null } };
}

/** Example predictions with the truth and the baseline, each with its ProLearn Dice and IoU from per_image.parquet. */
async function gatherExamples(file: string, perImageFile: string, opts: ReportOptions): Promise<Part<ExamplesPart>> {
  const perImage = await readTable(PER_IMAGE_TABLE, perImageFile, ["id", "model", "dice", "iou"]);
  const scoresOf = new Map<string, [string, number][]>();
  perImage.id.forEach((id, i) => {
    // With seeds, the first ProLearn row of an image is the first seed's, whose prediction examples.parquet holds.
    if (perImage.model[i] === "prolearn" && !scoresOf.has(id))
      scoresOf.set(id, [
        ["dice", perImage.dice[i]!],
        ["iou", perImage.iou[i]!],
      ]);
  });
  const size = Math.round((opts.thumbnailSize * 4) / 3);
  return withTable(EXAMPLES_TABLE, file, async (reader) => {
    const items: ExamplesPart["items"] = [];
    for (const row of spread([...Array(reader.numRows).keys()], opts.maxExamples)) {
      const one = await reader.read(["id", "image", "mask", "prediction", "baseline_prediction"], { offset: row, limit: 1 });
      const image = one.image[0]!;
      const baseline = one.baseline_prediction[0];
      items.push({
        id: one.id[0]!,
        image: await thumbnailDataUri(image, [], size),
        truth: await thumbnailDataUri(image, [{ mask: one.mask[0]!, color: TRUTH_COLOR }], size),
        prediction: await thumbnailDataUri(image, [{ mask: one.prediction[0]!, color: PREDICTION_COLOR }], size),
        baseline: baseline ? await thumbnailDataUri(image, [{ mask: baseline, color: PREDICTION_COLOR }], size) : null,
        scores: scoresOf.get(one.id[0]!) ?? [],
      });
    }
    return { state: "ok", data: { total: reader.numRows, items } };
  });
}
