import path from "node:path";
import * as ort from "onnxruntime-node";
import { DataError } from "../errors.js";
import { encodeOnnxModel } from "./onnx-graph.js";
import { assertArtifactIntact, readPrototypesFile, type ArtifactManifest } from "./artifact.js";
import { GemmWorkspace } from "../linalg/gemm.js";

export interface QueryOptions {
  /** Prototypes mixed per query (default 3). */
  topK?: number;
  /** Softmax temperature over the top-k cosine similarities (default 1). */
  temperature?: number;
}

export interface QueryResult {
  /** n x dim approximated text embeddings. */
  embeddings: Float32Array;
  /** n x topK prototype ids, most similar first. */
  ids: Int32Array;
  /** n x topK softmax weights (each row sums to 1). */
  weights: Float32Array;
}

/** Queries are scored in blocks of this many rows: one SIMD GEMM per block, scores stay in cache. */
const QUERY_BLOCK = 64;
/** From this batch size on, queryAsync scores through ONNX Runtime's SIMD Gemm. */
const ORT_MIN_BATCH = 32;

let scoreSession: Promise<ort.InferenceSession> | undefined;
function scoringSession(): Promise<ort.InferenceSession> {
  scoreSession ??= ort.InferenceSession.create(
    encodeOnnxModel({
      name: "psa_scores",
      inputs: [
        { name: "V", shape: ["n", "d"] },
        { name: "Q", shape: ["p", "d"] },
      ],
      outputs: [{ name: "S", shape: ["n", "p"] }],
      nodes: [{ op: "Gemm", inputs: ["V", "Q"], output: "S", intAttributes: { transB: 1 } }],
    }),
    // One thread: a 1,024 x 96 x 512 Gemm is ~3 ms of work, and ORT's spinning worker threads
    // cost more than they give when the caller (a training loop) keeps the other cores busy;
    // measured on 2 cores: 13.6 us/query with 1 thread vs 30 us with 2 (bench/RESULTS.md).
    { executionProviders: ["cpu"], intraOpNumThreads: 1 },
  );
  return scoreSession;
}

/**
 * ProLearn's prototype-space attention (METHOD.md §3): s_j = cos(v, q_j), top-k, w =
 * softmax(s / T), t^ = sum_j w_j r_j. Scratch buffers live on the instance and grow once, so
 * the per-query loop allocates nothing; `queryInto` also lets callers reuse the outputs.
 */
export class PrototypeSpace {
  readonly dim: number;
  readonly size: number;
  /** The manifest the space was loaded from (absent when built from arrays). */
  readonly manifest?: ArtifactManifest;
  private readonly unitQueries: Float32Array;
  private readonly responses: Float32Array;
  private scores = new Float32Array(0);
  private queryTensor?: ort.Tensor;
  private topIds = new Int32Array(0);
  private topScores = new Float64Array(0);

  constructor(queries: Float32Array, responses: Float32Array, dim: number, manifest?: ArtifactManifest) {
    if (dim < 1 || queries.length % dim !== 0 || queries.length !== responses.length || queries.length === 0) {
      throw new DataError(
        `a prototype space needs equal, non-empty P x ${dim} query and response arrays (got ${queries.length} and ${responses.length} values)`,
      );
    }
    this.dim = dim;
    this.size = queries.length / dim;
    this.manifest = manifest;
    this.responses = Float32Array.from(responses);
    this.unitQueries = new Float32Array(queries.length);
    for (let p = 0; p < this.size; p++) {
      let sum = 0;
      for (let k = 0; k < dim; k++) sum += queries[p * dim + k]! ** 2;
      if (!(sum > 0)) throw new DataError(`query prototype ${p} has zero norm`, { location: { row: p } });
      const inv = 1 / Math.sqrt(sum);
      for (let k = 0; k < dim; k++) this.unitQueries[p * dim + k] = queries[p * dim + k]! * inv;
    }
  }

  /** Loads an artifact folder after recomputing its digests; a tampered folder throws ArtifactError. */
  static async load(dir: string, options: { expectedDigest?: string } = {}): Promise<PrototypeSpace> {
    const manifest = await assertArtifactIntact(dir, options.expectedDigest);
    const { queries, responses, dim } = await readPrototypesFile(path.join(dir, "prototypes.parquet"));
    return new PrototypeSpace(queries, responses, dim, manifest);
  }

  query(imageEmbeddings: Float32Array, options: QueryOptions = {}): QueryResult {
    const n = this.rowsOf(imageEmbeddings);
    const topK = Math.min(options.topK ?? 3, this.size);
    const out: QueryResult = { embeddings: new Float32Array(n * this.dim), ids: new Int32Array(n * topK), weights: new Float32Array(n * topK) };
    this.queryInto(imageEmbeddings, out, options);
    return out;
  }

  /**
   * Same result as `query`; large batches are scored by ONNX Runtime (SIMD, all cores), which is
   * what the training loop and `prolearn prototypes query` use.
   */
  async queryAsync(imageEmbeddings: Float32Array, options: QueryOptions = {}): Promise<QueryResult> {
    const n = this.rowsOf(imageEmbeddings);
    const topK = Math.min(options.topK ?? 3, this.size);
    const out: QueryResult = { embeddings: new Float32Array(n * this.dim), ids: new Int32Array(n * topK), weights: new Float32Array(n * topK) };
    await this.queryIntoAsync(imageEmbeddings, out, options);
    return out;
  }

  async queryIntoAsync(imageEmbeddings: Float32Array, out: QueryResult, options: QueryOptions = {}): Promise<void> {
    const n = this.rowsOf(imageEmbeddings);
    if (n < ORT_MIN_BATCH) return this.queryInto(imageEmbeddings, out, options);
    const { topK, temperature } = this.prepare(n, out, options);
    const session = await scoringSession();
    this.queryTensor ??= new ort.Tensor("float32", this.unitQueries, [this.size, this.dim]);
    const result = await session.run({ V: new ort.Tensor("float32", imageEmbeddings, [n, this.dim]), Q: this.queryTensor });
    const scores = result.S!.data as Float32Array;
    for (let row = 0; row < n; row++) this.respond(imageEmbeddings, row, scores, row * this.size, topK, temperature, out);
    result.S!.dispose();
  }

  private prepare(n: number, out: QueryResult, options: QueryOptions): { topK: number; temperature: number } {
    const { dim, size } = this;
    const topK = Math.min(options.topK ?? 3, size);
    const temperature = options.temperature ?? 1;
    if (!Number.isInteger(topK) || topK < 1) throw new DataError(`topK must be a positive integer, got ${options.topK}`);
    if (!(temperature > 0)) throw new DataError(`temperature must be > 0, got ${temperature}`);
    if (out.embeddings.length < n * dim || out.ids.length < n * topK || out.weights.length < n * topK)
      throw new DataError("output buffers are too small for this batch");
    if (this.scores.length < QUERY_BLOCK * size) this.scores = new Float32Array(QUERY_BLOCK * size);
    if (this.topIds.length < topK) {
      this.topIds = new Int32Array(topK);
      this.topScores = new Float64Array(topK);
    }
    return { topK, temperature };
  }

  /**
   * Writes into caller-owned outputs (sized n*dim, n*topK, n*topK); synchronous. Cosine scores
   * come from the WebAssembly SIMD GEMM of the training kernels, over a private workspace that
   * holds the unit query prototypes transposed once, so a block costs one GEMM call.
   */
  queryInto(imageEmbeddings: Float32Array, out: QueryResult, options: QueryOptions = {}): void {
    const { dim, size } = this;
    const n = this.rowsOf(imageEmbeddings);
    const { topK, temperature } = this.prepare(n, out, options);
    const ws = this.workspace();
    const scores = this.scores;
    for (let start = 0; start < n; start += QUERY_BLOCK) {
      const rows = Math.min(QUERY_BLOCK, n - start);
      const f32 = ws.f32;
      f32.set(imageEmbeddings.subarray(start * dim, (start + rows) * dim), this.blockOffset);
      f32.fill(0, this.scoresOffset, this.scoresOffset + rows * size);
      ws.gemm(false, rows, size, dim, this.blockOffset, dim, this.queriesOffset, size, this.scoresOffset, size);
      scores.set(f32.subarray(this.scoresOffset, this.scoresOffset + rows * size));
      for (let r = 0; r < rows; r++) this.respond(imageEmbeddings, start + r, scores, r * size, topK, temperature, out);
    }
  }

  private gemm?: GemmWorkspace;
  private queriesOffset = 0;
  private blockOffset = 0;
  private scoresOffset = 0;

  private workspace(): GemmWorkspace {
    if (this.gemm) return this.gemm;
    const { dim, size } = this;
    const ws = new GemmWorkspace();
    this.queriesOffset = ws.reserve(dim * size);
    this.blockOffset = ws.reserve(QUERY_BLOCK * dim);
    this.scoresOffset = ws.reserve(QUERY_BLOCK * size);
    const f32 = ws.f32;
    // Q^T, [dim, size]: the GEMM's B operand, so C[rows, size] = V[rows, dim] * Q^T.
    for (let p = 0; p < size; p++) for (let k = 0; k < dim; k++) f32[this.queriesOffset + k * size + p] = this.unitQueries[p * dim + k]!;
    this.gemm = ws;
    return ws;
  }

  private rowsOf(imageEmbeddings: Float32Array): number {
    if (imageEmbeddings.length % this.dim !== 0)
      throw new DataError(`${imageEmbeddings.length} values are not a whole number of ${this.dim}-d image embeddings`);
    return imageEmbeddings.length / this.dim;
  }

  private respond(v: Float32Array, row: number, scores: Float32Array, base: number, topK: number, temperature: number, out: QueryResult): void {
    const dim = this.dim;
    const size = this.size;
    const topIds = this.topIds;
    const topScores = this.topScores;
    const responses = this.responses;
    const embeddings = out.embeddings;
    const vBase = row * dim;
    let norm = 0;
    for (let k = 0; k < dim; k++) {
      const x = v[vBase + k]!;
      norm += x * x;
    }
    const inv = norm > 0 ? 1 / Math.sqrt(norm) : 0;
    for (let j = 0; j < topK; j++) {
      topScores[j] = -Infinity;
      topIds[j] = -1;
    }
    let floor = -Infinity;
    for (let p = 0; p < size; p++) {
      const s = scores[base + p]!;
      if (s <= floor) continue;
      let i = topK - 1;
      while (i > 0 && topScores[i - 1]! < s) {
        topScores[i] = topScores[i - 1]!;
        topIds[i] = topIds[i - 1]!;
        i--;
      }
      topScores[i] = s;
      topIds[i] = p;
      floor = topScores[topK - 1]!;
    }
    // Softmax of cosines (scores scaled by 1/|v|), shifted by the maximum for stability.
    const first = topScores[0]! * inv;
    let total = 0;
    for (let j = 0; j < topK; j++) {
      const w = Math.exp((topScores[j]! * inv - first) / temperature);
      topScores[j] = w;
      total += w;
    }
    const e = row * dim;
    const idOut = out.ids;
    const weightOut = out.weights;
    for (let j = 0; j < topK; j++) {
      const w = topScores[j]! / total;
      const id = topIds[j]!;
      idOut[row * topK + j] = id;
      weightOut[row * topK + j] = w;
      const r = id * dim;
      if (j === 0) for (let k = 0; k < dim; k++) embeddings[e + k] = w * responses[r + k]!;
      else for (let k = 0; k < dim; k++) embeddings[e + k] += w * responses[r + k]!;
    }
  }
}
