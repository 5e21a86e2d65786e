// The filter stage's implementation; its definition (./stage.ts) imports this module when the stage runs.
import { Bool, Field, Float32, List, Table, Utf8, vectorFromArray } from "apache-arrow";
import path from "node:path";
import { writeParquetFile } from "../io/parquet.js";
import type { StageContext } from "../pipeline/stage.js";
import { disposeParams, inputFile, loadModel } from "../segmenter/checkpoints.js";
import { budgetedPairs, loadSamples, type DecodedSample } from "../segmenter/data.js";
import type { FilterParams } from "./stage.js";
import { guideTextSide, type GuideTextSide } from "../segmenter/text-side.js";
import { evaluateBatches } from "../segmenter/loop.js";
import { diceFromCounts, overlapCounts } from "../segmenter/metrics.js";
import { deriveSeed } from "../segmenter/prng.js";
import { pairedBootstrap, type PairedDifference } from "../util/bootstrap.js";
import { makeBatch } from "../segmenter/data.js";
import type { GuideParams } from "../guide/stage.js";
import { segmenterForward, type BatchGuidance } from "../segmenter/guidance.js";
import type { ModelConfig, ParamStore } from "../segmenter/model.js";
import { initBackend, tf } from "../segmenter/runtime.js";

export interface FilteredRow {
  id: string;
  report: string;
  filteredReport: string;
  tokens: string[];
  scores: number[];
  kept: boolean[];
  threshold: number;
}

/**
 * Per-token relevance for each sample: the guide model's cross-attention weights averaged over
 * heads and image positions (all alike, or weighted by the lesion mask) in each guided decoder
 * stage, then over the stages. Scores of a report's tokens sum to 1 (attention is a softmax
 * over its tokens).
 */
export async function scoreTokens(
  store: ParamStore,
  config: ModelConfig,
  samples: readonly DecodedSample[],
  guidance: (indices: number[]) => BatchGuidance,
  tokenCounts: readonly number[],
  batchSize: number,
  positions: "lesion" | "all" = "all",
): Promise<number[][]> {
  const out: number[][] = [];
  const length = config.guidance.kind === "vocab" || config.guidance.kind === "features" ? config.guidance.maxTokens : 0;
  const size = config.net.imageSize;
  for (let start = 0; start < samples.length; start += batchSize) {
    const indices = Array.from({ length: Math.min(batchSize, samples.length - start) }, (_, i) => start + i);
    const batch = makeBatch(samples, indices, guidance);
    const averagedTensor = tf.tidy(() => {
      const attentionFocus = positions === "lesion" ? tf.tensor4d(batch.masks!, [batch.size, size, size, 1]) : undefined;
      const { attention } = segmenterForward(store, config, batch, { attention: true, attentionFocus });
      return tf.mean(tf.stack(attention!), 0);
    });
    const averaged = (await averagedTensor.data()) as Float32Array;
    averagedTensor.dispose();
    indices.forEach((i, b) => out.push(Array.from(averaged.subarray(b * length, b * length + tokenCounts[i]!))));
  }
  return out;
}

/**
 * Applies the threshold. `auto` uses the report's mean score (1/n for n tokens). A report where
 * no token passes keeps its single best token, so no filtered sentence is empty.
 */
export function applyThreshold(
  tokens: readonly string[],
  scores: readonly number[],
  threshold: number | "auto",
): { kept: boolean[]; threshold: number; filtered: string } {
  const effective = threshold === "auto" ? (scores.length ? scores.reduce((a, b) => a + b, 0) / scores.length : 0) : threshold;
  const kept = scores.map((s) => s > effective);
  if (tokens.length > 0 && !kept.some(Boolean)) {
    let best = 0;
    scores.forEach((s, i) => (s > scores[best]! ? (best = i) : undefined));
    kept[best] = true;
  }
  return { kept, threshold: effective, filtered: joinTokens(tokens.filter((_, i) => kept[i])) };
}

/** Joins words with spaces; WordPiece continuations ("##ing") attach to the previous piece. */
export function joinTokens(tokens: readonly string[]): string {
  let out = "";
  for (const t of tokens) out += t.startsWith("##") ? t.slice(2) : out ? ` ${t}` : t;
  return out;
}

export function filteredTable(rows: readonly FilteredRow[]): Table {
  const listOf = (type: Utf8 | Float32 | Bool) => new List(new Field("item", type, true));
  return new Table({
    id: vectorFromArray(
      rows.map((r) => r.id),
      new Utf8(),
    ),
    report: vectorFromArray(
      rows.map((r) => r.report),
      new Utf8(),
    ),
    filtered_report: vectorFromArray(
      rows.map((r) => r.filteredReport),
      new Utf8(),
    ),
    tokens: vectorFromArray(
      rows.map((r) => r.tokens),
      listOf(new Utf8()),
    ),
    scores: vectorFromArray(
      rows.map((r) => r.scores),
      listOf(new Float32()),
    ),
    kept: vectorFromArray(
      rows.map((r) => r.kept),
      listOf(new Bool()),
    ),
    threshold: vectorFromArray(
      rows.map((r) => r.threshold),
      new Float32(),
    ),
  });
}

/** Dice of each image with the guide reading the given reports (one per sample). */
async function guideDice(
  store: ParamStore,
  config: ModelConfig,
  text: GuideTextSide,
  samples: readonly DecodedSample[],
  reports: readonly string[],
  batchSize: number,
): Promise<number[]> {
  const withReports = samples.map((s, i) => ({ ...s, report: reports[i]! }));
  const encoded = await text.encode(withReports);
  const dice = new Array<number>(samples.length).fill(Number.NaN);
  await evaluateBatches(
    config,
    store,
    samples.length,
    batchSize,
    (ix) => makeBatch(withReports, ix, encoded.batch),
    (i, p) => (dice[i] = diceFromCounts(overlapCounts(p, samples[i]!.mask))),
  );
  return dice;
}

/** The `count` tokens a ranking puts first, in the report's order, joined. */
function keepRanked(tokens: readonly string[], count: number, rank: (token: string, position: number) => number): string {
  const order = tokens.map((t, i) => ({ i, r: rank(t, i) })).sort((a, b) => a.r - b.r || a.i - b.i);
  const chosen = new Set(order.slice(0, count).map((o) => o.i));
  return joinTokens(tokens.filter((_, i) => chosen.has(i)));
}

const mean = (xs: readonly number[]) => (xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : Number.NaN);

export interface FilterTrust {
  /** Validation samples within the text budget the check ran on. */
  validationPairs: number;
  /** The guide's mean validation Dice reading the whole report, the kept tokens, and as many tokens ranked by corpus frequency (most frequent first; rarest first). */
  diceAllTokens: number | null;
  diceKeptTokens: number | null;
  diceFrequentTokens: number | null;
  diceRareTokens: number | null;
  /** Kept minus whole report (paired over the validation images). */
  keptVsAll: PairedDifference | null;
  /** Kept minus the better trivial ranking (paired). */
  keptVsTrivial: PairedDifference | null;
  trivialRanking: "frequent" | "rare" | null;
  trusted: boolean;
  reason: string;
}

/**
 * Does the guide's attention pick the words that change its mask? On the validation pairs
 * within the text budget, the guide segments each image reading (a) the whole report, (b) the
 * tokens the threshold keeps, (c, d) as many tokens chosen by a trivial ranking (most frequent
 * words in the paired training reports first; rarest first). The choice is trusted when (b) is
 * within `tolerance` of (a) and the paired 95% interval of (b) minus the better of (c, d) lies
 * above 0.
 */
export async function checkTrust(args: {
  store: ParamStore;
  config: ModelConfig;
  text: GuideTextSide;
  val: readonly DecodedSample[];
  trainTokens: readonly (readonly string[])[];
  threshold: number | "auto";
  positions: "lesion" | "all";
  batchSize: number;
  tolerance: number;
  minPairs: number;
  seed: number;
}): Promise<FilterTrust> {
  const none: Omit<FilterTrust, "validationPairs" | "reason"> = {
    diceAllTokens: null,
    diceKeptTokens: null,
    diceFrequentTokens: null,
    diceRareTokens: null,
    keptVsAll: null,
    keptVsTrivial: null,
    trivialRanking: null,
    trusted: false,
  };
  const { val } = args;
  if (val.length < args.minPairs) {
    return {
      ...none,
      validationPairs: val.length,
      reason: `only ${val.length} validation report${val.length === 1 ? "" : "s"} within the text budget (the check needs ${args.minPairs}): every token is kept`,
    };
  }
  const counts = new Map<string, number>();
  for (const tokens of args.trainTokens) for (const t of tokens) counts.set(t, (counts.get(t) ?? 0) + 1);
  const encoded = await args.text.encode(val);
  const scores = await scoreTokens(
    args.store,
    args.config,
    val,
    encoded.batch,
    encoded.tokens.map((t) => t.length),
    args.batchSize,
    args.positions,
  );
  const kept: string[] = [];
  const frequent: string[] = [];
  const rare: string[] = [];
  val.forEach((_, i) => {
    const tokens = encoded.tokens[i]!;
    const decision = applyThreshold(tokens, scores[i]!, args.threshold);
    const k = decision.kept.filter(Boolean).length;
    kept.push(decision.filtered);
    frequent.push(keepRanked(tokens, k, (t) => -(counts.get(t) ?? 0)));
    rare.push(keepRanked(tokens, k, (t) => counts.get(t) ?? 0));
  });
  const all = await guideDice(
    args.store,
    args.config,
    args.text,
    val,
    val.map((s) => s.report!),
    args.batchSize,
  );
  const keptDice = await guideDice(args.store, args.config, args.text, val, kept, args.batchSize);
  const frequentDice = await guideDice(args.store, args.config, args.text, val, frequent, args.batchSize);
  const rareDice = await guideDice(args.store, args.config, args.text, val, rare, args.batchSize);
  const trivialRanking = mean(rareDice) > mean(frequentDice) ? "rare" : "frequent";
  const keptVsAll = pairedBootstrap(keptDice, all, { seed: deriveSeed(args.seed, "filter-trust", "all") });
  const keptVsTrivial = pairedBootstrap(keptDice, trivialRanking === "rare" ? rareDice : frequentDice, {
    seed: deriveSeed(args.seed, "filter-trust", "trivial"),
  });
  const f = (x: number) => (Math.abs(x) < 5e-4 ? 0 : x).toFixed(3);
  const losesToAll = keptVsAll.meanDiff < -args.tolerance;
  const beatsTrivial = keptVsTrivial.ci95[0] > 0;
  const trusted = !losesToAll && beatsTrivial;
  const reason = trusted
    ? `the kept tokens segment within ${args.tolerance} Dice of the whole report (${f(keptVsAll.meanDiff)}) and beat the ${trivialRanking}-word ranking (${f(keptVsTrivial.meanDiff)}, 95% CI ${f(keptVsTrivial.ci95[0])}..${f(keptVsTrivial.ci95[1])})`
    : losesToAll
      ? `the kept tokens lose ${f(-keptVsAll.meanDiff)} Dice against the whole report (tolerance ${args.tolerance}): every token is kept`
      : `the kept tokens do no better than keeping the ${trivialRanking} words (${f(keptVsTrivial.meanDiff)}, 95% CI ${f(keptVsTrivial.ci95[0])}..${f(keptVsTrivial.ci95[1])}): every token is kept`;
  return {
    validationPairs: val.length,
    diceAllTokens: mean(all),
    diceKeptTokens: mean(keptDice),
    diceFrequentTokens: mean(frequentDice),
    diceRareTokens: mean(rareDice),
    keptVsAll,
    keptVsTrivial,
    trivialRanking,
    trusted,
    reason,
  };
}

export async function runFilter(ctx: StageContext<FilterParams>) {
  const params = ctx.params;
  await initBackend(params.backend, (line) => ctx.log(line));
  const { file, store } = await loadModel(inputFile(ctx, "guide", "guide-model.json"));
  try {
    const config = file.config;
    const samples = await loadSamples(inputFile(ctx, "ingest", "samples.parquet"), {
      size: config.net.imageSize,
      channels: config.net.inChannels as 1 | 3,
      cache: ctx.rowCache("train-decoded"),
      splits: ["train", "val"],
    });
    // The text budget (docs/training.md): the training reports the guide learnt from, and for the
    // trust check (a choice) only the validation reports within the budget.
    const paired = budgetedPairs(samples, "train");
    const val = budgetedPairs(samples, "val");
    const guideParamsUsed = (ctx.pipeline.stages.guide ?? {}) as GuideParams;
    const encoderKind = config.guidance.kind === "features" ? "biomedclip" : "builtin";
    const text = await guideTextSide({ ...guideParamsUsed, encoder: encoderKind } as GuideParams, ctx.pipeline.baseDir, [], config.guidance);
    let encoded: Awaited<ReturnType<GuideTextSide["encode"]>>, trust: FilterTrust;
    try {
      encoded = await text.encode(paired);
      trust = await checkTrust({
        store,
        config,
        text,
        val,
        trainTokens: encoded.tokens,
        threshold: params.threshold,
        positions: params.positions,
        batchSize: params.batchSize,
        tolerance: params.tolerance,
        minPairs: params.minValidationPairs,
        seed: ctx.pipeline.dataset.seed,
      });
    } finally {
      await text.close();
    }
    const decision: "filter" | "keep-all" = params.trust === "always" || trust.trusted ? "filter" : "keep-all";
    ctx.log(
      `filter: ${decision === "filter" ? "filtering" : "keeping every token"}${params.trust === "always" && !trust.trusted ? " (trust: always)" : ""}; ${trust.reason}`,
    );
    const scores = await scoreTokens(
      store,
      config,
      paired,
      encoded.batch,
      encoded.tokens.map((t) => t.length),
      params.batchSize,
      params.positions,
    );
    const rows: FilteredRow[] = paired.map((sample, i) => {
      const tokens = encoded.tokens[i]!;
      const applied = applyThreshold(tokens, scores[i]!, params.threshold);
      // Keeping every token hands on the report itself, so a distrusted filter changes nothing.
      return decision === "filter"
        ? {
            id: sample.id,
            report: sample.report!,
            filteredReport: applied.filtered,
            tokens,
            scores: scores[i]!,
            kept: applied.kept,
            threshold: applied.threshold,
          }
        : {
            id: sample.id,
            report: sample.report!,
            filteredReport: sample.report!,
            tokens,
            scores: scores[i]!,
            kept: tokens.map(() => true),
            threshold: applied.threshold,
          };
    });
    await writeParquetFile(path.join(ctx.outDir, "filtered.parquet"), filteredTable(rows));
    const totalTokens = rows.reduce((n, r) => n + r.tokens.length, 0);
    const keptTokens = rows.reduce((n, r) => n + r.kept.filter(Boolean).length, 0);
    return {
      reports: rows.length,
      tokens: totalTokens,
      keptTokens,
      keptFraction: totalTokens ? keptTokens / totalTokens : 0,
      threshold: params.threshold,
      positions: params.positions,
      decision,
      trust,
    };
  } finally {
    disposeParams(store);
  }
}
