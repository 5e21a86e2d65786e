import { KEPT_REASONS, type QuarantineEntry, type QuarantineReason } from "./reasons.js";
import type { Split } from "./reports.js";

export interface SplitCounts {
  samples: number;
  withReport: number;
  reportAvailable: number;
  emptyMasks: number;
}

export interface Stats {
  min: number;
  max: number;
  mean: number;
}

/** What the dataset looks like after ingest; deterministic (no times, no absolute paths). */
export interface Fingerprint {
  dataset: string;
  layout: string;
  layoutReason: string;
  splitRule: string;
  textAvailability: number;
  seed: number;
  found: number;
  ingested: number;
  quarantined: number;
  imageOnly: number;
  orphanReports: number;
  identicalCopies: number;
  splits: Record<Split, SplitCounts>;
  /** Share of ingested samples that have a report / whose report is available. */
  reportCoverage: { withReport: number; available: number; trainAvailable: number };
  imageWidth: Stats;
  imageHeight: Stats;
  imageFormats: Record<string, number>;
  /** Foreground fraction of the masks, with quartiles. */
  maskCoverage: Stats & { p25: number; median: number; p75: number };
  quarantineByReason: Record<string, number>;
}

export class FingerprintBuilder {
  private readonly splits: Record<Split, SplitCounts> = {
    train: { samples: 0, withReport: 0, reportAvailable: 0, emptyMasks: 0 },
    val: { samples: 0, withReport: 0, reportAvailable: 0, emptyMasks: 0 },
    test: { samples: 0, withReport: 0, reportAvailable: 0, emptyMasks: 0 },
  };
  private readonly widths: number[] = [];
  private readonly heights: number[] = [];
  private readonly coverages: number[] = [];
  private readonly formats: Record<string, number> = {};

  add(row: {
    split: string;
    width: number;
    height: number;
    report: string | null;
    report_available: boolean;
    mask_empty: boolean;
    mask_coverage: number;
    image_format: string;
  }): void {
    const s = this.splits[row.split as Split];
    s.samples++;
    if (row.report !== null) s.withReport++;
    if (row.report_available) s.reportAvailable++;
    if (row.mask_empty) s.emptyMasks++;
    this.widths.push(row.width);
    this.heights.push(row.height);
    this.coverages.push(row.mask_coverage);
    this.formats[row.image_format] = (this.formats[row.image_format] ?? 0) + 1;
  }

  build(
    meta: Omit<
      Fingerprint,
      "splits" | "reportCoverage" | "imageWidth" | "imageHeight" | "imageFormats" | "maskCoverage" | "quarantineByReason" | "ingested" | "quarantined"
    >,
    quarantine: readonly QuarantineEntry[],
  ): Fingerprint {
    const ingested = this.widths.length;
    const total = (key: keyof SplitCounts) => this.splits.train[key] + this.splits.val[key] + this.splits.test[key];
    const byReason: Record<string, number> = {};
    for (const q of quarantine) byReason[q.reason] = (byReason[q.reason] ?? 0) + 1;
    const sorted = [...this.coverages].sort((a, b) => a - b);
    return {
      ...meta,
      ingested,
      quarantined: quarantine.filter((q) => q.scope === "image" && !q.kept).length,
      splits: this.splits,
      reportCoverage: {
        withReport: ratio(total("withReport"), ingested),
        available: ratio(total("reportAvailable"), ingested),
        trainAvailable: ratio(this.splits.train.reportAvailable, this.splits.train.samples),
      },
      imageWidth: stats(this.widths),
      imageHeight: stats(this.heights),
      imageFormats: Object.fromEntries(Object.entries(this.formats).sort()),
      maskCoverage: { ...stats(this.coverages), p25: quantile(sorted, 0.25), median: quantile(sorted, 0.5), p75: quantile(sorted, 0.75) },
      quarantineByReason: Object.fromEntries(Object.entries(byReason).sort()),
    };
  }
}

function round(x: number): number {
  return Math.round(x * 1e6) / 1e6;
}

function ratio(a: number, b: number): number {
  return b === 0 ? 0 : round(a / b);
}

function stats(values: readonly number[]): Stats {
  if (!values.length) return { min: 0, max: 0, mean: 0 };
  let min = Infinity;
  let max = -Infinity;
  let sum = 0;
  for (const v of values) {
    if (v < min) min = v;
    if (v > max) max = v;
    sum += v;
  }
  return { min: round(min), max: round(max), mean: round(sum / values.length) };
}

function quantile(sorted: readonly number[], q: number): number {
  if (!sorted.length) return 0;
  const pos = (sorted.length - 1) * q;
  const lo = Math.floor(pos);
  const hi = Math.ceil(pos);
  return round(sorted[lo]! + (sorted[hi]! - sorted[lo]!) * (pos - lo));
}

/** The fingerprint as a plain-text table (printed by the stage). */
export function formatFingerprint(f: Fingerprint): string {
  const pct = (x: number) => `${(x * 100).toFixed(1)}%`;
  const lines = [
    `${f.dataset} (${f.layout}); split: ${f.splitRule}`,
    `found ${f.found} images = ingested ${f.ingested} + set aside ${f.quarantined}; image-only ${f.imageOnly}; orphan reports ${f.orphanReports}${f.identicalCopies ? `; identical case copies ${f.identicalCopies}` : ""}`,
    "split   samples  with report  available  empty masks",
  ];
  for (const split of ["train", "val", "test"] as const) {
    const s = f.splits[split];
    lines.push(
      `${split.padEnd(6)} ${String(s.samples).padStart(8)} ${String(s.withReport).padStart(12)} ${String(s.reportAvailable).padStart(10)} ${String(s.emptyMasks).padStart(12)}`,
    );
  }
  lines.push(
    `image size ${f.imageWidth.min}-${f.imageWidth.max} x ${f.imageHeight.min}-${f.imageHeight.max}; formats ${
      Object.entries(f.imageFormats)
        .map(([k, v]) => `${k} ${v}`)
        .join(", ") || "-"
    }`,
    `mask coverage mean ${pct(f.maskCoverage.mean)}, quartiles ${pct(f.maskCoverage.p25)} / ${pct(f.maskCoverage.median)} / ${pct(f.maskCoverage.p75)}, max ${pct(f.maskCoverage.max)}`,
    `train reports available: ${pct(f.reportCoverage.trainAvailable)} (textAvailability ${f.textAvailability}, seed ${f.seed})`,
  );
  // Three counts meet here: images set aside (the "found" line), every input set aside (images,
  // report files, stray masks) and the flagged-but-kept samples; name each so none reads as a typo.
  const reasons = Object.entries(f.quarantineByReason);
  const list = (entries: [string, number][]) => entries.map(([r, n]) => `${r} ${n}`).join(", ");
  const setAside = reasons.filter(([r]) => !KEPT_REASONS.has(r as QuarantineReason));
  const kept = reasons.filter(([r]) => KEPT_REASONS.has(r as QuarantineReason));
  const total = (entries: [string, number][]) => entries.reduce((n, [, c]) => n + c, 0);
  if (!reasons.length) lines.push("quarantine: none");
  else {
    if (setAside.length)
      lines.push(
        `quarantine, set aside: ${total(setAside)} input${total(setAside) === 1 ? "" : "s"} (${f.quarantined} image${f.quarantined === 1 ? "" : "s"}, ${total(setAside) - f.quarantined} other): ${list(setAside)}`,
      );
    if (kept.length) lines.push(`quarantine, kept and flagged: ${total(kept)} sample${total(kept) === 1 ? "" : "s"}: ${list(kept)}`);
  }
  return lines.join("\n");
}
