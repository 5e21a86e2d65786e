import { Data, Field, FixedSizeList, Float32, Vector, makeData, type Table } from "apache-arrow";

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

/** Reads a FixedSizeList<float32> column back into a row-major matrix plus a validity array. */
export function readEmbeddingColumn(table: Table, name: string): { values: Float32Array; valid: Uint8Array; dim: number } {
  const column = table.getChild(name);
  if (!column) throw new Error(`column ${name} is missing`);
  const type = column.type as FixedSizeList;
  const dim = type.listSize;
  const values = new Float32Array(table.numRows * dim);
  const valid = new Uint8Array(table.numRows);
  let row = 0;
  for (const data of column.data) {
    const child = data.children[0]!;
    const flat = (child.values as Float32Array).subarray((child.offset + data.offset * dim), (child.offset + (data.offset + data.length) * dim));
    values.set(flat, row * dim);
    for (let i = 0; i < data.length; i++) valid[row + i] = data.getValid(i) ? 1 : 0;
    row += data.length;
  }
  return { values, valid, dim };
}
