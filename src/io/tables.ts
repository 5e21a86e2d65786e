import { type Data, type DataType, Field, FixedSizeList, Float32, type Table, Type, Vector, makeData } from "apache-arrow";
import { DataError, UsageError } from "../errors.js";
import { type ColumnName, type ColumnSpec, type EmbeddingMatrix, type RowRange, type TableColumns, type TableContract, describeColumnType } from "./columns.js";
import { LazyParquet } from "./parquet-file.js";

/**
 * The one typed reader of every declared table (./columns.ts), and the check a stage's outputs
 * pass before they are published. Reads are bounded: only the named columns, only the rows of
 * the range, straight from the file (row groups outside the range are not read).
 */
export class TableReader<Contract extends TableContract> {
  private constructor(
    readonly contract: Contract,
    private readonly parquet: LazyParquet,
  ) {}

  /** Opens the file and checks the type of every declared column it has. */
  static async open<Contract extends TableContract>(contract: Contract, file: string): Promise<TableReader<Contract>> {
    const parquet = await LazyParquet.open(file);
    try {
      const problems = typeProblems(contract, parquet.fields);
      if (problems.length) throw contractError(contract, file, problems);
    } catch (error) {
      parquet.close();
      throw error;
    }
    return new TableReader(contract, parquet);
  }

  get file(): string {
    return this.parquet.file;
  }

  get numRows(): number {
    return this.parquet.numRows;
  }

  /** Reads the named columns over the range and decodes them by their declared types. */
  async read<Names extends ColumnName<Contract>>(columns: readonly Names[], range: RowRange = {}): Promise<TableColumns<Contract, Names>> {
    const missing = columns.filter((name) => !this.parquet.has(name));
    if (missing.length)
      throw contractError(
        this.contract,
        this.file,
        missing.map((name) => `column ${name} is missing`),
      );
    const table = await this.parquet.read(columns, range);
    const out: Record<string, unknown> = { numRows: table.numRows };
    for (const name of columns) out[name] = decodeColumn(specOf(this.contract, name), table.getChild(name)!, this.file, range.offset ?? 0);
    return out as TableColumns<Contract, Names>;
  }

  /** Reads the named columns in slices of `batchRows` rows, so one slice is in memory at a time. */
  async *slices<Names extends ColumnName<Contract>>(
    columns: readonly Names[],
    batchRows = 2048,
  ): AsyncGenerator<{ offset: number; rows: TableColumns<Contract, Names> }> {
    for (let offset = 0; offset < this.numRows; offset += batchRows) {
      yield { offset, rows: await this.read(columns, { offset, limit: Math.min(batchRows, this.numRows - offset) }) };
    }
  }

  close(): void {
    this.parquet.close();
  }
}

/** Opens, reads the named columns over the range, closes. */
export async function readTable<Contract extends TableContract, Names extends ColumnName<Contract>>(
  contract: Contract,
  file: string,
  columns: readonly Names[],
  range: RowRange = {},
): Promise<TableColumns<Contract, Names>> {
  return withTable(contract, file, (reader) => reader.read(columns, range));
}

export async function withTable<Contract extends TableContract, T>(
  contract: Contract,
  file: string,
  fn: (reader: TableReader<Contract>) => Promise<T>,
): Promise<T> {
  const reader = await TableReader.open(contract, file);
  try {
    return await fn(reader);
  } finally {
    reader.close();
  }
}

/**
 * Checks a written file against its declaration: every declared column present with its type,
 * no column the declaration does not name. Reads the schema only.
 */
export async function checkTableFile(contract: TableContract, file: string): Promise<void> {
  const parquet = await LazyParquet.open(file);
  try {
    const present = new Set(parquet.fields.map((f) => f.name));
    const problems = [
      ...contract.columns.filter((c) => !present.has(c.name)).map((c) => `column ${c.name} (${describeColumnType(c.type)}) is missing`),
      ...typeProblems(contract, parquet.fields),
      ...parquet.fields.filter((f) => !contract.columns.some((c) => c.name === f.name)).map((f) => `column ${f.name} is not declared`),
    ];
    if (problems.length) throw contractError(contract, file, problems);
  } finally {
    parquet.close();
  }
}

/** Checks each declared table a stage wrote into `dir` (the engine calls this before publishing). */
export async function checkOutputTables(tables: readonly TableContract[], dir: string): Promise<void> {
  for (const contract of tables) await checkTableFile(contract, `${dir}/${contract.file}`);
}

function specOf(contract: TableContract, name: string): ColumnSpec {
  const spec = contract.columns.find((c) => c.name === name);
  if (!spec) throw new Error(`table ${contract.stage}/${contract.file} declares no column ${name}`);
  return spec;
}

function contractError(contract: TableContract, file: string, problems: string[]): DataError {
  return new DataError(`${contract.file} does not match what the ${contract.stage} stage declares: ${problems.join("; ")}`, {
    location: { file },
    hint: `docs/data-contracts.md (${contract.stage}) lists the columns; rerun the ${contract.stage} stage (--force ${contract.stage}) if the file predates them`,
  });
}

function typeProblems(contract: TableContract, fields: readonly Field[]): string[] {
  const problems: string[] = [];
  for (const field of fields) {
    const spec = contract.columns.find((c) => c.name === field.name);
    if (spec && !typeMatches(spec, field.type)) problems.push(`column ${field.name} is ${String(field.type)}, declared ${describeColumnType(spec.type)}`);
  }
  return problems;
}

function isFloat(type: DataType | undefined): boolean {
  return type?.typeId === Type.Float && (type as Float32).precision >= 1;
}

function isList(type: DataType): boolean {
  return type.typeId === Type.List || type.typeId === Type.LargeList;
}

function childType(type: DataType): DataType | undefined {
  return (type as unknown as { children?: Field[] }).children?.[0]?.type;
}

function typeMatches(spec: ColumnSpec, type: DataType): boolean {
  switch (spec.type) {
    case "utf8":
      return type.typeId === Type.Utf8 || type.typeId === Type.LargeUtf8;
    case "binary":
      return type.typeId === Type.Binary || type.typeId === Type.LargeBinary;
    case "int32":
      return type.typeId === Type.Int && (type as unknown as { bitWidth: number }).bitWidth === 32 && (type as unknown as { isSigned: boolean }).isSigned;
    case "float32":
      return type.typeId === Type.Float && (type as Float32).precision === 1;
    case "float64":
      return type.typeId === Type.Float && (type as Float32).precision === 2;
    case "bool":
      return type.typeId === Type.Bool;
    case "embedding":
      return (type.typeId === Type.FixedSizeList || isList(type)) && isFloat(childType(type));
    case "list<utf8>":
      return isList(type) && (childType(type)?.typeId === Type.Utf8 || childType(type)?.typeId === Type.LargeUtf8);
    case "list<float32>":
      return isList(type) && isFloat(childType(type));
    case "list<bool>":
      return isList(type) && childType(type)?.typeId === Type.Bool;
  }
}

function decodeColumn(spec: ColumnSpec, vector: Vector, file: string, firstRow: number): unknown {
  const n = vector.length;
  if (spec.type === "embedding") {
    const matrix = decodeEmbedding(vector, spec.name, file, firstRow);
    const nullRow = spec.nullable ? -1 : matrix.valid.indexOf(0);
    if (nullRow >= 0)
      throw new DataError(`column ${spec.name} is declared non-null but row ${firstRow + nullRow} is null`, { location: { file, row: firstRow + nullRow } });
    return matrix;
  }
  if (!spec.nullable && vector.nullCount > 0) {
    let row = 0;
    while (vector.isValid(row)) row++;
    throw new DataError(`column ${spec.name} is declared non-null but row ${firstRow + row} is null`, { location: { file, row: firstRow + row } });
  }
  if (!spec.nullable && spec.type === "int32") return Int32Array.from(vector.toArray() as ArrayLike<number>);
  if (!spec.nullable && spec.type === "float32") return Float32Array.from(vector.toArray() as ArrayLike<number>);
  if (!spec.nullable && spec.type === "float64") return Float64Array.from(vector.toArray() as ArrayLike<number>);
  const out: unknown[] = new Array(n);
  for (let i = 0; i < n; i++) {
    const value = vector.get(i) as unknown;
    if (value === null || value === undefined) out[i] = null;
    else if (spec.type === "list<utf8>") out[i] = Array.from(value as Iterable<unknown>, String);
    else if (spec.type === "list<float32>") out[i] = Array.from(value as Iterable<unknown>, Number);
    else if (spec.type === "list<bool>") out[i] = Array.from(value as Iterable<unknown>, Boolean);
    else if (spec.type === "int32" || spec.type === "float32" || spec.type === "float64") out[i] = Number(value);
    else if (spec.type === "bool") out[i] = Boolean(value);
    else out[i] = value;
  }
  return out;
}

/** A column that `readEmbeddingColumn` can read: a fixed-size or variable list of float32/float64. */
export function isEmbeddingField(field: Field): boolean {
  return (field.type.typeId === Type.FixedSizeList || isList(field.type)) && isFloat(childType(field.type));
}

/**
 * Reads one embedding column of any Parquet file (prolearn's, DuckDB's, pyarrow's), plus its `id`
 * column when it has one; with no column named, the file's only vector column. Reads those
 * columns only.
 */
export async function readEmbeddingFile(
  file: string,
  column?: string,
): Promise<{ column: string; embeddings: EmbeddingMatrix; ids: string[] | null; numRows: number }> {
  const parquet = await LazyParquet.open(file);
  try {
    const vectors = parquet.fields.filter(isEmbeddingField).map((f) => f.name);
    const name = column ?? (vectors.length === 1 ? vectors[0] : undefined);
    if (!name)
      throw new UsageError("say which column holds the embeddings (--column)", {
        location: { file },
        hint: vectors.length ? `vector columns: ${vectors.join(", ")}` : "the file has no list-of-floats column (FixedSizeList<float32> or List<float>)",
      });
    const hasIds = parquet.has("id");
    const table = await parquet.read(hasIds ? [name, "id"] : [name]);
    const ids = hasIds ? Array.from({ length: table.numRows }, (_, i) => String(table.getChild("id")!.get(i))) : null;
    return { column: name, embeddings: readEmbeddingColumn(table, name, file), ids, numRows: table.numRows };
  } finally {
    parquet.close();
  }
}

/**
 * Reads an embedding column into one row-major float32 matrix: FixedSizeList<float32|float64>
 * (what prolearn writes), or a List/LargeList of float32/float64 whose non-null rows all have
 * the same length (what DuckDB and pyarrow write for FLOAT[] / list<float>).
 */
export function readEmbeddingColumn(table: Table, name: string, file?: string): EmbeddingMatrix {
  const vector = table.getChild(name);
  if (!vector) throw new DataError(`column ${name} is missing`, { location: { file }, hint: `columns: ${table.schema.fields.map((f) => f.name).join(", ")}` });
  return decodeEmbedding(vector, name, file, 0);
}

function decodeEmbedding(vector: Vector, name: string, file: string | undefined, firstRow: number): EmbeddingMatrix {
  const type = vector.type as DataType;
  const fixed = type.typeId === Type.FixedSizeList;
  if (!(fixed || isList(type)) || !isFloat(childType(type))) {
    throw new DataError(`column ${name} is ${String(type)}, not a vector of floats`, {
      location: { file },
      hint: "an embedding column is FixedSizeList<float32>[dim] or a list of float/double of one length",
    });
  }
  const rows = vector.length;
  const dim = fixed ? (type as FixedSizeList).listSize : listWidth(vector.data, name, file, firstRow);
  const values = new Float32Array(rows * dim);
  const valid = new Uint8Array(rows);
  let row = 0;
  for (const data of vector.data) {
    const child = data.children[0]!;
    const flat = child.values as Float32Array | Float64Array;
    for (let r = 0; r < data.length; r++, row++) {
      if (!data.getValid(r)) continue;
      const [start, end] = fixed ? [(data.offset + r) * dim, (data.offset + r + 1) * dim] : listBounds(data, r);
      if (end - start !== dim)
        throw new DataError(`column ${name}: row ${firstRow + row} has ${end - start} values, earlier rows ${dim}`, {
          location: { file, row: firstRow + row },
          hint: "every embedding of a column has one width",
        });
      // Slots under a null row may be null; inside a vector that is present, none may be.
      if (child.nullCount > 0)
        for (let k = start; k < end; k++)
          if (!child.getValid(k))
            throw new DataError(`column ${name}: row ${firstRow + row} has a null inside its vector`, {
              location: { file, row: firstRow + row },
              hint: "an embedding is a whole vector or null",
            });
      valid[row] = 1;
      values.set(flat.subarray(child.offset + start, child.offset + end), row * dim);
    }
  }
  return { values, dim, valid };
}

function listBounds(data: Data, r: number): [number, number] {
  const offsets = data.valueOffsets as Int32Array | BigInt64Array;
  return [Number(offsets[data.offset + r]), Number(offsets[data.offset + r + 1])];
}

/** The length of the first non-null row of a list column (0 when every row is null). */
function listWidth(chunks: readonly Data[], name: string, file: string | undefined, firstRow: number): number {
  let row = firstRow;
  for (const data of chunks) {
    for (let r = 0; r < data.length; r++, row++) {
      if (!data.getValid(r)) continue;
      const [start, end] = listBounds(data, r);
      if (end === start) throw new DataError(`column ${name}: row ${row} is an empty vector`, { location: { file, row } });
      return end - start;
    }
  }
  return 0;
}

/**
 * FixedSizeList<float32>[dim] vector over a row-major matrix; `valid[i] = 0` makes row i null.
 * `itemsNullable` is the child field's flag only (prototypes.parquet has always written false;
 * it stays so, because the flag is part of the file's bytes and so of the artifact's digest).
 */
export function embeddingVector(values: Float32Array, dim: number, valid?: Uint8Array, itemsNullable = true): Vector<FixedSizeList<Float32>> {
  const length = dim === 0 ? 0 : values.length / dim;
  const type = new FixedSizeList(dim, new Field("item", new Float32(), itemsNullable));
  const child = makeData({ type: new Float32(), length: values.length, data: values });
  let nullBitmap: Uint8Array | undefined;
  let nullCount = 0;
  if (valid) {
    nullBitmap = new Uint8Array(Math.ceil(length / 8));
    for (let i = 0; i < length; i++) {
      if (valid[i]) nullBitmap[i >> 3] |= 1 << (i & 7);
      else nullCount++;
    }
  }
  const data: Data<FixedSizeList<Float32>> = makeData({ type, length, nullCount, nullBitmap: nullCount ? nullBitmap : undefined, child });
  return new Vector([data]);
}
