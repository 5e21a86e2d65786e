import {
  Binary,
  Bool,
  Field,
  Float32,
  Float64,
  Int32,
  List,
  Schema,
  Utf8,
  makeBuilder,
  makeData,
  RecordBatch,
  Struct,
  type Builder,
  type DataType,
} from "apache-arrow";
import type { SampleRow } from "./decode.js";
import type { QuarantineEntry } from "./reasons.js";
import type { OrphanReport } from "./scan.js";
import type { ColumnSpec, ColumnType } from "../io/columns.js";
import { IMAGES_TABLE, ORPHANS_TABLE, QUARANTINE_TABLE, SAMPLES_TABLE } from "./tables.js";

export type { ColumnSpec } from "../io/columns.js";

export const SAMPLE_COLUMNS = SAMPLES_TABLE.columns;
export const QUARANTINE_COLUMNS = QUARANTINE_TABLE.columns;
export const ORPHAN_COLUMNS = ORPHANS_TABLE.columns;

function arrowType(type: ColumnType): DataType {
  switch (type) {
    case "utf8":
      return new Utf8();
    case "binary":
      return new Binary();
    case "int32":
      return new Int32();
    case "float32":
      return new Float32();
    case "float64":
      return new Float64();
    case "bool":
      return new Bool();
    case "list<utf8>":
      return new List(new Field("item", new Utf8(), true));
    case "list<float32>":
      return new List(new Field("item", new Float32(), true));
    case "list<bool>":
      return new List(new Field("item", new Bool(), true));
    case "embedding":
      // The width is the data's, not the declaration's: build such columns with embeddingVector (src/io/tables.ts).
      throw new Error("an embedding column has no row-by-row builder; use embeddingVector");
  }
}

export function arrowSchema(columns: readonly ColumnSpec[]): Schema {
  return new Schema(columns.map((c) => new Field(c.name, arrowType(c.type), c.nullable)));
}

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

/** images.parquet: what an image-only model learns from, one row per ingested sample (see IMAGES_TABLE). */
export function imagesBatch(rows: readonly { id: string; split: string; image_sha256: string; mask_png_sha256: string }[]): RecordBatch {
  return rowsToBatch(IMAGES_TABLE.columns, rows);
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
        : c.type === "float64" || c.type === "float32"
          ? { type: "number" }
          : c.type === "bool"
            ? { type: "boolean" }
            : c.type === "embedding" || c.type === "list<float32>"
              ? { type: "array", items: { type: "number" } }
              : c.type === "list<utf8>"
                ? { type: "array", items: { type: "string" } }
                : c.type === "list<bool>"
                  ? { type: "array", items: { type: "boolean" } }
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
      image: tableJsonSchema("images.parquet row", IMAGES_TABLE.description, IMAGES_TABLE.columns),
    },
  };
}
