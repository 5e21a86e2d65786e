import { readdir, readFile } from "node:fs/promises";
import path from "node:path";
import { Table, Utf8, vectorFromArray, type Vector } from "apache-arrow";
import { UsageError } from "../errors.js";
import { sha256 } from "../util/hash.js";
import { embeddingVector } from "../io/tables.js";
import { embedInBatches } from "./batches.js";
import type { Encoder } from "./encoder.js";
import type { EncoderKind } from "./encoder-kinds.js";
import { createEncoder } from "./factory.js";
import { fittingTexts, readTextRows, type TextRows } from "./text-sources.js";

/** The programmatic core of `prolearn embed texts|images`: files in, an Arrow table out. */
export interface EmbedFilesOptions {
  encoder: EncoderKind;
  model?: string;
  dim?: number;
  batchSize: number;
  concurrency: number;
  onProgress?: (done: number, total: number) => void;
  signal?: AbortSignal;
}

export async function encoderForFiles(options: EmbedFilesOptions, fitTexts: readonly string[]): Promise<Encoder> {
  if (options.encoder === "biomedclip") {
    if (!options.model)
      throw new UsageError("--encoder biomedclip needs --model <exported folder>", { hint: "see docs/embed.md for tools/export_biomedclip.py" });
    if (options.dim !== undefined) throw new UsageError("--dim applies to the builtin encoder only");
    return createEncoder({ encoder: "biomedclip", model: path.resolve(options.model) });
  }
  if (options.model) throw new UsageError("--model applies to --encoder biomedclip only");
  return createEncoder({ encoder: "builtin", dim: options.dim, fitTexts });
}

export interface EmbeddedTexts {
  table: Table;
  rows: TextRows;
  encoder: { id: string; dim: number; digest: string; fittedOn?: number };
}

/** One output row per input row, in order: [split], text, embedding (null where the text is missing or blank). */
export async function embedTextFile(file: string, options: EmbedFilesOptions & { column?: string }): Promise<EmbeddedTexts> {
  const rows = await readTextRows(file, { column: options.column });
  const fit = fittingTexts(rows);
  const encoder = await encoderForFiles(options, fit);
  try {
    const present = rows.texts.map((t, i) => (t !== null && t.trim() !== "" ? i : -1)).filter((i) => i >= 0);
    const embedded = await embedInBatches(present.length, encoder.dim, { ...options, onProgress: (n) => options.onProgress?.(n, present.length) }, (s, e) =>
      encoder.embedTexts(present.slice(s, e).map((i) => rows.texts[i]!)),
    );
    const values = new Float32Array(rows.texts.length * encoder.dim);
    const valid = new Uint8Array(rows.texts.length);
    present.forEach((row, k) => {
      values.set(embedded.subarray(k * encoder.dim, (k + 1) * encoder.dim), row * encoder.dim);
      valid[row] = 1;
    });
    const columns: Record<string, Vector> = {};
    if (rows.splits) columns.split = vectorFromArray(rows.splits, new Utf8());
    columns.text = vectorFromArray(rows.texts, new Utf8());
    columns.embedding = embeddingVector(values, encoder.dim, valid);
    return {
      table: new Table(columns),
      rows,
      encoder: { id: encoder.id, dim: encoder.dim, digest: encoder.digest, fittedOn: encoder.id === "builtin" ? fit.length : undefined },
    };
  } finally {
    await encoder.close();
  }
}

const IMAGE_EXTENSIONS = new Set([".png", ".jpg", ".jpeg"]);

/** Image files under the folders (recursive), sorted by path within each folder; folders in the order given. */
export async function listImages(folders: readonly string[]): Promise<string[]> {
  const out: string[] = [];
  for (const folder of folders) {
    const entries = await readdir(folder, { recursive: true, withFileTypes: true }).catch((error: unknown) => {
      throw new UsageError(`cannot read folder ${folder}: ${(error as Error).message}`, { cause: error });
    });
    const files = entries
      .filter((e) => e.isFile() && IMAGE_EXTENSIONS.has(path.extname(e.name).toLowerCase()))
      .map((e) => path.join(e.parentPath ?? (e as unknown as { path: string }).path, e.name));
    out.push(...files.sort());
  }
  return out;
}

/** One row per image: path (as found under the given folders), sha256, embedding. */
export async function embedImageFolders(
  folders: readonly string[],
  options: EmbedFilesOptions,
): Promise<{ table: Table; encoder: { id: string; dim: number; digest: string } }> {
  const files = await listImages(folders);
  if (files.length === 0) throw new UsageError(`no .png/.jpg images under ${folders.join(", ")}`);
  const encoder = await encoderForFiles(options, []);
  try {
    const hashes = new Array<string>(files.length);
    const embedded = await embedInBatches(files.length, encoder.dim, { ...options, onProgress: (n) => options.onProgress?.(n, files.length) }, async (s, e) => {
      const bytes = await Promise.all(files.slice(s, e).map((f) => readFile(f)));
      bytes.forEach((b, k) => (hashes[s + k] = sha256(b)));
      return encoder.embedImages(bytes.map((b) => new Uint8Array(b.buffer, b.byteOffset, b.byteLength)));
    });
    const table = new Table({
      path: vectorFromArray(files, new Utf8()),
      sha256: vectorFromArray(hashes, new Utf8()),
      embedding: embeddingVector(embedded, encoder.dim),
    });
    return { table, encoder: { id: encoder.id, dim: encoder.dim, digest: encoder.digest } };
  } finally {
    await encoder.close();
  }
}
