import { hashJson } from "../util/hash.js";
import { hashedBuckets } from "./seeded.js";

/**
 * The builtin text encoder: TF-IDF over word unigrams and bigrams, fitted on the training
 * reports, mapped to `dim` dimensions by a seeded sparse signed random projection (each n-gram
 * adds its weight to `bucketsPerTerm` hashed coordinates with hashed signs, scaled by
 * 1/sqrt(bucketsPerTerm)), then L2-normalised. It is a lexical stand-in for BiomedCLIP's text
 * tower: reports that share words ("lower left lung") land close together, synonyms do not.
 *
 * The fit is a pure function of the fitting texts (document frequencies and their count), so
 * every process that sees the same training reports computes the same fit and the same digest.
 */
export interface TfidfFit {
  documents: number;
  /** n-gram -> number of fitting documents containing it */
  df: Map<string, number>;
  digest: string;
}

export interface TfidfConfig {
  kind: "tfidf-word-ngrams";
  ngrams: [1, 2];
  lowercase: true;
  tokenPattern: string;
  tf: "sublinear";
  idf: "smooth";
  projection: { kind: "sparse-signed-hash"; bucketsPerTerm: number; seed: number };
  dim: number;
}

const TOKEN_PATTERN = /[\p{L}\p{N}]+/gu;

export function tfidfConfig(dim: number, seed = 20250715): TfidfConfig {
  return {
    kind: "tfidf-word-ngrams",
    ngrams: [1, 2],
    lowercase: true,
    tokenPattern: TOKEN_PATTERN.source,
    tf: "sublinear",
    idf: "smooth",
    projection: { kind: "sparse-signed-hash", bucketsPerTerm: 4, seed },
    dim,
  };
}

/** Lower-cased word unigrams and adjacent-word bigrams, in text order. */
export function wordNgrams(text: string): string[] {
  const words = text.normalize("NFKC").toLowerCase().match(TOKEN_PATTERN) ?? [];
  const grams = [...words];
  for (let i = 0; i + 1 < words.length; i++) grams.push(`${words[i]} ${words[i + 1]}`);
  return grams;
}

export function fitTfidf(texts: readonly string[]): TfidfFit {
  const df = new Map<string, number>();
  for (const text of texts) for (const gram of new Set(wordNgrams(text))) df.set(gram, (df.get(gram) ?? 0) + 1);
  const entries = [...df.entries()].sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
  return { documents: texts.length, df: new Map(entries), digest: hashJson({ documents: texts.length, df: entries }) };
}

export class TfidfProjector {
  readonly config: TfidfConfig;
  readonly fit: TfidfFit;
  private readonly bucketMemo = new Map<string, { index: number; sign: number }[]>();

  constructor(fit: TfidfFit, config: TfidfConfig) {
    this.fit = fit;
    this.config = config;
  }

  /** sklearn's smooth idf: ln((1 + N) / (1 + df)) + 1; n-grams never seen in the fit get the largest idf. */
  idf(gram: string): number {
    return Math.log((1 + this.fit.documents) / (1 + (this.fit.df.get(gram) ?? 0))) + 1;
  }

  embedInto(text: string, target: Float32Array, offset: number): void {
    const counts = new Map<string, number>();
    for (const gram of wordNgrams(text)) counts.set(gram, (counts.get(gram) ?? 0) + 1);
    const { dim, projection } = this.config;
    const scale = 1 / Math.sqrt(projection.bucketsPerTerm);
    let sum = 0;
    const row = new Float64Array(dim);
    for (const [gram, count] of counts) {
      const weight = (1 + Math.log(count)) * this.idf(gram) * scale;
      let buckets = this.bucketMemo.get(gram);
      if (!buckets) {
        buckets = hashedBuckets(gram, projection.seed, dim, projection.bucketsPerTerm);
        this.bucketMemo.set(gram, buckets);
      }
      for (const { index, sign } of buckets) row[index] += sign * weight;
    }
    for (let j = 0; j < dim; j++) sum += row[j]! * row[j]!;
    const norm = sum > 0 ? 1 / Math.sqrt(sum) : 0;
    for (let j = 0; j < dim; j++) target[offset + j] = row[j]! * norm;
  }
}
