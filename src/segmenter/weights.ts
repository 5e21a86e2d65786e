import { readFile, rename, writeFile, open } from "node:fs/promises";
import { ModelError } from "../errors.js";
import type { tf } from "./runtime.js";

/**
 * Weight files: a JSON header (`model.json` / `guide-model.json`) naming every tensor with its
 * shape and offset, and one little-endian Float32 `.bin` holding the values back to back, in the
 * header's order. The same tensors give the same bytes, so weight files hash deterministically.
 */
export interface TensorEntry {
  name: string;
  shape: number[];
  /** Offset into the .bin, in float32 elements. */
  offset: number;
}

export const WEIGHTS_FORMAT = "prolearn-weights/1";

/**
 * Packs tensors (in the given order) into one Float32Array and its index; a Float32Array already
 * on the CPU is packed as it is (shape [length]). Reads asynchronously: tfjs-backend-webgpu's
 * synchronous read needs OffscreenCanvas, which Node lacks.
 */
export async function packTensors(tensors: [string, tf.Tensor | Float32Array][]): Promise<{ entries: TensorEntry[]; values: Float32Array }> {
  const entries: TensorEntry[] = [];
  let total = 0;
  for (const [name, t] of tensors) {
    const isArray = t instanceof Float32Array;
    entries.push({ name, shape: isArray ? [t.length] : t.shape.slice(), offset: total });
    total += isArray ? t.length : t.size;
  }
  const values = new Float32Array(total);
  const read = await Promise.all(tensors.map(([, t]) => (t instanceof Float32Array ? t : (t.data() as Promise<Float32Array>))));
  read.forEach((data, i) => values.set(data, entries[i]!.offset));
  return { entries, values };
}

export function unpackTensors(entries: TensorEntry[], values: Float32Array, source: string): Map<string, Float32Array> {
  const out = new Map<string, Float32Array>();
  for (const entry of entries) {
    const size = entry.shape.reduce((a, b) => a * b, 1);
    if (entry.offset + size > values.length) throw new ModelError(`tensor ${entry.name} runs past the end of the weights`, { location: { file: source } });
    out.set(entry.name, values.subarray(entry.offset, entry.offset + size));
  }
  return out;
}

export async function writeFloat32File(file: string, values: Float32Array): Promise<void> {
  const bytes = Buffer.from(values.buffer, values.byteOffset, values.byteLength);
  const handle = await open(file, "w");
  await handle.writeFile(bytes);
  await handle.sync();
  await handle.close();
}

export async function readFloat32File(file: string): Promise<Float32Array> {
  let bytes: Buffer;
  try {
    bytes = await readFile(file);
  } catch (error) {
    throw new ModelError(`cannot read weights: ${(error as Error).message}`, { location: { file } });
  }
  if (bytes.byteLength % 4 !== 0) throw new ModelError(`weights file size ${bytes.byteLength} is not a multiple of 4 bytes`, { location: { file } });
  const copy = new Float32Array(bytes.byteLength / 4);
  new Uint8Array(copy.buffer).set(bytes);
  return copy;
}

/** Writes JSON via a temporary file and rename, so a reader never sees half a file. */
export async function writeJsonAtomic(file: string, value: unknown): Promise<void> {
  const temporary = `${file}.tmp-${process.pid}`;
  await writeFile(temporary, JSON.stringify(value, null, 2) + "\n");
  const handle = await open(temporary, "r+");
  await handle.sync();
  await handle.close();
  await rename(temporary, file);
}

export async function readJson<T>(file: string): Promise<T> {
  try {
    return JSON.parse(await readFile(file, "utf8")) as T;
  } catch (error) {
    throw new ModelError(`cannot read ${file}: ${(error as Error).message}`, { location: { file } });
  }
}
