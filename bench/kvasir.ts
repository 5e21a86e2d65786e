/**
 * The whole pipeline (ingest -> guide -> filter -> embed -> prototypes -> train -> evaluate with
 * the image-only U-Net baseline) on the real Kvasir-SEG subset, at the small size of
 * pipelines/kvasir-seg.yaml. Prints per-stage wall time and the metrics table (ProLearn against
 * the baseline trained with the same budget in the same run) and writes it to
 * $PROLEARN_BENCH_OUT (default bench/out)/kvasir-metrics.json. A benchmark, not a CI gate.
 * Data: $PROLEARN_REAL_DATA or ../shared/data (kvasir-seg/Kvasir-SEG, kvasir-seg/reports-medvlsm).
 * Usage: node --import tsx bench/kvasir.ts [--set key=value ...]  (e.g. --set stages.train.epochs=8)
 */
import { existsSync } from "node:fs";
import { mkdir, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { parseValue } from "../src/cli/pipeline-arg.js";
import { runPipeline } from "../src/pipeline/engine.js";
import { loadPipelineFile } from "../src/pipeline/spec.js";
import { STAGES } from "../src/stages.js";

const REAL = process.env.PROLEARN_REAL_DATA ?? path.resolve(import.meta.dirname, "../../shared/data");
const root = path.join(REAL, "kvasir-seg", "Kvasir-SEG");
const reports = path.join(REAL, "kvasir-seg", "reports-medvlsm");
if (!existsSync(root) || !existsSync(reports)) {
  console.error(`skipped: ${root} or ${reports} is absent; set PROLEARN_REAL_DATA`);
  process.exit(0);
}
const overrides: Record<string, unknown> = {
  "dataset.root": root,
  "dataset.reports": reports,
  workdir: process.env.PROLEARN_BENCH_WORKDIR ?? path.join(os.tmpdir(), "prolearn-bench-kvasir"),
};
const args = process.argv.slice(2);
for (let i = 0; i < args.length; i++) {
  if (args[i] !== "--set" || !args[i + 1]?.includes("=")) continue;
  const [key, ...rest] = args[++i]!.split("=");
  overrides[key!] = parseValue(rest.join("="));
}
const pipeline = loadPipelineFile(path.resolve(import.meta.dirname, "../pipelines/kvasir-seg.yaml"), STAGES, overrides);
console.log(
  `kvasir-seg benchmark: workdir ${pipeline.workdir}, load ${os
    .loadavg()
    .map((l) => l.toFixed(2))
    .join(" ")} on ${os.cpus().length} x ${os.cpus()[0]?.model.trim()}`,
);
const result = await runPipeline(pipeline, {
  registry: STAGES,
  onEvent: (event) => {
    if (event.kind === "stage-end")
      console.log(
        `  ${event.result.name.padEnd(10)} ${event.result.status.padEnd(6)} ${event.result.seconds.toFixed(1).padStart(7)} s${event.result.error ? `  ${event.result.error}` : ""}`,
      );
  },
});
if (result.status !== "ok") {
  console.error(`run failed: ${JSON.stringify(result.stages.filter((s) => s.error).map((s) => [s.name, s.error]))}`);
  process.exit(1);
}
const evaluate = result.stages.find((s) => s.name === "evaluate")!.summary as {
  testImages: number;
  textAvailability: number;
  prolearn: Record<string, number>;
  baseline: Record<string, number> | null;
};
const train = result.stages.find((s) => s.name === "train")!.summary as Record<string, unknown>;
const rows = [["ProLearn", evaluate.prolearn] as const, ...(evaluate.baseline ? [["U-Net baseline", evaluate.baseline] as const] : [])];
console.log(
  `\ntest images ${evaluate.testImages}, text availability ${evaluate.textAvailability}, train images ${String(train.trainImages)} (${String(train.pairedImages)} with reports); run ${result.seconds.toFixed(1)} s`,
);
console.log("model            Dice    mIoU    Dice(pooled)  IoU(pooled)");
for (const [name, m] of rows)
  console.log(
    `${name.padEnd(15)}  ${m.dice!.toFixed(4)}  ${m.iou!.toFixed(4)}  ${m.dicePooled!.toFixed(4).padStart(12)}  ${m.iouPooled!.toFixed(4).padStart(11)}`,
  );
if (evaluate.baseline) console.log(`ratio ProLearn / baseline Dice: ${(evaluate.prolearn.dice! / evaluate.baseline.dice!).toFixed(3)}`);
const outDir = process.env.PROLEARN_BENCH_OUT ?? path.resolve(import.meta.dirname, "out");
await mkdir(outDir, { recursive: true });
const file = path.join(outDir, "kvasir-metrics.json");
await writeFile(
  file,
  JSON.stringify(
    { seconds: result.seconds, stages: result.stages.map((s) => ({ name: s.name, status: s.status, seconds: s.seconds })), evaluate, train },
    null,
    2,
  ) + "\n",
);
console.log(`metrics written to ${file}`);
