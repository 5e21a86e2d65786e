import { readFileSync } from "node:fs";
import { QUARANTINE_TABLE, SAMPLES_TABLE } from "../ingest/tables.js";
import { withTable } from "../io/tables.js";
import type { DatasetPart, Part, ReportOptions } from "./model.js";
import { type StageOutputs, flattenSummary, guarded, spread } from "./outputs.js";
import { TRUTH_COLOR, thumbnailDataUri } from "./thumbnails.js";

const SPLIT_ORDER = ["train", "val", "test"];

interface SplitStats {
  samples: number;
  withReport: number;
  reportAvailable: number;
  emptyMasks: number;
}

/** The dataset section: per-split counts, the quarantine and a few thumbnails per split. */
export async function gatherDataset(outputs: StageOutputs, opts: ReportOptions): Promise<Part<DatasetPart>> {
  const why = outputs.missing("ingest");
  if (why) return { state: "absent", message: why };
  return withTable(SAMPLES_TABLE, outputs.file("ingest", "samples.parquet"), async (samples) => {
    const stats = new Map<string, SplitStats>();
    const rowsBySplit = new Map<string, number[]>();
    for await (const { offset, rows } of samples.slices(["split", "report_available", "report", "mask_empty"])) {
      for (let i = 0; i < rows.numRows; i++) {
        const name = rows.split[i]!;
        let s = stats.get(name);
        if (!s) stats.set(name, (s = { samples: 0, withReport: 0, reportAvailable: 0, emptyMasks: 0 }));
        s.samples++;
        if (rows.report[i] !== null) s.withReport++;
        if (rows.report_available[i]) s.reportAvailable++;
        if (rows.mask_empty[i]) s.emptyMasks++;
        let list = rowsBySplit.get(name);
        if (!list) rowsBySplit.set(name, (list = []));
        list.push(offset + i);
      }
    }
    const splitNames = [...stats.keys()].sort((a, b) => rank(a) - rank(b) || a.localeCompare(b));
    const quota = shareOut(
      splitNames.map((split) => rowsBySplit.get(split)!.length),
      opts.maxThumbnails,
    );
    const thumbnails: DatasetPart["thumbnails"] = [];
    for (const [index, split] of splitNames.entries()) {
      for (const row of spread(rowsBySplit.get(split)!, quota[index]!)) {
        const one = await samples.read(["id", "image", "mask", "mask_empty"], { offset: row, limit: 1 });
        const thumb = await thumbnailDataUri(one.image[0]!, [{ mask: one.mask[0]!, color: TRUTH_COLOR }], opts.thumbnailSize);
        thumbnails.push({ ...thumb, id: one.id[0]!, split, maskEmpty: one.mask_empty[0]! });
      }
    }
    const quarantineFile = outputs.optionalFile("ingest", "quarantine.parquet");
    const fingerprintFile = outputs.optionalFile("ingest", "fingerprint.json");
    return {
      state: "ok",
      data: {
        rows: samples.numRows,
        splits: splitNames.map((split) => ({ split, ...stats.get(split)! })),
        quarantine: quarantineFile
          ? await guarded(() => gatherQuarantine(quarantineFile))
          : { state: "absent", message: "ingest published no quarantine.parquet" },
        fingerprint: fingerprintFile ? flattenSummary(JSON.parse(readFileSync(fingerprintFile, "utf8")) as Record<string, unknown>, 16) : null,
        thumbnails,
      },
    };
  });
}

/** Splits `total` as evenly as the sizes allow: a small split gives its unused share to the others. */
export function shareOut(sizes: readonly number[], total: number): number[] {
  const quota = sizes.map(() => 0);
  let left = total;
  for (;;) {
    const open = sizes.map((_size, i) => i).filter((i) => quota[i]! < sizes[i]!);
    if (!open.length || left <= 0) return quota;
    const each = Math.max(1, Math.floor(left / open.length));
    for (const i of open) {
      const take = Math.min(each, sizes[i]! - quota[i]!, left);
      quota[i]! += take;
      left -= take;
    }
  }
}

function rank(split: string): number {
  const i = SPLIT_ORDER.indexOf(split);
  return i < 0 ? SPLIT_ORDER.length : i;
}

type QuarantinePart = Part<{ total: number; reasons: { reason: string; count: number; kept: number; examples: string[] }[] }>;

async function gatherQuarantine(file: string): Promise<QuarantinePart> {
  return withTable(QUARANTINE_TABLE, file, async (reader) => {
    const reasons = new Map<string, { count: number; kept: number; examples: string[] }>();
    for await (const { rows } of reader.slices(["reason", "source", "kept"])) {
      for (let i = 0; i < rows.numRows; i++) {
        const name = rows.reason[i]!;
        let r = reasons.get(name);
        if (!r) reasons.set(name, (r = { count: 0, kept: 0, examples: [] }));
        r.count++;
        if (rows.kept[i]) r.kept++;
        if (r.examples.length < 3) r.examples.push(rows.source[i]!);
      }
    }
    const sorted = [...reasons.entries()].map(([reason, r]) => ({ reason, ...r })).sort((a, b) => b.count - a.count || a.reason.localeCompare(b.reason));
    return { state: "ok", data: { total: reader.numRows, reasons: sorted } };
  });
}
