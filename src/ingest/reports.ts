import { readFileSync } from "node:fs";
import { readFile, readdir, stat } from "node:fs/promises";
import path from "node:path";
import { quarantineEntry, type QuarantineEntry } from "./reasons.js";
import { parseDelimited } from "../io/csv.js";

export type Split = "train" | "val" | "test";

/** One report row as found in a report source, before it is matched to an image. */
export interface ReportEntry {
  /** The image or mask name exactly as the report source writes it. */
  key: string;
  /** Verbatim text. */
  text: string;
  /** Absolute path of the file the row came from. */
  file: string;
  /** 1-based row (data rows, header excluded; JSON: array index + 1). */
  row: number;
  /** Split the source itself assigns (file name or JSON section), when it does. */
  split?: Split;
}

export interface ReportSet {
  entries: ReportEntry[];
  problems: QuarantineEntry[];
  /** Absolute report files read, in reading order. */
  files: string[];
}

/**
 * The normalised report: LViT's padding markers (" EOF XXX XXX ...") removed, runs of
 * whitespace folded to one space, doubled full stops ("..") reduced to one, no space before
 * punctuation. Wording, case and typos are kept: they are the data.
 */
export function normalizeReport(text: string): string {
  return text
    .replace(/\s*\bEOF\b(?:\s+XXX\b)*/g, " ")
    .replace(/(?:\s+XXX\b)+\s*$/g, " ")
    .replace(/\s+/g, " ")
    .replace(/\s+([.,;:])/g, "$1")
    .replace(/\.{2,}/g, ".")
    .trim();
}

/** Split named by a report file's name: `Train_text.xlsx`, `val.json`, `test.csv`, `Train_Val_text.xlsx` (none). */
export function splitFromFileName(file: string): Split | undefined {
  const stem = path.basename(file).toLowerCase();
  const hasTrain = /(^|[^a-z])train/.test(stem);
  const hasVal = /(^|[^a-z])val(id)?([^a-z]|$)|(^|[^a-z])valid/.test(stem);
  const hasTest = /(^|[^a-z])test/.test(stem);
  if (hasTrain && !hasVal && !hasTest) return "train";
  if (hasVal && !hasTrain && !hasTest) return "val";
  if (hasTest && !hasTrain && !hasVal) return "test";
  return undefined;
}

const IMAGE_COLUMNS = ["image", "image_path", "img_name", "name", "filename", "file"];
const TEXT_COLUMNS = ["description", "text", "caption", "report", "prompt"];

function tableToEntries(file: string, rows: string[][], split: Split | undefined, out: ReportSet): void {
  const display = file;
  if (rows.length === 0 || (rows.length === 1 && rows[0]!.every((c) => c.trim() === ""))) {
    out.problems.push(quarantineEntry({ source: display, reason: "empty-report-file", detail: "the file holds no rows", scope: "report" }));
    return;
  }
  const header = rows[0]!.map((c) => c.trim().toLowerCase());
  const imageColumn = header.findIndex((h) => IMAGE_COLUMNS.includes(h));
  const textColumn = header.findIndex((h) => TEXT_COLUMNS.includes(h));
  if (imageColumn < 0 || textColumn < 0) {
    out.problems.push(
      quarantineEntry({
        source: display,
        reason: "malformed-report-file",
        detail: `header ${JSON.stringify(rows[0])} lacks an image column (${IMAGE_COLUMNS.join("/")}) or a text column (${TEXT_COLUMNS.join("/")})`,
        scope: "report",
      }),
    );
    return;
  }
  if (rows.length === 1) {
    out.problems.push(quarantineEntry({ source: display, reason: "empty-report-file", detail: "the file holds a header but no data rows", scope: "report" }));
    return;
  }
  for (let r = 1; r < rows.length; r++) {
    const cells = rows[r]!;
    const key = (cells[imageColumn] ?? "").trim();
    const text = cells[textColumn] ?? "";
    if (!key || !text.trim()) {
      out.problems.push(
        quarantineEntry({ source: display, row: r, reason: "malformed-report-row", detail: !key ? "no image name" : `no text for ${key}`, scope: "report" }),
      );
      continue;
    }
    out.entries.push({ key, text, file, row: r, split });
  }
}

async function readCsv(file: string, out: ReportSet): Promise<void> {
  const text = await readFile(file, "utf8");
  const firstLine = text.replace(/^\uFEFF/, "").split(/\r?\n/, 1)[0] ?? "";
  const delimiter = firstLine.includes(";") && !firstLine.includes(",") ? ";" : firstLine.includes("\t") && !firstLine.includes(",") ? "\t" : ",";
  let rows: string[][];
  try {
    rows = parseDelimited(text, delimiter);
  } catch (error) {
    out.problems.push(quarantineEntry({ source: file, reason: "malformed-report-file", detail: (error as Error).message, scope: "report" }));
    return;
  }
  tableToEntries(file, rows, splitFromFileName(file), out);
}

async function readXlsx(file: string, out: ReportSet): Promise<void> {
  let data: unknown[][];
  try {
    // Loaded on first use: only LViT-style layouts keep reports in workbooks.
    const { readSheet } = await import("read-excel-file/node");
    data = (await readSheet(file)) as unknown[][];
  } catch (error) {
    out.problems.push(quarantineEntry({ source: file, reason: "malformed-report-file", detail: `not a readable xlsx workbook: ${(error as Error).message}`, scope: "report" }));
    return;
  }
  const rows = data.map((r) => r.map((c) => (c === null || c === undefined ? "" : String(c))));
  tableToEntries(file, rows, splitFromFileName(file), out);
}

function promptText(prompts: unknown, reportKey: string): string | undefined {
  if (!prompts || typeof prompts !== "object") return undefined;
  const value = (prompts as Record<string, unknown>)[reportKey];
  // p7..p9 hold five alternative sentences; the first one is the report.
  if (Array.isArray(value)) return typeof value[0] === "string" ? value[0] : undefined;
  return typeof value === "string" ? value : undefined;
}

async function readJson(file: string, reportKey: string, out: ReportSet): Promise<void> {
  let data: unknown;
  try {
    const text = await readFile(file, "utf8");
    if (!text.trim()) {
      out.problems.push(quarantineEntry({ source: file, reason: "empty-report-file", detail: "the file is empty", scope: "report" }));
      return;
    }
    data = JSON.parse(text);
  } catch (error) {
    out.problems.push(quarantineEntry({ source: file, reason: "malformed-report-file", detail: `invalid JSON: ${(error as Error).message}`, scope: "report" }));
    return;
  }
  const sections: { records: unknown[]; split: Split | undefined }[] = [];
  if (Array.isArray(data)) sections.push({ records: data, split: splitFromFileName(file) });
  else if (data && typeof data === "object") {
    // SGSeg annotation.json: {"train": [...], "valid": [...], "test": [...]}
    for (const [section, records] of Object.entries(data)) {
      if (!Array.isArray(records)) continue;
      sections.push({ records, split: splitFromFileName(section) });
    }
  }
  if (sections.length === 0) {
    out.problems.push(quarantineEntry({ source: file, reason: "malformed-report-file", detail: "expected an array of records or an object of arrays (train/valid/test)", scope: "report" }));
    return;
  }
  if (sections.every((s) => s.records.length === 0)) {
    out.problems.push(quarantineEntry({ source: file, reason: "empty-report-file", detail: "no records", scope: "report" }));
    return;
  }
  let row = 0;
  for (const { records, split } of sections) {
    for (const record of records) {
      row++;
      const r = (record ?? {}) as Record<string, unknown>;
      const key = [r.image_path, r.img_name, r.image, r.Image, r.mask_name].find((v) => typeof v === "string" && v.trim()) as string | undefined;
      const text = typeof r.caption === "string" ? r.caption : typeof r.Description === "string" ? r.Description : typeof r.report === "string" ? r.report : promptText(r.prompts, reportKey);
      if (!key || text === undefined || !text.trim()) {
        out.problems.push(
          quarantineEntry({
            source: file,
            row,
            reason: "malformed-report-row",
            detail: !key ? "record has no image name (image_path/img_name)" : `record for ${key} has no text${r.prompts ? ` under prompts.${reportKey}` : ""}`,
            scope: "report",
          }),
        );
        continue;
      }
      out.entries.push({ key: key.trim(), text, file, row, split });
    }
  }
}

const REPORT_EXTENSIONS = new Set([".csv", ".xlsx", ".json"]);

/** Report files in a folder (not recursive), sorted so reading order is stable. */
export async function listReportFiles(folder: string): Promise<string[]> {
  const names = (await readdir(folder)).filter((n) => !n.startsWith(".") && !n.startsWith("~$") && REPORT_EXTENSIONS.has(path.extname(n).toLowerCase())).sort();
  return names.map((n) => path.join(folder, n));
}

/** Reads report tables (xlsx, csv, json) from files or folders; problems are collected, not thrown. */
export async function readReportSources(sources: string[], reportKey: string): Promise<ReportSet> {
  const out: ReportSet = { entries: [], problems: [], files: [] };
  for (const source of sources) {
    const info = await stat(source).catch(() => undefined);
    if (!info) {
      out.problems.push(quarantineEntry({ source, reason: "malformed-report-file", detail: "the reports path does not exist", scope: "report" }));
      continue;
    }
    const files = info.isDirectory() ? await listReportFiles(source) : [source];
    for (const file of files) {
      out.files.push(file);
      const ext = path.extname(file).toLowerCase();
      if (ext === ".csv") await readCsv(file, out);
      else if (ext === ".xlsx") await readXlsx(file, out);
      else if (ext === ".json") await readJson(file, reportKey, out);
      else out.problems.push(quarantineEntry({ source: file, reason: "malformed-report-file", detail: `unsupported report format ${ext || "(no extension)"}: use .xlsx, .csv or .json`, scope: "report" }));
    }
  }
  return out;
}

/** ProLearn layout: `reports/<id>.txt`, one report per file. */
export async function readTextReports(folder: string): Promise<ReportSet> {
  const out: ReportSet = { entries: [], problems: [], files: [] };
  const names = (await readdir(folder)).filter((n) => n.toLowerCase().endsWith(".txt")).sort();
  for (const name of names) {
    const file = path.join(folder, name);
    out.files.push(file);
    // One small file per image (10,000s of them): a plain read costs a tenth of fs/promises'
    // open/stat/read/close round trips, and planning has nothing else to overlap with.
    const text = readFileSync(file, "utf8");
    if (!text.trim()) {
      out.problems.push(quarantineEntry({ source: file, reason: "empty-report-file", detail: "the report file is empty", scope: "report" }));
      continue;
    }
    out.entries.push({ key: name.slice(0, -4), text: text.replace(/\r?\n$/, ""), file, row: 1 });
  }
  return out;
}
