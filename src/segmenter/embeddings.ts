import { DataError } from "../errors.js";
import { EMBEDDINGS_TABLE } from "../embed/tables.js";
import { readTable } from "../io/tables.js";
import { PROTOTYPES_TABLE } from "../prototypes/tables.js";
import type { DecodedSample } from "./data.js";
import type { BatchGuidance } from "./guidance.js";
import type { PrototypeIndex } from "./guidance.js";

export interface SampleEmbeddings {
  dim: number;
  image: Map<string, Float32Array>;
  /** Only rows with an available report have one. */
  text: Map<string, Float32Array>;
}

/** Reads embeddings.parquet (docs/data-contracts.md, embed) into maps by sample id. */
export async function readEmbeddings(file: string): Promise<SampleEmbeddings> {
  const table = await readTable(EMBEDDINGS_TABLE, file, ["id", "image_embedding", "text_embedding"]);
  const { image_embedding: image, text_embedding: text } = table;
  if (text.valid.includes(1) && text.dim !== image.dim)
    throw new DataError(`text embeddings are ${text.dim}-d, image embeddings ${image.dim}-d`, { location: { file }, hint: "re-run the embed stage" });
  const out: SampleEmbeddings = { dim: image.dim, image: new Map(), text: new Map() };
  for (let row = 0; row < table.numRows; row++) {
    const id = table.id[row]!;
    if (!image.valid[row]) throw new DataError(`sample ${id} has no image embedding`, { location: { file, row } });
    out.image.set(id, image.values.slice(row * image.dim, (row + 1) * image.dim));
    if (text.valid[row]) out.text.set(id, text.values.slice(row * text.dim, (row + 1) * text.dim));
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
  const { numRows: count, query, response } = await readTable(PROTOTYPES_TABLE, file, ["query", "response"]);
  if (count === 0) throw new DataError("prototypes.parquet has no prototypes", { location: { file }, hint: "re-run the prototypes stage" });
  if (query.dim !== response.dim)
    throw new DataError(`query vectors are ${query.dim}-d, response vectors ${response.dim}-d`, { location: { file }, hint: "re-run the prototypes stage" });
  return { count, dim: query.dim, queries: query.values, responses: response.values };
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
export function psaLookups(
  samples: readonly DecodedSample[],
  embeddings: SampleEmbeddings,
  index: PrototypeIndex,
  topK: number,
  temperature: number,
  ownReports: boolean,
  source: string,
): PsaLookups {
  const k = Math.min(topK, index.count);
  const indices = new Int32Array(samples.length * k);
  const weights = new Float32Array(samples.length * k);
  const own = ownReports ? new Float32Array(samples.length * index.dim) : null;
  const useOwn = ownReports ? new Float32Array(samples.length) : null;
  samples.forEach((s, i) => {
    const embedding = embeddings.image.get(s.id);
    if (!embedding)
      throw new DataError(`sample ${s.id} has no row in embeddings.parquet`, {
        location: { file: source },
        hint: "the embed stage must run on the same ingest output",
      });
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
