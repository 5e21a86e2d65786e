import { Data, Field, FixedSizeList, Float, Float32, List, Vector, makeData, type DataType, type Table } from "apache-arrow";

/** FixedSizeList<float32>[dim] vector over a row-major matrix; `valid[i] = 0` makes row i null. */
export function embeddingVector(values: Float32Array, dim: number, valid?: Uint8Array): Vector<FixedSizeList<Float32>> {
  const length = values.length / dim;
  const type = new FixedSizeList(dim, new Field("item", new Float32(), true));
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

/**
 * Reads an embedding column into a row-major float32 matrix plus a validity array. Accepts what
 * this package writes (FixedSizeList<float32>[dim]) and what other tools write: Parquet has no
 * fixed-size list, so DuckDB, pyarrow and polars write List<float> (or List<double>). Every
 * non-null row must then have the same length (`expectedDim` when given); a null element inside a
 * vector is refused. `fail` builds the error the caller throws (its class, file and row).
 */
export function readEmbeddingColumn(
  table: Table,
  name: string,
  options: { expectedDim?: number; fail?: (message: string, row?: number) => Error } = {},
): { values: Float32Array; valid: Uint8Array; dim: number } {
  const fail = options.fail ?? ((message: string) => new Error(message));
  const column = table.getChild(name);
  if (!column) throw fail(`column ${name} is missing (columns: ${table.schema.fields.map((f) => f.name).join(", ")})`);
  const type = column.type as DataType;
  const isFixed = type instanceof FixedSizeList;
  if (!isFixed && !(type instanceof List)) throw fail(`column ${name} is ${String(type)}, not a list of floats (FixedSizeList<float32> or List<float>)`);
  const childType = (type as FixedSizeList | List).children[0]!.type as DataType;
  if (!(childType instanceof Float)) throw fail(`column ${name} holds ${String(childType)} items, not floats`);
  let dim = isFixed ? (type as FixedSizeList).listSize : (options.expectedDim ?? -1);
  if (isFixed && options.expectedDim !== undefined && dim !== options.expectedDim) throw fail(`column ${name} has vectors of length ${dim}, expected ${options.expectedDim}`);
  const valid = new Uint8Array(table.numRows);
  let values = new Float32Array(dim > 0 ? table.numRows * dim : 0);
  let row = 0;
  for (const data of column.data) {
    const child = data.children[0]!;
    const flat = child.values as Float32Array | Float64Array;
    for (let r = 0; r < data.length; r++, row++) {
      if (!data.getValid(r)) continue;
      let start: number;
      let length: number;
      if (isFixed) {
        start = (data.offset + r) * dim;
        length = dim;
      } else {
        const offsets = data.valueOffsets as Int32Array;
        start = offsets[data.offset + r]!;
        length = offsets[data.offset + r + 1]! - start;
        if (dim < 0) {
          dim = length;
          values = new Float32Array(table.numRows * dim);
        }
        if (length !== dim) throw fail(`column ${name}: row ${row} has a vector of length ${length}, expected ${dim} like ${options.expectedDim !== undefined ? "the pipeline's" : "the first row's"}`, row);
      }
      if (child.nullCount > 0) for (let k = 0; k < length; k++) if (!child.getValid(start + k)) throw fail(`column ${name}: row ${row} has a null inside its vector`, row);
      valid[row] = 1;
      const from = child.offset + start;
      values.set(flat instanceof Float32Array ? flat.subarray(from, from + length) : Float32Array.from(flat.subarray(from, from + length)), row * dim);
    }
  }
  if (dim < 0) dim = 0;
  return { values, valid, dim };
}
