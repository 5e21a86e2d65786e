import { Binary, Bool, Field, Float64, Int32, Schema, Utf8, makeBuilder, makeData, RecordBatch, Struct, type Builder, type DataType } from "apache-arrow";
import type { SampleRow } from "./decode.js";
import type { QuarantineEntry } from "./reasons.js";
import { QUARANTINE_REASONS } from "./reasons.js";
import type { OrphanReport } from "./scan.js";

type ColumnType = "utf8" | "binary" | "int32" | "float64" | "bool";

export interface ColumnSpec {
  name: string;
  type: ColumnType;
  nullable: boolean;
  description: string;
  enum?: readonly string[];
}

/** The one description of samples.parquet: the Arrow schema, the JSON Schema and the docs derive from it. */
export const SAMPLE_COLUMNS: readonly ColumnSpec[] = [
  { name: "id", type: "utf8", nullable: false, description: "Stable sample id: the image file stem (lower case for QaTa-COV19, whose layouts differ in case)." },
  { name: "dataset", type: "utf8", nullable: false, description: "Dataset kind.", enum: ["qata-cov19", "mosmeddata-plus", "kvasir-seg"] },
  { name: "split", type: "utf8", nullable: false, description: "Split: official where the layout defines one, else seeded.", enum: ["train", "val", "test"] },
  { name: "image", type: "binary", nullable: false, description: "The image file's bytes as found (PNG/JPEG/TIFF/WebP)." },
  { name: "mask", type: "binary", nullable: false, description: "Binarised mask: PNG, 8-bit grey, values 0/1, same size as the image." },
  { name: "width", type: "int32", nullable: false, description: "Image width in pixels." },
  { name: "height", type: "int32", nullable: false, description: "Image height in pixels." },
  { name: "image_format", type: "utf8", nullable: false, description: "Decoded format of the image bytes (png, jpeg, tiff, webp)." },
  { name: "report", type: "utf8", nullable: true, description: "Report text verbatim; null when no report names the image. Kept for evaluation even when report_available is false." },
  { name: "report_normalized", type: "utf8", nullable: true, description: "Report with padding markers (EOF XXX) removed, whitespace folded, '..' reduced to '.'." },
  { name: "report_available", type: "bool", nullable: false, description: "Later stages may read the report: the textAvailability subset of train; val/test wherever a report exists." },
  { name: "image_sha256", type: "utf8", nullable: false, description: "SHA-256 of the source image file." },
  { name: "mask_sha256", type: "utf8", nullable: false, description: "SHA-256 of the source mask file (before binarisation)." },
  { name: "source_image", type: "utf8", nullable: false, description: "Image path relative to the dataset root, '/'-separated." },
  { name: "source_mask", type: "utf8", nullable: false, description: "Mask path relative to the dataset root, '/'-separated." },
  { name: "mask_empty", type: "bool", nullable: false, description: "The mask has no foreground (kept, and listed in quarantine.parquet with kept = true)." },
  { name: "mask_coverage", type: "float64", nullable: false, description: "Fraction of foreground pixels in the mask." },
];

export const QUARANTINE_COLUMNS: readonly ColumnSpec[] = [
  { name: "source", type: "utf8", nullable: false, description: "Path of the problem file, relative to the dataset root." },
  { name: "reason", type: "utf8", nullable: false, description: "Stable reason code.", enum: Object.keys(QUARANTINE_REASONS) },
  { name: "detail", type: "utf8", nullable: false, description: "What exactly is wrong." },
  { name: "scope", type: "utf8", nullable: false, description: "image (a sample), mask (a stray mask) or report (a report file or row).", enum: ["image", "mask", "report"] },
  { name: "id", type: "utf8", nullable: true, description: "Sample id, where the entry concerns an image." },
  { name: "row", type: "int32", nullable: true, description: "1-based data row of a report table." },
  { name: "kept", type: "bool", nullable: false, description: "True when the sample is still ingested (empty-mask)." },
];

export const ORPHAN_COLUMNS: readonly ColumnSpec[] = [
  { name: "report_key", type: "utf8", nullable: false, description: "The image/mask name as the report source writes it." },
  { name: "report_file", type: "utf8", nullable: false, description: "Report file, relative to the dataset root." },
  { name: "row", type: "int32", nullable: false, description: "1-based data row (JSON: record index)." },
  { name: "split", type: "utf8", nullable: true, description: "Split the report source assigns, if any." },
  { name: "report", type: "utf8", nullable: false, description: "Report text verbatim." },
];

function arrowType(type: ColumnType): DataType {
  switch (type) {
    case "utf8":
      return new Utf8();
    case "binary":
      return new Binary();
    case "int32":
      return new Int32();
    case "float64":
      return new Float64();
    case "bool":
      return new Bool();
  }
}

export function arrowSchema(columns: readonly ColumnSpec[]): Schema {
  return new Schema(columns.map((c) => new Field(c.name, arrowType(c.type), c.nullable)));
}

export const SAMPLES_SCHEMA = arrowSchema(SAMPLE_COLUMNS);
export const QUARANTINE_SCHEMA = arrowSchema(QUARANTINE_COLUMNS);
export const ORPHANS_SCHEMA = arrowSchema(ORPHAN_COLUMNS);

/**
 * Builds one record batch row by row, so rows can be added as they arrive (a shard appends each
 * decoded sample in plan order while later ones are still decoding). Same builders and null
 * handling as `vectorFromArray`, which `rowsToBatch` used before, so the bytes are the same.
 */
export class RowBatchBuilder<T extends object> {
  private readonly schema: Schema;
  private readonly builders: Builder[];
  private rows = 0;

  constructor(private readonly columns: readonly ColumnSpec[]) {
    this.schema = arrowSchema(columns);
    this.builders = this.schema.fields.map((f) => makeBuilder({ type: f.type, nullValues: [null] }));
  }

  append(row: T): void {
    const record = row as Record<string, unknown>;
    for (let i = 0; i < this.columns.length; i++) this.builders[i]!.append(record[this.columns[i]!.name] ?? null);
    this.rows++;
  }

  finish(): RecordBatch {
    const children = this.builders.map((b) => b.finish().toVector().data[0]!);
    const data = makeData({ type: new Struct(this.schema.fields), length: this.rows, nullCount: 0, children });
    return new RecordBatch(this.schema, data);
  }
}

/** Builds one record batch from plain row objects, column types taken from the spec. */
export function rowsToBatch<T extends object>(columns: readonly ColumnSpec[], rows: readonly T[]): RecordBatch {
  const builder = new RowBatchBuilder<T>(columns);
  for (const row of rows) builder.append(row);
  return builder.finish();
}

export function samplesBatch(rows: readonly SampleRow[]): RecordBatch {
  return rowsToBatch(SAMPLE_COLUMNS, rows);
}

export function quarantineBatch(entries: readonly QuarantineEntry[]): RecordBatch {
  return rowsToBatch(QUARANTINE_COLUMNS, entries);
}

export function orphansBatch(orphans: readonly OrphanReport[]): RecordBatch {
  return rowsToBatch(ORPHAN_COLUMNS, orphans);
}

function columnJsonSchema(c: ColumnSpec): Record<string, unknown> {
  const base: Record<string, unknown> =
    c.type === "binary"
      ? { type: "string", contentEncoding: "base64" }
      : c.type === "int32"
        ? { type: "integer", minimum: -2147483648, maximum: 2147483647 }
        : c.type === "float64"
          ? { type: "number" }
          : c.type === "bool"
            ? { type: "boolean" }
            : { type: "string", ...(c.enum ? { enum: [...c.enum] } : {}) };
  const typed = c.nullable ? { anyOf: [base, { type: "null" }] } : base;
  return { ...typed, description: c.description, "x-arrow-type": c.type, "x-nullable": c.nullable };
}

function tableJsonSchema(title: string, description: string, columns: readonly ColumnSpec[]): Record<string, unknown> {
  return {
    title,
    description,
    type: "object",
    properties: Object.fromEntries(columns.map((c) => [c.name, columnJsonSchema(c)])),
    required: columns.map((c) => c.name),
    additionalProperties: false,
  };
}

/**
 * JSON Schema (draft 2020-12) of one row of each ingest table, for schemas/samples.schema.json.
 * Binary columns appear as base64 strings; `x-arrow-type` gives the Parquet/Arrow column type.
 */
export function samplesJsonSchema(): Record<string, unknown> {
  return {
    $schema: "https://json-schema.org/draft/2020-12/schema",
    $id: "https://prolearn.dev/schemas/samples.schema.json",
    ...tableJsonSchema("samples.parquet row", "One ingested image with its binarised mask and report (output of the ingest stage).", SAMPLE_COLUMNS),
    $defs: {
      quarantine: tableJsonSchema("quarantine.parquet row", "One problem found while ingesting.", QUARANTINE_COLUMNS),
      orphan: tableJsonSchema("orphans.parquet row", "One report row whose image is absent.", ORPHAN_COLUMNS),
    },
  };
}
