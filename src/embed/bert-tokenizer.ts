import { readFile } from "node:fs/promises";
import { Tokenizer } from "@huggingface/tokenizers";
import { ModelError } from "../errors.js";

/**
 * BiomedCLIP's text side: PubMedBERT's uncased WordPiece tokenizer (a Hugging Face
 * `tokenizer.json`), context 256. Mirrors open_clip's HFTokenizer call
 * `tokenizer(texts, max_length=256, padding="max_length", truncation=True)`: [CLS] + the first
 * 254 word pieces + [SEP], then [PAD] (= 0) up to 256. The attention mask is `ids != 0`, which
 * is what the text tower computes itself from the ids.
 *
 * Tokenisation (normaliser, pre-tokeniser, WordPiece) is done by @huggingface/tokenizers; the
 * special tokens, truncation and padding are applied here because that package does neither
 * truncation nor padding.
 */
export interface TokenizerPreprocessing {
  kind: "bert-wordpiece";
  lowercase: boolean;
  contextLength: number;
  padId: number;
  vocabSize: number;
}

export interface TokenizedBatch {
  /** [n, contextLength] int64 ids, padded with padId. */
  ids: BigInt64Array;
  /** [n, contextLength] 1 on real tokens ([CLS] and [SEP] included), 0 on padding. */
  mask: Uint8Array;
  /** Word pieces per text, [CLS] and [SEP] included, padding excluded. */
  tokens: string[][];
  contextLength: number;
}

interface TokenizerJson {
  model?: { type?: string; vocab?: Record<string, number>; unk_token?: string };
  normalizer?: { type?: string; lowercase?: boolean } | null;
}

export class BertTokenizer {
  readonly preprocessing: TokenizerPreprocessing;
  private readonly tokenizer: Tokenizer;
  private readonly clsId: number;
  private readonly sepId: number;

  private constructor(tokenizer: Tokenizer, preprocessing: TokenizerPreprocessing, clsId: number, sepId: number) {
    this.tokenizer = tokenizer;
    this.preprocessing = preprocessing;
    this.clsId = clsId;
    this.sepId = sepId;
  }

  /** Validates a parsed tokenizer.json: WordPiece, [PAD] = 0, [CLS]/[SEP]/[UNK] present, lower-casing as expected. */
  static fromJson(json: unknown, options: { file: string; contextLength: number; expectLowercase?: boolean; expectVocabSize?: number }): BertTokenizer {
    const { file } = options;
    const data = json as TokenizerJson;
    const model = data?.model;
    if (model?.type !== "WordPiece" || typeof model.vocab !== "object" || model.vocab === null) {
      throw new ModelError(
        `tokenizer is not a BERT WordPiece tokenizer: expected model.type "WordPiece" with a vocab, found ${JSON.stringify(model?.type ?? null)}`,
        {
          location: { file, keyPath: "model.type" },
          hint: "export the tokenizer of microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract with tools/export_biomedclip.py",
        },
      );
    }
    const vocab = model.vocab;
    const need = (token: string, expectedId?: number): number => {
      const id = vocab[token];
      if (id === undefined) throw new ModelError(`tokenizer vocab has no ${token} token`, { location: { file, keyPath: `model.vocab["${token}"]` } });
      if (expectedId !== undefined && id !== expectedId) {
        throw new ModelError(`tokenizer mismatch: expected ${token} = ${expectedId}, found ${id}`, {
          location: { file, keyPath: `model.vocab["${token}"]` },
          hint: "BiomedCLIP's text tower masks padding as input_ids != 0",
        });
      }
      return id;
    };
    const padId = need("[PAD]", 0);
    const clsId = need("[CLS]");
    const sepId = need("[SEP]");
    need(model.unk_token ?? "[UNK]");
    const vocabSize = Object.keys(vocab).length;
    if (options.expectVocabSize !== undefined && vocabSize !== options.expectVocabSize) {
      throw new ModelError(`tokenizer mismatch: the text model expects a vocabulary of ${options.expectVocabSize} tokens, the tokenizer has ${vocabSize}`, {
        location: { file, keyPath: "model.vocab" },
        hint: "tokenizer.json must come from the same export as the text ONNX model",
      });
    }
    const lowercase = data.normalizer?.type === "BertNormalizer" ? data.normalizer.lowercase !== false : Boolean(data.normalizer?.lowercase);
    if (options.expectLowercase !== undefined && lowercase !== options.expectLowercase) {
      throw new ModelError(
        `tokenizer mismatch: expected an ${options.expectLowercase ? "uncased" : "cased"} tokenizer, found ${lowercase ? "uncased" : "cased"}`,
        { location: { file, keyPath: "normalizer.lowercase" } },
      );
    }
    if (!Number.isInteger(options.contextLength) || options.contextLength < 2) {
      throw new ModelError(`context length must be an integer >= 2, found ${options.contextLength}`, { location: { file } });
    }
    let tokenizer: Tokenizer;
    try {
      tokenizer = new Tokenizer(data, {});
    } catch (error) {
      throw new ModelError(`cannot load tokenizer: ${(error as Error).message}`, { location: { file }, cause: error });
    }
    return new BertTokenizer(tokenizer, { kind: "bert-wordpiece", lowercase, contextLength: options.contextLength, padId, vocabSize }, clsId, sepId);
  }

  static async fromFile(file: string, options: { contextLength: number; expectLowercase?: boolean; expectVocabSize?: number }): Promise<BertTokenizer> {
    let json: unknown;
    try {
      json = JSON.parse(await readFile(file, "utf8"));
    } catch (error) {
      throw new ModelError(`cannot read tokenizer: ${(error as Error).message}`, { location: { file }, cause: error });
    }
    return BertTokenizer.fromJson(json, { ...options, file });
  }

  encode(texts: readonly string[]): TokenizedBatch {
    const length = this.preprocessing.contextLength;
    const ids = new BigInt64Array(texts.length * length);
    const mask = new Uint8Array(texts.length * length);
    const tokens: string[][] = [];
    const padId = BigInt(this.preprocessing.padId);
    if (padId !== 0n) ids.fill(padId);
    texts.forEach((text, row) => {
      const encoded = this.tokenizer.encode(text, { add_special_tokens: false });
      const kept = Math.min(encoded.ids.length, length - 2);
      const base = row * length;
      ids[base] = BigInt(this.clsId);
      for (let i = 0; i < kept; i++) ids[base + 1 + i] = BigInt(encoded.ids[i]!);
      ids[base + 1 + kept] = BigInt(this.sepId);
      for (let i = 0; i < kept + 2; i++) mask[base + i] = ids[base + i] !== 0n ? 1 : 0;
      tokens.push(["[CLS]", ...encoded.tokens.slice(0, kept), "[SEP]"]);
    });
    return { ids, mask, tokens, contextLength: length };
  }
}
