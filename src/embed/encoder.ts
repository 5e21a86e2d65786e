/**
 * The one interface every embedding backend implements. Stages and CLI commands receive an
 * Encoder and never ask which one it is: the id, the digests and the preprocessing config are
 * all they need to key caches and to record lineage.
 */
export interface TokenFeatures {
  /** [n, length, width] float32, row-major. */
  features: Float32Array;
  /** [n, length] 1 where a real token sits, 0 on padding. */
  mask: Uint8Array;
  /** Token strings per text (without padding), for showing relevance scores to users. */
  tokens: string[][];
  length: number;
  width: number;
}

export interface Encoder {
  /** Stable name, e.g. "biomedclip" or "builtin-tfidf-grid". */
  readonly id: string;
  /** Embedding width (512 for BiomedCLIP). */
  readonly dim: number;
  /** Content digest of everything that determines the outputs (weights, fitted state, config). */
  readonly digest: string;
  /** Digest of what determines image embeddings only: image rows stay cached when only the text side changes. */
  readonly imageDigest: string;
  /** Digest of what determines text embeddings only. */
  readonly textDigest: string;
  /** JSON-serialisable preprocessing config; recorded in encoder.json and in row-cache keys. */
  readonly preprocessing: EncoderPreprocessing;
  /** Encoded image files (PNG/JPEG bytes) -> n*dim float32, each row L2-normalised. */
  embedImages(images: readonly Uint8Array[]): Promise<Float32Array>;
  /** Texts -> n*dim float32, each row L2-normalised (a text with no tokens gives a zero row). */
  embedTexts(texts: readonly string[]): Promise<Float32Array>;
  /** Per-token hidden states for the guide model; only encoders that have them define it. */
  tokenFeatures?(texts: readonly string[]): Promise<TokenFeatures>;
  /** Frees native resources (ONNX sessions). Safe to call twice. */
  close(): Promise<void>;
}

export interface EncoderPreprocessing {
  image: Record<string, unknown>;
  text: Record<string, unknown>;
}

/** L2-normalises each row of a row-major [n, dim] matrix in place; all-zero rows stay zero. */
export function l2NormalizeRows(matrix: Float32Array, dim: number): Float32Array {
  for (let offset = 0; offset < matrix.length; offset += dim) {
    let sum = 0;
    for (let j = 0; j < dim; j++) sum += matrix[offset + j] * matrix[offset + j];
    if (sum === 0) continue;
    const scale = 1 / Math.sqrt(sum);
    for (let j = 0; j < dim; j++) matrix[offset + j] *= scale;
  }
  return matrix;
}
