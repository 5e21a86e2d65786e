import { DataError } from "../errors.js";
import { readParquetFile } from "../io/parquet.js";
import type { DecodedSample } from "./data.js";
import type { BatchGuidance } from "./guidance.js";
import { PrototypeIndex } from "./guidance.js";

export interface SampleEmbeddings {
  dim: number;
  image: Map<string, Float32Array>;
  /** Only rows with an available report have one. */
  text: Map<string, Float32Array>;
}

function vectorAt(column: { get(i: number): unknown } | null, row: number): Float32Array | null {
  const value = column?.get(row) as { toArray(): Float32Array } | Float32Array | null | undefined;
  if (value === null || value === undefined) return null;
  return Float32Array.from(value instanceof Float32Array ? value : value.toArray());
}

/** Reads embeddings.parquet (docs/data-contracts.md, embed). */
export async function readEmbeddings(file: string): Promise<SampleEmbeddings> {
  const table = await readParquetFile(file, { columns: ["id", "image_embedding", "text_embedding"] });
  const ids = table.getChild("id");
  const images = table.getChild("image_embedding");
  if (!ids || !images) throw new DataError("embeddings table lacks id or image_embedding", { location: { file }, hint: "re-run the embed stage" });
  const texts = table.getChild("text_embedding");
  const out: SampleEmbeddings = { dim: 0, image: new Map(), text: new Map() };
  for (let row = 0; row < table.numRows; row++) {
    const id = String(ids.get(row));
    const image = vectorAt(images, row);
    if (!image) throw new DataError(`sample ${id} has no image embedding`, { location: { file, row } });
    out.dim = image.length;
    out.image.set(id, image);
    const text = vectorAt(texts, row);
    if (text) out.text.set(id, text);
  }
  return out;
}

export interface PrototypeSpace {
  count: number;
  dim: number;
  queries: Float32Array;
  responses: Float32Array;
}

/** Reads prototypes.parquet (query and response halves, linked by row). */
export async function readPrototypes(file: string): Promise<PrototypeSpace> {
  const table = await readParquetFile(file, { columns: ["query", "response"] });
  const queries = table.getChild("query");
  const responses = table.getChild("response");
  if (!queries || !responses || table.numRows === 0) throw new DataError("prototypes table is empty or lacks query/response", { location: { file }, hint: "re-run the prototypes stage" });
  let dim = 0;
  const q: Float32Array[] = [];
  const r: Float32Array[] = [];
  for (let row = 0; row < table.numRows; row++) {
    const qa = vectorAt(queries, row);
    const ra = vectorAt(responses, row);
    if (!qa || !ra) throw new DataError(`prototype ${row} lacks its query or response`, { location: { file, row } });
    if (qa.length !== ra.length) throw new DataError(`prototype ${row}: query has ${qa.length} values, response ${ra.length}`, { location: { file, row } });
    dim = qa.length;
    q.push(qa);
    r.push(ra);
  }
  const flat = (rows: Float32Array[]) => {
    const out = new Float32Array(rows.length * dim);
    rows.forEach((v, i) => out.set(v, i * dim));
    return out;
  };
  return { count: table.numRows, dim, queries: flat(q), responses: flat(r) };
}

export interface PsaLookups {
  indices: Int32Array;
  weights: Float32Array;
  own: Float32Array | null;
  useOwn: Float32Array | null;
}

/**
 * Precomputes each sample's PSA lookup (top-k prototypes and softmax weights) from its image
 * embedding; with `ownReports`, samples that have a text embedding use it instead of t^.
 */
export function psaLookups(samples: readonly DecodedSample[], embeddings: SampleEmbeddings, index: PrototypeIndex, topK: number, temperature: number, ownReports: boolean, source: string): PsaLookups {
  const k = Math.min(topK, index.count);
  const indices = new Int32Array(samples.length * k);
  const weights = new Float32Array(samples.length * k);
  const own = ownReports ? new Float32Array(samples.length * index.dim) : null;
  const useOwn = ownReports ? new Float32Array(samples.length) : null;
  samples.forEach((s, i) => {
    const embedding = embeddings.image.get(s.id);
    if (!embedding) throw new DataError(`sample ${s.id} has no row in embeddings.parquet`, { location: { file: source }, hint: "the embed stage must run on the same ingest output" });
    const hit = index.query(embedding, k, temperature);
    indices.set(hit.indices, i * k);
    weights.set(hit.weights, i * k);
    const text = own ? embeddings.text.get(s.id) : undefined;
    if (own && useOwn && text && s.report !== null) {
      own.set(text, i * index.dim);
      useOwn[i] = 1;
    }
  });
  return { indices, weights, own, useOwn };
}

export function psaBatch(lookups: PsaLookups, topK: number, dim: number, indices: number[]): BatchGuidance {
  const out: BatchGuidance & { kind: "psa" } = {
    kind: "psa",
    indices: new Int32Array(indices.length * topK),
    weights: new Float32Array(indices.length * topK),
  };
  indices.forEach((i, b) => {
    out.indices.set(lookups.indices.subarray(i * topK, (i + 1) * topK), b * topK);
    out.weights.set(lookups.weights.subarray(i * topK, (i + 1) * topK), b * topK);
  });
  if (lookups.own && lookups.useOwn) {
    out.own = new Float32Array(indices.length * dim);
    out.useOwn = new Float32Array(indices.length);
    indices.forEach((i, b) => {
      out.own!.set(lookups.own!.subarray(i * dim, (i + 1) * dim), b * dim);
      out.useOwn![b] = lookups.useOwn![i]!;
    });
  }
  return out;
}
