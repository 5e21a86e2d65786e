/**
 * The learned embed encoder on the real QaTa-COV19 subset (../shared/data, SGSeg layout: 1,200
 * train / 200 val / 300 test X-rays): the pipeline of issue 15 as written,
 *
 *   stages: { ingest: {}, embed: { encoder: learned, imageSize: 64 }, prototypes: {} }
 *
 * at each text availability, with each head, next to the builtin encoder. Prints the prototypes
 * stage's usefulness figures on the validation rows (own-report AUC, centred cosine, their
 * shuffled-prototype baselines), the heads' cross-validated AUC on the paired training rows, and
 * the embed stage's wall time (trunk training + head + embedding every row), with the load average.
 *
 *   node --import tsx bench/learned-encoder.ts [--availability 0.1,0.5,0.01] [--heads ridge,contrastive] [--no-builtin] [--workdir DIR]
 *
 * The trunk depends on the training images and masks only, so the first run trains it and the
 * other availabilities and heads reuse its checkpoint (their embed time is head + embedding).
 * Use a fresh --workdir to time the trunk again.
 */
import { existsSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { parseArgs } from "node:util";
import { definePipeline, resolvePipeline, runPipeline, STAGES } from "../src/index.js";

const REAL = process.env.PROLEARN_REAL_DATA ?? path.resolve(import.meta.dirname, "../../shared/data");
const ROOT = path.join(REAL, "qata-cov19/QaTa");

const { values } = parseArgs({
  options: {
    availability: { type: "string", default: "0.1,0.5,0.01" },
    heads: { type: "string", default: "ridge,contrastive" },
    "no-builtin": { type: "boolean", default: false },
    workdir: { type: "string", default: path.join(os.tmpdir(), "prolearn-bench-learned") },
    "image-size": { type: "string", default: "64" },
  },
});

if (!existsSync(ROOT)) {
  console.error(`the real QaTa subset is not at ${ROOT} (set PROLEARN_REAL_DATA); nothing to measure`);
  process.exit(2);
}

interface Row {
  availability: number;
  encoder: string;
  seconds: number;
  trunkSeconds: number | null;
  cvAuc: number | null;
  // biome-ignore lint/suspicious/noExplicitAny: stage summaries are free-form JSON, read here by key path
  usefulness: Record<string, any>;
  load: string;
}

async function measure(availability: number, embed: Record<string, unknown>): Promise<Row> {
  const pipeline = resolvePipeline(
    definePipeline({
      name: "bench-learned",
      workdir: values.workdir!,
      dataset: { kind: "qata-cov19", root: ROOT, layout: "sgseg", textAvailability: availability, seed: 42 },
      stages: { ingest: {}, embed, prototypes: {} },
    } as never),
    STAGES,
    { baseDir: process.cwd() },
  );
  const before = os.loadavg()[0]!;
  const result = await runPipeline(pipeline, {
    registry: STAGES,
    onEvent: (e) => {
      if (e.kind === "log" && e.stage !== "ingest") console.error(`  ${e.stage}: ${e.message}`);
    },
  });
  if (result.status !== "ok")
    throw new Error(
      result.stages
        .map((s) => s.error)
        .filter(Boolean)
        .join("\n"),
    );
  const embedResult = result.stages.find((s) => s.name === "embed")!;
  // biome-ignore lint/suspicious/noExplicitAny: stage summaries are free-form JSON, read here by key path
  const learned = embedResult.summary.learned as { head: string; selection: Record<string, any>; trunk: Record<string, any> } | undefined;
  // biome-ignore lint/suspicious/noExplicitAny: stage summaries are free-form JSON, read here by key path
  const usefulness = result.stages.find((s) => s.name === "prototypes")!.summary.usefulness as Record<string, any>;
  const cv = learned ? (learned.head === "contrastive" ? learned.selection.contrastive?.crossValidatedAuc : learned.selection.ridge?.crossValidatedAuc) : null;
  return {
    availability,
    encoder: learned ? `learned (${learned.head})` : String(embed.encoder),
    seconds: embedResult.seconds,
    trunkSeconds: learned && learned.trunk.resumedEpochs === 0 ? learned.trunk.trunkSeconds : null,
    cvAuc: typeof cv === "number" ? cv : null,
    usefulness,
    load: `${before.toFixed(1)} -> ${os.loadavg()[0]!.toFixed(1)}`,
  };
}

const rows: Row[] = [];
const f = (v: unknown, digits = 3) => (typeof v === "number" && Number.isFinite(v) ? v.toFixed(digits) : "-");
const print = (r: Row) =>
  console.log(
    `| ${Math.round(r.availability * 100)}% | ${r.encoder} | ${r.usefulness.samples} | **${f(r.usefulness.ownReportAuc)}** | ${f(r.usefulness.shuffled?.ownReportAuc)} | ${f(r.usefulness.centredCosine)} | ${f(r.usefulness.shuffled?.centredCosine)} | ${r.usefulness.passed ? "yes" : "no"} | ${f(r.cvAuc)} | ${f(r.seconds, 0)} s${r.trunkSeconds !== null ? ` (trunk ${f(r.trunkSeconds, 0)} s)` : ""} | ${r.load} |`,
  );
console.log(`machine: ${os.cpus().length} x ${os.cpus()[0]?.model ?? "cpu"}, node ${process.version}; workdir ${values.workdir}`);
console.log(
  "| text | query encoder | val images | own-report AUC | shuffled | centred cosine | shuffled | passed | head CV AUC (paired train rows) | embed stage wall time | load avg (1 min) |",
);
console.log("|---|---|---|---|---|---|---|---|---|---|---|");
for (const availability of values.availability!.split(",").map(Number)) {
  for (const head of values.heads!.split(",").filter(Boolean)) {
    const row = await measure(availability, { encoder: "learned", imageSize: Number(values["image-size"]), head });
    rows.push(row);
    print(row);
  }
  if (!values["no-builtin"]) {
    const row = await measure(availability, { encoder: "builtin" });
    rows.push(row);
    print(row);
  }
}
