import { openAsBlob } from "node:fs";
import { type Field, tableFromIPC, type Table } from "apache-arrow";
import * as parquet from "parquet-wasm/node";
import { DataError } from "../errors.js";

/**
 * Reads a Parquet file through a file-backed Blob, so only the requested columns and row ranges
 * are fetched from disk: a report over a 500 MB samples.parquet reads a few images, not the file.
 * Declared stage tables are read through ./tables.ts, which checks and decodes them on top of this.
 */
export class LazyParquet {
  private constructor(
    readonly file: string,
    private readonly handle: parquet.ParquetFile,
    readonly numRows: number,
    readonly fields: readonly Field[],
  ) {}

  get columns(): readonly string[] {
    return this.fields.map((f) => f.name);
  }

  static async open(file: string): Promise<LazyParquet> {
    let handle: parquet.ParquetFile;
    try {
      handle = await parquet.ParquetFile.fromFile(await openAsBlob(file));
    } catch (error) {
      throw new DataError(`cannot read Parquet file: ${(error as Error).message ?? String(error)}`, {
        location: { file },
        hint: "the stage output may be corrupt; rerun the stage with --force",
      });
    }
    const numRows = handle.metadata().fileMetadata().numRows();
    const schema = tableFromIPC(handle.schema().intoIPCStream()).schema;
    return new LazyParquet(file, handle, numRows, schema.fields);
  }

  has(column: string): boolean {
    return this.columns.includes(column);
  }

  /** Throws a DataError naming the file and the columns it lacks. */
  require(columns: readonly string[]): void {
    const missing = columns.filter((c) => !this.has(c));
    if (missing.length) {
      throw new DataError(`missing column${missing.length === 1 ? "" : "s"} ${missing.join(", ")}`, {
        location: { file: this.file },
        hint: `columns present: ${this.columns.join(", ")}`,
      });
    }
  }

  async read(columns: readonly string[], range: { offset?: number; limit?: number } = {}): Promise<Table> {
    this.require(columns);
    const table = await this.handle.read({
      columns: [...columns],
      ...(range.offset !== undefined ? { offset: range.offset } : {}),
      ...(range.limit !== undefined ? { limit: range.limit } : {}),
    });
    return tableFromIPC(table.intoIPCStream());
  }

  /** Reads the given columns in slices of `batchRows`, so only one slice is in memory at a time. */
  async *slices(columns: readonly string[], batchRows = 2048): AsyncGenerator<{ offset: number; table: Table }> {
    for (let offset = 0; offset < this.numRows; offset += batchRows) {
      yield { offset, table: await this.read(columns, { offset, limit: Math.min(batchRows, this.numRows - offset) }) };
    }
  }

  close(): void {
    this.handle.free();
  }
}
