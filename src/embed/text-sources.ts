import { readFile } from "node:fs/promises";
import path from "node:path";
import { DataError, UsageError } from "../errors.js";
import { readParquetFile } from "../io/parquet.js";
import { parseCsv } from "../io/csv.js";

/**
 * Reads the texts `prolearn embed texts` embeds, one row per input row in input order:
 * - CSV (`,`, `;` or tab, detected from the header; RFC 4180 quotes), e.g. LViT's
 *   `Image,Description` and the MosMedData+ `Image;text` conversions;
 * - JSON: SGSeg's `annotation.json` (`{train: [...], valid: [...], test: [...]}`, the split
 *   becomes a column), an array of records, or an array of strings;
 * - Parquet.
 * The column is `--column` (a dotted path inside JSON records, e.g. `prompts.p6`) or the first
 * of the usual report column names.
 */
export interface TextRows {
  texts: (string | null)[];
  /** present when the source names splits (annotation.json, or a `split` column) */
  splits?: string[];
  column: string;
  format: "csv" | "json" | "parquet";
}

const CANDIDATE_COLUMNS = ["description", "caption", "text", "report", "report_normalized", "prompt"];

function pickColumn(file: string, available: string[], requested: string | undefined): string {
  if (requested) {
    if (available.includes(requested) || requested.includes(".")) return requested;
    throw new UsageError(`column "${requested}" is not in ${path.basename(file)}`, { hint: `columns: ${available.join(", ")}` });
  }
  for (const candidate of CANDIDATE_COLUMNS) {
    const found = available.find((c) => c.toLowerCase() === candidate);
    if (found) return found;
  }
  throw new UsageError(`cannot tell which column of ${path.basename(file)} holds the text`, { hint: `pass --column; columns: ${available.join(", ")}` });
}

function valueAt(record: unknown, keyPath: string): unknown {
  let node = record;
  for (const key of keyPath.split(".")) {
    if (node === null || typeof node !== "object") return undefined;
    node = (node as Record<string, unknown>)[key];
  }
  return node;
}

function asText(value: unknown, file: string, row: number, column: string): string | null {
  if (value === null || value === undefined) return null;
  if (typeof value === "string") return value;
  if (Array.isArray(value) && value.every((v) => typeof v === "string")) return value.join(" ");
  throw new DataError(`column ${column} holds ${typeof value}, not text`, { location: { file, row } });
}

export async function readTextRows(file: string, options: { column?: string } = {}): Promise<TextRows> {
  const ext = path.extname(file).toLowerCase();
  if (ext === ".parquet") {
    const table = await readParquetFile(file);
    const names = table.schema.fields.map((f) => f.name);
    const column = pickColumn(file, names, options.column);
    const vector = table.getChild(column);
    if (!vector) throw new UsageError(`column "${column}" is not in ${path.basename(file)}`, { hint: `columns: ${names.join(", ")}` });
    const texts = Array.from({ length: table.numRows }, (_, i) => asText(vector.get(i), file, i, column));
    const split = table.getChild("split");
    return { texts, splits: split ? Array.from({ length: table.numRows }, (_, i) => String(split.get(i))) : undefined, column, format: "parquet" };
  }
  let raw: string;
  try {
    raw = await readFile(file, "utf8");
  } catch (error) {
    throw new UsageError(`cannot read ${file}: ${(error as Error).message}`, { cause: error });
  }
  if (ext === ".json") {
    let data: unknown;
    try {
      data = JSON.parse(raw);
    } catch (error) {
      throw new DataError(`not valid JSON: ${(error as Error).message}`, { location: { file }, cause: error });
    }
    if (Array.isArray(data)) {
      if (data.every((v) => typeof v === "string" || v === null)) return { texts: data as (string | null)[], column: "(array)", format: "json" };
      const keys = [...new Set(data.flatMap((r) => (r && typeof r === "object" ? Object.keys(r) : [])))];
      const column = pickColumn(file, keys, options.column);
      const splits = data.every((r) => r && typeof r === "object" && typeof (r as Record<string, unknown>).split === "string")
        ? data.map((r) => (r as Record<string, string>).split!)
        : undefined;
      return { texts: data.map((r, i) => asText(valueAt(r, column), file, i, column)), splits, column, format: "json" };
    }
    if (data && typeof data === "object" && Object.values(data).every(Array.isArray)) {
      // SGSeg annotation.json: split name -> records, in the file's split order.
      const texts: (string | null)[] = [];
      const splits: string[] = [];
      const records = Object.entries(data as Record<string, unknown[]>).flatMap(([split, rows]) => rows.map((r) => ({ split, r })));
      const keys = [...new Set(records.flatMap(({ r }) => (r && typeof r === "object" ? Object.keys(r) : [])))];
      const column = pickColumn(file, keys, options.column);
      records.forEach(({ split, r }, i) => {
        texts.push(asText(valueAt(r, column), file, i, column));
        splits.push(split);
      });
      return { texts, splits, column, format: "json" };
    }
    throw new DataError("JSON must be an array of records or strings, or an object of split -> records (SGSeg annotation.json)", { location: { file } });
  }
  if (ext === ".csv" || ext === ".tsv" || ext === ".txt") {
    let rows: string[][];
    try {
      rows = parseCsv(raw, ext === ".tsv" ? "\t" : undefined);
    } catch (error) {
      throw new DataError(`malformed CSV: ${(error as Error).message}`, { location: { file }, hint: "check the quoting of the last rows" });
    }
    if (rows.length === 0) throw new DataError("the file is empty", { location: { file } });
    const header = rows[0]!.map((h) => h.trim());
    const column = pickColumn(file, header, options.column);
    const index = header.indexOf(column);
    const splitIndex = header.findIndex((h) => h.toLowerCase() === "split");
    const body = rows.slice(1);
    return {
      texts: body.map((r) => r[index] ?? null),
      splits: splitIndex >= 0 ? body.map((r) => r[splitIndex] ?? "") : undefined,
      column,
      format: "csv",
    };
  }
  throw new UsageError(`unsupported input ${path.basename(file)}`, { hint: "use a .csv, .json or .parquet file" });
}

/** The texts the builtin encoder is fitted on: the training split where the input names splits, else every text. */
export function fittingTexts(rows: TextRows): string[] {
  const hasTrain = rows.splits?.some((s) => s === "train");
  return rows.texts.filter((t, i): t is string => t !== null && t.trim() !== "" && (!hasTrain || rows.splits![i] === "train"));
}
