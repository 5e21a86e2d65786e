import { open, readFile } from "node:fs/promises";
import { Table, type RecordBatch, tableFromIPC, tableToIPC } from "apache-arrow";
import * as parquet from "parquet-wasm/node";

/**
 * Parquet through parquet-wasm: SNAPPY (readable by DuckDB, pyarrow, polars and hyparquet),
 * Arrow in and out, FixedSizeList columns kept. Files are written in bounded row groups so a
 * stage never needs the whole table in memory.
 */
function writerProperties(rowGroupSize: number) {
  return new parquet.WriterPropertiesBuilder().setCompression(parquet.Compression.SNAPPY).setMaxRowGroupSize(rowGroupSize).setCreatedBy("prolearn").build();
}

/** Encodes a whole Arrow table as Parquet bytes. */
export function tableToParquet(table: Table, options: { rowGroupSize?: number } = {}): Uint8Array {
  const wasmTable = parquet.Table.fromIPCStream(tableToIPC(table, "stream"));
  return parquet.writeParquet(wasmTable, writerProperties(options.rowGroupSize ?? 1024));
}

/** `offset`/`limit` select a row range (row groups outside it are skipped). */
export interface ParquetReadOptions {
  columns?: string[];
  offset?: number;
  limit?: number;
}

export function parquetToTable(bytes: Uint8Array, options: ParquetReadOptions = {}): Table {
  const { columns, offset, limit } = options;
  const wasmTable = parquet.readParquet(bytes, columns || offset !== undefined || limit !== undefined ? { columns, offset, limit } : undefined);
  return tableFromIPC(wasmTable.intoIPCStream());
}

export async function readParquetFile(file: string, options: ParquetReadOptions = {}): Promise<Table> {
  return parquetToTable(await readFile(file), options);
}

/**
 * Streams record batches (each becomes at least one row group) into a Parquet file. The caller
 * bounds memory by the size of the batches it yields. The file is fsynced before returning.
 */
export async function writeParquetBatches(
  file: string,
  batches: AsyncIterable<RecordBatch> | Iterable<RecordBatch>,
  options: { rowGroupSize?: number } = {},
): Promise<{ rows: number }> {
  async function* asIpcStreams() {
    for await (const batch of batches) yield tableToIPC(new Table([batch]), "stream");
  }
  return writeParquetIpcStreams(file, asIpcStreams(), options);
}

/** Writes a whole table (small outputs) with fsync. */
export async function writeParquetFile(file: string, table: Table, options: { rowGroupSize?: number } = {}): Promise<void> {
  const handle = await open(file, "w");
  await handle.writeFile(tableToParquet(table, options));
  await handle.sync();
  await handle.close();
}

/**
 * Like writeParquetBatches, for record batches that are already Arrow IPC streams (e.g. files
 * that shard workers wrote): parquet-wasm reads each stream directly, sparing a decode and
 * re-encode in JS. Each stream's batches become at least one row group, in order.
 */
export async function writeParquetIpcStreams(
  file: string,
  streams: AsyncIterable<Uint8Array> | Iterable<Uint8Array>,
  options: { rowGroupSize?: number } = {},
): Promise<{ rows: number }> {
  let rows = 0;
  const iterator = (
    Symbol.asyncIterator in streams ? (streams as AsyncIterable<Uint8Array>)[Symbol.asyncIterator]() : (streams as Iterable<Uint8Array>)[Symbol.iterator]()
  ) as AsyncIterator<Uint8Array> | Iterator<Uint8Array>;
  const source = new ReadableStream({
    async pull(controller) {
      const next = await iterator.next();
      if (next.done) {
        controller.close();
        return;
      }
      for (const wasmBatch of parquet.Table.fromIPCStream(next.value).recordBatches()) {
        rows += wasmBatch.numRows;
        controller.enqueue(wasmBatch);
      }
    },
  });
  const bytes = await parquet.transformParquetStream(source, writerProperties(options.rowGroupSize ?? 1024));
  // Written through a file handle: the chunks are whole row groups (megabytes), and a web-stream
  // adapter over a write stream costs a third more time for nothing here.
  const handle = await open(file, "w");
  try {
    for await (const chunk of bytes as unknown as AsyncIterable<Uint8Array>) await handle.write(chunk);
    await handle.sync();
  } finally {
    await handle.close();
  }
  return { rows };
}
