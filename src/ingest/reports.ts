import { readFileSync } from "node:fs";
import { readFile, readdir, realpath, stat } from "node:fs/promises";
import path from "node:path";
import { quarantineEntry, type QuarantineEntry } from "./reasons.js";
import { readDelimited, sniffDelimiter } from "../io/csv.js";
import { notARegularFile } from "./file-kind.js";

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
  /** Report files (or a named reports path) found but not read: links out of the root, not regular files, missing. */
  setAside: string[];
  /** What was recovered rather than set aside (printed as warnings). */
  warnings: string[];
}

/**
 * Where report files may lie after resolving symbolic links: the dataset root's real path for
 * sources inside the root; a source the user named outside the root bounds its own folder.
 */
export interface ReportBounds {
  /** Dataset root as configured. */
  root: string;
  /** Its real path. */
  realRoot: string;
}

function insideDir(child: string, parent: string): boolean {
  return child === parent || child.startsWith(parent + path.sep);
}

/** The real path of `file` when it leaves `boundary` (a symbolic link out), else undefined. */
async function escapeOf(file: string, boundary: string): Promise<string | undefined> {
  const real = await realpath(file).catch(() => undefined);
  return real !== undefined && !insideDir(real, boundary) ? real : undefined;
}

/**
 * Text of a report file's bytes. UTF-8 (a byte-order mark dropped), or UTF-16 when the file
 * starts with a UTF-16 byte-order mark (Excel's "Unicode Text" export); bytes that do not
 * decode mark the text lossy (U+FFFD where they were).
 */
export function decodeReportBytes(bytes: Uint8Array): { text: string; lossy: boolean } {
  const encoding = bytes[0] === 0xff && bytes[1] === 0xfe ? "utf-16le" : bytes[0] === 0xfe && bytes[1] === 0xff ? "utf-16be" : "utf-8";
  try {
    return { text: new TextDecoder(encoding, { fatal: true }).decode(bytes), lossy: false };
  } catch {
    return { text: new TextDecoder(encoding).decode(bytes), lossy: true };
  }
}

async function readText(file: string): Promise<{ text: string; lossy: boolean }> {
  return decodeReportBytes(await readFile(file));
}

/** Control characters no report text holds (NUL, escape, ...); tab, line ends and form feeds are text. */
// biome-ignore lint/suspicious/noControlCharactersInRegex: matching control characters is the point
const CONTROL_IN_TEXT = /[\u0000-\u0008\u000e-\u001f\u007f]/;

/**
 * Characters that have no place in a file name or report key: controls (newline, tab, C1),
 * invisible format characters (bidi overrides such as U+202E, zero-width spaces, U+FEFF) and
 * line/paragraph separators. A name holding one reads differently from what it is (a bidi
 * override shows `covid_1\u202Egnp.png` as `covid_1png.png`) and cannot be matched by eye.
 */
export const UNSAFE_NAME_CHARACTER = /[\p{Cc}\p{Cf}\p{Zl}\p{Zp}]/u;

/** Shows a name with its control and invisible characters escaped, for messages. */
export function visibleName(name: string): string {
  return JSON.stringify(name).replace(/[\p{Cc}\p{Cf}\p{Zl}\p{Zp}]/gu, (c) => `\\u${c.codePointAt(0)!.toString(16).toUpperCase().padStart(4, "0")}`);
}

/**
 * Adds a report row, or sets it aside: a key holding a control character (`invalid-id`), or a
 * key or text holding U+FFFD where the file was not UTF-8, or text holding a control character
 * such as NUL (`invalid-text-encoding`).
 */
function addEntry(out: ReportSet, entry: ReportEntry, lossy: boolean, where: string): void {
  if (UNSAFE_NAME_CHARACTER.test(entry.key)) {
    out.problems.push(
      quarantineEntry({
        source: entry.file,
        row: entry.row,
        reason: "invalid-id",
        detail: `${where}: image name ${visibleName(entry.key)} holds a control or invisible character`,
        scope: "report",
      }),
    );
    return;
  }
  if (lossy && (entry.key.includes("\uFFFD") || entry.text.includes("\uFFFD"))) {
    out.problems.push(
      quarantineEntry({
        source: entry.file,
        row: entry.row,
        reason: "invalid-text-encoding",
        detail: `${where}: the report for ${entry.key} holds bytes that are not UTF-8`,
        scope: "report",
      }),
    );
    return;
  }
  const control = CONTROL_IN_TEXT.exec(entry.text);
  if (control) {
    const code = `U+${control[0].charCodeAt(0).toString(16).toUpperCase().padStart(4, "0")}`;
    out.problems.push(
      quarantineEntry({
        source: entry.file,
        row: entry.row,
        reason: "invalid-text-encoding",
        detail: `${where}: the report for ${entry.key} holds the control character ${code} at offset ${control.index} (a binary file, or a corrupted export?)`,
        scope: "report",
      }),
    );
    return;
  }
  out.entries.push(entry);
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

/** One row of a report table with the line (CSV) or sheet row (xlsx) it comes from. */
interface TableRow {
  cells: string[];
  line: number;
}

const hasReportColumns = (cells: string[]) => {
  const names = cells.map((c) => c.trim().toLowerCase());
  return names.some((h) => IMAGE_COLUMNS.includes(h)) && names.some((h) => TEXT_COLUMNS.includes(h));
};

/**
 * Report rows of a table. `delimiter` (CSV) lets a row with more cells than its header be
 * recovered when the text is the last column: a report cut at its commas by a file saved
 * with another delimiter than the header's is joined back, and said so in a warning.
 */
function tableToEntries(
  file: string,
  rows: TableRow[],
  split: Split | undefined,
  out: ReportSet,
  options: { delimiter?: string; lossy?: boolean; unreadable?: { line: number; message: string }[] } = {},
): void {
  const display = file;
  const unreadable = options.unreadable ?? [];
  if (rows.length === 0 || (rows.length === 1 && rows[0]!.cells.every((c) => c.trim() === ""))) {
    if (unreadable.length) {
      out.problems.push(
        quarantineEntry({
          source: display,
          reason: "malformed-report-file",
          detail: `line ${unreadable[0]!.line}: ${unreadable[0]!.message}`,
          scope: "report",
        }),
      );
      return;
    }
    out.problems.push(quarantineEntry({ source: display, reason: "empty-report-file", detail: "the file holds no rows", scope: "report" }));
    return;
  }
  const headerCells = rows[0]!.cells;
  const header = headerCells.map((c) => c.trim().toLowerCase());
  const imageColumn = header.findIndex((h) => IMAGE_COLUMNS.includes(h));
  const textColumn = header.findIndex((h) => TEXT_COLUMNS.includes(h));
  if (imageColumn < 0 || textColumn < 0) {
    out.problems.push(
      quarantineEntry({
        source: display,
        reason: "malformed-report-file",
        detail: `header ${JSON.stringify(headerCells)} lacks an image column (${IMAGE_COLUMNS.join("/")}) or a text column (${TEXT_COLUMNS.join("/")})`,
        scope: "report",
      }),
    );
    return;
  }
  if (rows.length === 1 && unreadable.length === 0) {
    out.problems.push(quarantineEntry({ source: display, reason: "empty-report-file", detail: "the file holds a header but no data rows", scope: "report" }));
    return;
  }
  // Data rows and unreadable records in file order; each counts as one row.
  const body: (TableRow | { line: number; message: string })[] = [...rows.slice(1), ...unreadable].sort((a, b) => a.line - b.line);
  let rejoined = 0;
  for (const [index, item] of body.entries()) {
    const r = index + 1;
    if (!("cells" in item)) {
      out.problems.push(
        quarantineEntry({
          source: display,
          row: r,
          reason: "malformed-report-row",
          detail: `line ${item.line}: the record starting here cannot be read (${item.message}); an unbalanced quote?`,
          scope: "report",
        }),
      );
      continue;
    }
    let cells = item.cells;
    if (cells.length > header.length && !cells.slice(header.length).every((c) => c === "")) {
      if (options.delimiter !== undefined && textColumn === header.length - 1) {
        cells = [...cells.slice(0, textColumn), cells.slice(textColumn).join(options.delimiter)];
        rejoined++;
      } else {
        out.problems.push(
          quarantineEntry({
            source: display,
            row: r,
            reason: "malformed-report-row",
            detail: `line ${item.line} has ${cells.length} cells, the header ${header.length}: an unquoted ${options.delimiter === "\t" ? "tab" : `"${options.delimiter ?? ","}"`} inside a field?`,
            scope: "report",
          }),
        );
        continue;
      }
    }
    const key = (cells[imageColumn] ?? "").trim();
    const text = cells[textColumn] ?? "";
    if (!key || !text.trim()) {
      out.problems.push(
        quarantineEntry({
          source: display,
          row: r,
          reason: "malformed-report-row",
          detail: `line ${item.line}: ${!key ? "no image name" : `no text for ${key}`}`,
          scope: "report",
        }),
      );
      continue;
    }
    addEntry(out, { key, text, file, row: r, split }, options.lossy ?? false, `line ${item.line}`);
  }
  if (rejoined) {
    out.warnings.push(
      `${file}: ${rejoined} row${rejoined === 1 ? "" : "s"} had more cells than the header; the extra cells were joined back into the ${headerCells[textColumn]} column with "${options.delimiter === "\t" ? "\\t" : options.delimiter}" (a file saved with another delimiter than its header's, or unquoted text)`,
    );
  }
}

const ROW_DELIMITERS = [",", ";", "\t", "|"];
const IMAGE_NAME_END = /\.(png|jpe?g|tiff?|webp|bmp)$/i;

/**
 * The delimiter the data rows use when it differs from the header's: a header re-saved as
 * `Image,text` above `name.png;text` rows reads every row's image cell as `name.png;text...`
 * (all reports orphans). Found when most image cells hold another delimiter right after an
 * image file name.
 */
function rowDelimiterOf(records: { cells: string[] }[], headerDelimiter: string): string | undefined {
  const header = records[0]?.cells.map((c) => c.trim().toLowerCase()) ?? [];
  const imageColumn = header.findIndex((h) => IMAGE_COLUMNS.includes(h));
  const rows = records.slice(1);
  if (imageColumn < 0 || rows.length === 0) return undefined;
  for (const candidate of ROW_DELIMITERS.filter((d) => d !== headerDelimiter)) {
    const fitting = rows.filter(
      (r) => IMAGE_NAME_END.test((r.cells[imageColumn] ?? "").split(candidate)[0]!.trim()) && (r.cells[imageColumn] ?? "").includes(candidate),
    ).length;
    if (fitting * 2 > rows.length) return candidate;
  }
  return undefined;
}

async function readCsv(file: string, out: ReportSet): Promise<void> {
  const { text, lossy } = await readText(file);
  const delimiter = sniffDelimiter(text, hasReportColumns);
  let { records, errors } = readDelimited(text, delimiter);
  const rowDelimiter = rowDelimiterOf(records, delimiter);
  if (rowDelimiter !== undefined) {
    // The header keeps its own split; the rows are read again with theirs.
    const rows = readDelimited(text, rowDelimiter);
    records = [records[0]!, ...rows.records.filter((r) => r.line > records[0]!.line)];
    errors = rows.errors.filter((e) => e.line > records[0]!.line);
    const show = (d: string) => (d === "\t" ? "tab" : `"${d}"`);
    out.warnings.push(
      `${file}: the header is split by ${show(delimiter)} but the rows by ${show(rowDelimiter)}; the rows were read with ${show(rowDelimiter)} (re-save the file with one delimiter)`,
    );
  }
  tableToEntries(file, records, splitFromFileName(file), out, { delimiter: rowDelimiter ?? delimiter, lossy, unreadable: errors });
}

/**
 * A workbook's report table: the first sheet whose first row names an image and a text column
 * (LViT's workbooks have one sheet; a workbook saved with an empty or notes sheet in front
 * keeps its table on another). Further sheets with report columns are named in a warning.
 */
async function readXlsx(file: string, out: ReportSet): Promise<void> {
  let sheets: { sheet: string; data: unknown[][] }[];
  try {
    // Loaded on first use: only LViT-style layouts keep reports in workbooks.
    const { default: readXlsxFile } = await import("read-excel-file/node");
    sheets = (await readXlsxFile(file)) as unknown as { sheet: string; data: unknown[][] }[];
  } catch (error) {
    out.problems.push(
      quarantineEntry({ source: file, reason: "malformed-report-file", detail: `not a readable xlsx workbook: ${(error as Error).message}`, scope: "report" }),
    );
    return;
  }
  const tables = sheets.map(({ sheet, data }) => ({
    sheet,
    rows: data.map((r, i) => ({ cells: r.map((c) => (c === null || c === undefined ? "" : String(c))), line: i + 1 })),
  }));
  const fitting = tables.filter((t) => t.rows.length > 0 && hasReportColumns(t.rows[0]!.cells));
  const chosen = fitting[0] ?? tables[0];
  if (!chosen) {
    out.problems.push(quarantineEntry({ source: file, reason: "empty-report-file", detail: "the workbook holds no sheet", scope: "report" }));
    return;
  }
  if (chosen !== tables[0])
    out.warnings.push(
      `${file}: read sheet "${chosen.sheet}" (sheet ${tables.indexOf(chosen) + 1}); its first sheet "${tables[0]!.sheet}" has no ${IMAGE_COLUMNS[0]}/${TEXT_COLUMNS[0]} header`,
    );
  if (fitting.length > 1)
    out.warnings.push(
      `${file}: sheets ${fitting
        .slice(1)
        .map((t) => `"${t.sheet}"`)
        .join(", ")} also hold report columns and were not read (one report table per workbook: move them to a workbook of their own)`,
    );
  tableToEntries(file, chosen.rows, splitFromFileName(file), out);
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
  let lossy = false;
  try {
    const read = await readText(file);
    const text = read.text;
    lossy = read.lossy;
    if (!text.trim()) {
      out.problems.push(quarantineEntry({ source: file, reason: "empty-report-file", detail: "the file is empty", scope: "report" }));
      return;
    }
    data = JSON.parse(text.replace(/^\uFEFF/, ""));
  } catch (error) {
    out.problems.push(
      quarantineEntry({ source: file, reason: "malformed-report-file", detail: `invalid JSON (truncated?): ${(error as Error).message}`, scope: "report" }),
    );
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
    out.problems.push(
      quarantineEntry({
        source: file,
        reason: "malformed-report-file",
        detail: "expected an array of records or an object of arrays (train/valid/test)",
        scope: "report",
      }),
    );
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
      const text =
        typeof r.caption === "string"
          ? r.caption
          : typeof r.Description === "string"
            ? r.Description
            : typeof r.report === "string"
              ? r.report
              : promptText(r.prompts, reportKey);
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
      addEntry(out, { key: key.trim(), text, file, row, split }, lossy, `record ${row}`);
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
export async function readReportSources(sources: string[], reportKey: string, bounds: ReportBounds): Promise<ReportSet> {
  const out: ReportSet = { entries: [], problems: [], files: [], setAside: [], warnings: [] };
  for (const source of sources) {
    const info = await stat(source).catch(() => undefined);
    if (!info) {
      out.problems.push(quarantineEntry({ source, reason: "malformed-report-file", detail: "the reports path does not exist", scope: "report" }));
      out.setAside.push(source);
      continue;
    }
    // A source inside the dataset root must stay in it; one named outside it bounds its own folder.
    const inRoot = insideDir(path.resolve(source), path.resolve(bounds.root));
    const boundary = inRoot ? bounds.realRoot : info.isDirectory() ? await realpath(source) : undefined;
    if (inRoot) {
      const escapesTo = await escapeOf(source, bounds.realRoot);
      if (escapesTo) {
        out.problems.push(
          quarantineEntry({
            source,
            reason: "path-escapes-root",
            detail: `report ${info.isDirectory() ? "folder" : "file"} is a symbolic link to ${escapesTo}, outside the dataset root`,
            scope: "report",
          }),
        );
        out.setAside.push(source);
        continue;
      }
    }
    const files = info.isDirectory() ? await listReportFiles(source) : [source];
    if (files.length === 0) {
      // A reports folder named (or found by the layout) that holds no table would go image-only unnoticed.
      out.problems.push(
        quarantineEntry({
          source,
          reason: "empty-report-file",
          detail: `the reports folder holds no ${[...REPORT_EXTENSIONS].join(", ")} file`,
          scope: "report",
        }),
      );
      out.setAside.push(source);
      continue;
    }
    for (const file of files) {
      const escapesTo = boundary && file !== source ? await escapeOf(file, boundary) : undefined;
      if (escapesTo) {
        out.problems.push(
          quarantineEntry({
            source: file,
            reason: "path-escapes-root",
            detail: `report file is a symbolic link to ${escapesTo}, outside ${inRoot ? "the dataset root" : source}`,
            scope: "report",
          }),
        );
        out.setAside.push(file);
        continue;
      }
      const odd = notARegularFile(file);
      if (odd) {
        out.problems.push(quarantineEntry({ source: file, reason: "malformed-report-file", detail: `report file is ${odd}`, scope: "report" }));
        out.setAside.push(file);
        continue;
      }
      out.files.push(file);
      const ext = path.extname(file).toLowerCase();
      if (ext === ".csv") await readCsv(file, out);
      else if (ext === ".xlsx") await readXlsx(file, out);
      else if (ext === ".json") await readJson(file, reportKey, out);
      else
        out.problems.push(
          quarantineEntry({
            source: file,
            reason: "malformed-report-file",
            detail: `unsupported report format ${ext || "(no extension)"}: use .xlsx, .csv or .json`,
            scope: "report",
          }),
        );
    }
  }
  return out;
}

/** ProLearn layout: `reports/<id>.txt`, one report per file, each inside the dataset root. */
export async function readTextReports(folder: string, bounds: ReportBounds): Promise<ReportSet> {
  const out: ReportSet = { entries: [], problems: [], files: [], setAside: [], warnings: [] };
  const folderEscape = await escapeOf(folder, bounds.realRoot);
  if (folderEscape) {
    out.problems.push(
      quarantineEntry({
        source: folder,
        reason: "path-escapes-root",
        detail: `report folder is a symbolic link to ${folderEscape}, outside the dataset root`,
        scope: "report",
      }),
    );
    out.setAside.push(folder);
    return out;
  }
  const realFolder = await realpath(folder);
  const entries = (await readdir(folder, { withFileTypes: true }))
    .filter((e) => e.name.toLowerCase().endsWith(".txt"))
    .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  for (const dirent of entries) {
    const name = dirent.name;
    const file = path.join(folder, name);
    // Only links need resolving one by one: any other entry lies where its folder really is.
    const escapesTo = dirent.isSymbolicLink() ? await escapeOf(file, bounds.realRoot) : insideDir(realFolder, bounds.realRoot) ? undefined : realFolder;
    if (escapesTo) {
      out.problems.push(
        quarantineEntry({
          source: file,
          reason: "path-escapes-root",
          detail: `report file is a symbolic link to ${escapesTo}, outside the dataset root`,
          scope: "report",
        }),
      );
      out.setAside.push(file);
      continue;
    }
    // A plain file needs no further look; a link may lead to nothing, and a folder or a FIFO
    // named like a report would fail or block the read.
    const odd = dirent.isFile() ? undefined : notARegularFile(file);
    if (odd) {
      out.problems.push(quarantineEntry({ source: file, reason: "malformed-report-file", detail: `report file is ${odd}`, scope: "report" }));
      out.setAside.push(file);
      continue;
    }
    out.files.push(file);
    // One small file per image (10,000s of them): a plain read costs a tenth of fs/promises'
    // open/stat/read/close round trips, and planning has nothing else to overlap with.
    const { text, lossy } = decodeReportBytes(readFileSync(file));
    if (!text.trim()) {
      out.problems.push(quarantineEntry({ source: file, reason: "empty-report-file", detail: "the report file is empty", scope: "report" }));
      continue;
    }
    addEntry(out, { key: name.slice(0, -4), text: text.replace(/\r?\n$/, ""), file, row: 1 }, lossy, name);
  }
  return out;
}
