import { hashJson } from "../util/hash.js";
import type { Encoder, EncoderPreprocessing } from "./encoder.js";
import { GridImageProjector, gridImageConfig } from "./builtin-image.js";
import { TfidfProjector, fitTfidf, tfidfConfig, type TfidfFit } from "./builtin-text.js";

/** Bump when the builtin encoder's arithmetic changes: it is part of every digest. */
export const BUILTIN_ENCODER_VERSION = "1";

export interface BuiltinOptions {
  dim?: number;
  /** Reports the TF-IDF statistics are fitted on (the training split's available reports). */
  fitTexts: readonly string[];
}

/**
 * The offline default: deterministic, no download, a stand-in for BiomedCLIP (see
 * docs/embed.md). Text: TF-IDF word uni+bigrams fitted on `fitTexts`; image: zone statistics.
 */
export class BuiltinEncoder implements Encoder {
  readonly id = "builtin";
  readonly dim: number;
  readonly digest: string;
  readonly imageDigest: string;
  readonly textDigest: string;
  readonly preprocessing: EncoderPreprocessing;
  readonly fit: TfidfFit;
  private readonly text: TfidfProjector;
  private readonly image: GridImageProjector;

  constructor(options: BuiltinOptions) {
    const dim = options.dim ?? 512;
    if (!Number.isInteger(dim) || dim < 1) throw new RangeError(`builtin encoder dim must be a positive integer, got ${dim}`);
    this.dim = dim;
    this.fit = fitTfidf(options.fitTexts);
    this.text = new TfidfProjector(this.fit, tfidfConfig(dim));
    this.image = new GridImageProjector(gridImageConfig(dim));
    this.preprocessing = {
      image: { ...this.image.config },
      text: { ...this.text.config, fit: { documents: this.fit.documents, terms: this.fit.df.size, digest: this.fit.digest } },
    };
    this.imageDigest = hashJson({ id: this.id, version: BUILTIN_ENCODER_VERSION, image: this.image.config });
    this.textDigest = hashJson({ id: this.id, version: BUILTIN_ENCODER_VERSION, text: this.text.config, fit: this.fit.digest });
    this.digest = hashJson({ image: this.imageDigest, text: this.textDigest });
  }

  async embedImages(images: readonly Uint8Array[]): Promise<Float32Array> {
    const out = new Float32Array(images.length * this.dim);
    await Promise.all(images.map((bytes, i) => this.image.embedInto(bytes, out, i * this.dim)));
    return out;
  }

  async embedTexts(texts: readonly string[]): Promise<Float32Array> {
    const out = new Float32Array(texts.length * this.dim);
    texts.forEach((text, i) => this.text.embedInto(text, out, i * this.dim));
    return out;
  }

  async close(): Promise<void> {}
}
