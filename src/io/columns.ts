// Declarations of the Parquet tables stages publish. Data only (no Arrow, no Parquet), so a
// stage definition can name its tables without loading either; reading and checking them is
// ./tables.ts.

/**
 * Column types as a table declares them. `embedding` is a vector of float32 of one width per
 * table: written as FixedSizeList<float32>[dim]; read from that or from a (Large)List of
 * float/double whose rows all have the width (what DuckDB and pyarrow write).
 */
export type ColumnType = "utf8" | "binary" | "int32" | "float32" | "float64" | "bool" | "embedding" | "list<utf8>" | "list<float32>" | "list<bool>";

export interface ColumnSpec {
  readonly name: string;
  readonly type: ColumnType;
  readonly nullable: boolean;
  readonly description: string;
  readonly enum?: readonly string[];
}

/** One Parquet output of a stage: which stage writes it, under which file name, with which columns. */
export interface TableContract<Columns extends readonly ColumnSpec[] = readonly ColumnSpec[]> {
  readonly stage: string;
  readonly file: string;
  readonly description: string;
  readonly columns: Columns;
}

/** Keeps the column names and types as literals, so readers can type what they return. */
export function defineTable<const Columns extends readonly ColumnSpec[]>(
  stage: string,
  file: string,
  description: string,
  columns: Columns,
): TableContract<Columns> {
  const names = new Set<string>();
  for (const column of columns) {
    if (names.has(column.name)) throw new Error(`table ${stage}/${file} declares column ${column.name} twice`);
    names.add(column.name);
  }
  return { stage, file, description, columns };
}

/** A row-major matrix of float32 vectors read from an `embedding` column; `valid[i] = 0` where row i is null. */
export interface EmbeddingMatrix {
  values: Float32Array;
  dim: number;
  valid: Uint8Array;
}

type NonNullValue<Type extends ColumnType> = Type extends "utf8"
  ? string
  : Type extends "binary"
    ? Uint8Array
    : Type extends "int32" | "float32" | "float64"
      ? number
      : Type extends "bool"
        ? boolean
        : Type extends "list<utf8>"
          ? string[]
          : Type extends "list<float32>"
            ? number[]
            : Type extends "list<bool>"
              ? boolean[]
              : never;

/** What a reader returns for one column: typed arrays for non-null numbers, a matrix for embeddings, else one value per row. */
export type ColumnValues<Spec extends ColumnSpec> = Spec["type"] extends "embedding"
  ? EmbeddingMatrix
  : Spec["nullable"] extends false
    ? Spec["type"] extends "int32"
      ? Int32Array
      : Spec["type"] extends "float32"
        ? Float32Array
        : Spec["type"] extends "float64"
          ? Float64Array
          : NonNullValue<Spec["type"]>[]
    : (NonNullValue<Spec["type"]> | null)[];

export type ColumnName<Contract extends TableContract> = Contract["columns"][number]["name"];

type SpecOf<Contract extends TableContract, Name extends string> = Extract<Contract["columns"][number], { name: Name }>;

/** The columns a reader was asked for, decoded, plus the number of rows read. */
export type TableColumns<Contract extends TableContract, Names extends ColumnName<Contract>> = { numRows: number } & {
  [Name in Names]: ColumnValues<SpecOf<Contract, Name>>;
};

/** Rows `offset` .. `offset + limit - 1`; row groups outside the range are not read. */
export interface RowRange {
  offset?: number;
  limit?: number;
}

/** The Arrow type a declaration stands for, in words (for error messages and docs). */
export function describeColumnType(type: ColumnType): string {
  switch (type) {
    case "embedding":
      return "FixedSizeList<float32>[dim]";
    case "list<utf8>":
      return "List<utf8>";
    case "list<float32>":
      return "List<float32>";
    case "list<bool>":
      return "List<bool>";
    default:
      return type;
  }
}
