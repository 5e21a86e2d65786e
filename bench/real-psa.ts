/**
 * Does PSA carry the reports' information on real data? The whole pipeline on the real subsets
 * (QaTa-COV19 in the SGSeg layout, pipelines/qata-cov19-cpu.yaml; Kvasir-SEG,
 * pipelines/kvasir-seg.yaml) at 64 px on the CPU, per (dataset, text availability, image
 * encoder), with evaluate scoring ProLearn, the image-only U-Net and the controls (shuffled-psa,
 * mean-text, own-report) over several seeds with paired bootstrap 95% intervals
 * (docs/training.md, evaluate). Writes a markdown table (and the rows as JSON) after every row,
 * so an interrupted grid keeps what it finished. A benchmark, not a CI gate.
 *
 * Data: $PROLEARN_REAL_DATA or ../shared/data. Usage:
 *   node --import tsx bench/real-psa.ts [--rows qata:0.01,qata:0.1,qata:0.5,kvasir:0.1]
 *     [--encoder builtin,learned] [--seeds 3] [--epochs N] [--out bench/out/real-psa.md]
 *     [--controls shuffled-psa,mean-text,own-report[,image-embedding]]
 *     [--workdir DIR] [--set key=value ...]
 * `--encoder` lists the embed stage's image encoders to run side by side (default: builtin;
 * `learned` is `embed: { encoder: learned, imageSize: 64 }`). `--epochs N` caps the guide's and
 * the train stage's epochs (the controls train with the train stage's budget), for a quick check.
 * Further `--set` options override the pipeline (as `prolearn run --set`).
 */
import { existsSync } from "node:fs";
import { mkdir, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { parseValue } from "../src/cli/pipeline-arg.js";
import { runPipeline } from "../src/pipeline/engine.js";
import { loadPipelineFile } from "../src/pipeline/spec.js";
import { STAGES } from "../src/stages.js";

type DatasetName = "qata" | "kvasir";
interface Row {
  dataset: DatasetName;
  textAvailability: number;
  encoder: string;
}

const REAL = process.env.PROLEARN_REAL_DATA ?? path.resolve(import.meta.dirname, "../../shared/data");
const DATASETS: Record<DatasetName, { pipeline: string; overrides: Record<string, unknown>; needs: string[]; label: string }> = {
  qata: {
    label: "QaTa-COV19 (SGSeg)",
    pipeline: "qata-cov19-cpu.yaml",
    overrides: { "dataset.root": path.join(REAL, "qata-cov19", "QaTa") },
    needs: [path.join(REAL, "qata-cov19", "QaTa", "prompts", "annotation.json")],
  },
  kvasir: {
    label: "Kvasir-SEG",
    pipeline: "kvasir-seg.yaml",
    overrides: { "dataset.root": path.join(REAL, "kvasir-seg", "Kvasir-SEG"), "dataset.reports": path.join(REAL, "kvasir-seg", "reports-medvlsm") },
    needs: [path.join(REAL, "kvasir-seg", "Kvasir-SEG"), path.join(REAL, "kvasir-seg", "reports-medvlsm")],
  },
};
type ModelName = "prolearn" | "unet" | "shuffled-psa" | "mean-text" | "image-embedding" | "own-report";

function option(name: string, fallback: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && process.argv[i + 1] ? process.argv[i + 1]! : fallback;
}

const rowsArg = option("rows", "qata:0.01,qata:0.1,qata:0.5,kvasir:0.1");
const encoders = option("encoder", "builtin")
  .split(",")
  .map((e) => e.trim())
  .filter(Boolean);
const seeds = Number(option("seeds", "3"));
// evaluate's controls; add image-embedding to separate a learned encoder's knowledge from the text's.
const evaluateControls = option("controls", "shuffled-psa,mean-text,own-report")
  .split(",")
  .map((c) => c.trim())
  .filter(Boolean) as ModelName[];
const MODELS: readonly ModelName[] = ["prolearn", "unet", ...evaluateControls];
const CONTROLS: readonly ModelName[] = ["unet", ...evaluateControls];
const epochs = process.argv.includes("--epochs") ? Number(option("epochs", "")) : undefined;
const outFile = path.resolve(option("out", path.join(process.env.PROLEARN_BENCH_OUT ?? path.join(import.meta.dirname, "out"), "real-psa.md")));
const workdir = path.resolve(option("workdir", process.env.PROLEARN_BENCH_WORKDIR ?? path.join(os.tmpdir(), "prolearn-bench-real-psa")));
const sets: Record<string, unknown> = {};
process.argv.forEach((arg, i) => {
  if (arg !== "--set" || !process.argv[i + 1]?.includes("=")) return;
  const [key, ...rest] = process.argv[i + 1]!.split("=");
  sets[key!] = parseValue(rest.join("="));
});
const grid: Row[] = rowsArg.split(",").flatMap((spec) => {
  const [dataset, r] = spec.split(":");
  if (!(dataset! in DATASETS) || !Number.isFinite(Number(r)))
    throw new Error(`--rows entries are dataset:availability with dataset qata or kvasir, got "${spec}"`);
  return encoders.map((encoder) => ({ dataset: dataset as DatasetName, textAvailability: Number(r), encoder }));
});
if (!Number.isInteger(seeds) || seeds < 1) throw new Error(`--seeds must be a positive integer, got ${seeds}`);

interface Headline {
  dice: number;
  iou: number;
  dicePooled: number;
}
interface Outcome extends Row {
  status: "ok" | "failed" | "skipped";
  error?: string;
  minutes: number;
  testImages?: number;
  /** Per model: mean and standard deviation over seeds of the per-image mean Dice. */
  dice?: Partial<Record<ModelName, { mean: number; sd: number; seeds: number }>>;
  paired?: { b: string; meanDiff: number; ci95: [number, number] }[];
  usefulness?: Record<string, unknown> | null;
  filter?: { decision?: string; reason?: string } | null;
}

async function runRow(row: Row): Promise<Outcome> {
  const dataset = DATASETS[row.dataset];
  const absent = dataset.needs.find((p) => !existsSync(p));
  if (absent) return { ...row, status: "skipped", error: `${absent} is absent; set PROLEARN_REAL_DATA`, minutes: 0 };
  const overrides: Record<string, unknown> = {
    ...dataset.overrides,
    workdir,
    "dataset.textAvailability": row.textAvailability,
    "stages.embed.encoder": row.encoder,
    ...(row.encoder === "learned" ? { "stages.embed.imageSize": 64 } : {}),
    "stages.evaluate.seeds": seeds,
    "stages.baseline.seeds": seeds,
    "stages.evaluate.baseline": "unet",
    "stages.evaluate.controls": evaluateControls,
    "stages.evaluate.examples": 0,
    ...(epochs !== undefined ? { "stages.guide.epochs": epochs, "stages.train.epochs": epochs } : {}),
    ...sets,
  };
  const started = performance.now();
  let result: Awaited<ReturnType<typeof runPipeline>>;
  try {
    const pipeline = loadPipelineFile(path.resolve(import.meta.dirname, "../pipelines", dataset.pipeline), STAGES, overrides);
    result = await runPipeline(pipeline, {
      registry: STAGES,
      onEvent: (event) => {
        if (event.kind === "stage-end")
          console.log(
            `  ${event.result.name.padEnd(10)} ${event.result.status.padEnd(6)} ${event.result.seconds.toFixed(1).padStart(8)} s${event.result.error ? `  ${event.result.error}` : ""}`,
          );
        if (event.kind === "log" && /usefulness|filter:|own-report:/.test(event.message)) console.log(`    ${event.message}`);
      },
    });
  } catch (error) {
    return { ...row, status: "failed", error: (error as Error).message, minutes: (performance.now() - started) / 60000 };
  }
  const minutes = (performance.now() - started) / 60000;
  if (result.status !== "ok") {
    const failed = result.stages.find((s) => s.status === "failed");
    return { ...row, status: "failed", error: failed ? `${failed.name}: ${failed.error ?? failed.reason}` : "the run failed", minutes };
  }
  const evaluate = result.stages.find((s) => s.name === "evaluate")!.summary as {
    testImages: number;
    models: ({ name: ModelName } & Headline)[];
    paired: { b: string; meanDiff: number; ci95: [number, number] }[];
  };
  const dice: Outcome["dice"] = {};
  for (const name of MODELS) {
    const values = evaluate.models.filter((m) => m.name === name).map((m) => m.dice);
    if (!values.length) continue;
    const mean = values.reduce((a, b) => a + b, 0) / values.length;
    const sd = values.length > 1 ? Math.sqrt(values.reduce((a, b) => a + (b - mean) ** 2, 0) / (values.length - 1)) : 0;
    dice[name] = { mean, sd, seeds: values.length };
  }
  const prototypes = result.stages.find((s) => s.name === "prototypes")?.summary as { usefulness?: Record<string, unknown> } | undefined;
  const filter = result.stages.find((s) => s.name === "filter")?.summary as { decision?: string; trust?: { reason?: string } } | undefined;
  return {
    ...row,
    status: "ok",
    minutes,
    testImages: evaluate.testImages,
    dice,
    paired: evaluate.paired,
    usefulness: prototypes?.usefulness ?? null,
    filter: filter ? { decision: filter.decision, reason: filter.trust?.reason } : null,
  };
}

const f3 = (x: number) => x.toFixed(3);
const signed = (x: number) => (Math.abs(x) < 5e-4 ? "+0.000" : `${x >= 0 ? "+" : ""}${x.toFixed(3)}`);

/** The markdown table: Dice as seed mean ± sd; differences with their paired bootstrap 95% CI. */
export function markdownTable(outcomes: readonly Outcome[]): string {
  const header = [
    "dataset",
    "text",
    "encoder",
    "test images",
    ...MODELS.map((m) => `${m} Dice`),
    ...CONTROLS.map((m) => `ProLearn - ${m} [95% CI]`),
    "PSA own-report AUC",
    "filter",
    "minutes",
  ];
  const lines = [`| ${header.join(" | ")} |`, `|${header.map(() => "---").join("|")}|`];
  for (const o of outcomes) {
    const text = `${+(o.textAvailability * 100).toFixed(2)}%`;
    if (o.status !== "ok") {
      lines.push(
        `| ${DATASETS[o.dataset].label} | ${text} | ${o.encoder} | ${o.status}: ${(o.error ?? "").replace(/\|/g, "/").replace(/\n/g, " ")} |${header
          .slice(4)
          .map(() => "")
          .join(" |")} |`,
      );
      continue;
    }
    const dice = MODELS.map((m) => (o.dice?.[m] ? `${f3(o.dice[m]!.mean)} ± ${f3(o.dice[m]!.sd)}` : "-"));
    const diffs = CONTROLS.map((m) => {
      const p = o.paired?.find((x) => x.b === m);
      return p && Number.isFinite(p.meanDiff) ? `${signed(p.meanDiff)} [${signed(p.ci95[0])}, ${signed(p.ci95[1])}]` : "-";
    });
    const auc = typeof o.usefulness?.ownReportAuc === "number" ? f3(o.usefulness.ownReportAuc) : "-";
    lines.push(
      `| ${DATASETS[o.dataset].label} | ${text} | ${o.encoder} | ${o.testImages} | ${dice.join(" | ")} | ${diffs.join(" | ")} | ${auc} | ${o.filter?.decision ?? "-"} | ${o.minutes.toFixed(1)} |`,
    );
  }
  return lines.join("\n");
}

console.log(
  `real-data PSA benchmark: ${grid.length} rows, seeds ${seeds}${epochs !== undefined ? `, epochs capped at ${epochs}` : ""}, workdir ${workdir}, load ${os
    .loadavg()
    .map((l) => l.toFixed(2))
    .join(" ")} on ${os.cpus().length} x ${os.cpus()[0]?.model.trim()}`,
);
await mkdir(path.dirname(outFile), { recursive: true });
const outcomes: Outcome[] = [];
for (const row of grid) {
  console.log(`\n== ${DATASETS[row.dataset].label}, text ${row.textAvailability}, encoder ${row.encoder}`);
  const outcome = await runRow(row);
  outcomes.push(outcome);
  console.log(`  ${outcome.status}${outcome.error ? `: ${outcome.error}` : ""} in ${outcome.minutes.toFixed(1)} min`);
  const preamble = `Dice: per-image mean on the test split, mean ± sd over ${seeds} seed${seeds === 1 ? "" : "s"}; differences: ProLearn minus each model per test image (seeds pooled), paired bootstrap 95% interval. 64 px, CPU${epochs !== undefined ? `, epochs capped at ${epochs}` : ""}. bench/real-psa.ts, ${new Date().toISOString().slice(0, 10)}.`;
  await writeFile(outFile, `${preamble}\n\n${markdownTable(outcomes)}\n`);
  await writeFile(outFile.replace(/\.md$/, "") + ".json", JSON.stringify(outcomes, null, 2) + "\n");
}
console.log(`\n${markdownTable(outcomes)}\n\nwritten to ${outFile}`);
process.exit(outcomes.every((o) => o.status !== "failed") ? 0 : 1);
