import path from "node:path";
import * as ort from "onnxruntime-node";
import { ModelError } from "../errors.js";
import { hashJson, sha256File } from "../util/hash.js";
import { BertTokenizer } from "./bert-tokenizer.js";
import { l2NormalizeRows, type Encoder, type EncoderPreprocessing, type TokenFeatures } from "./encoder.js";
import { BIOMEDCLIP_IMAGE_PREPROCESSING, preprocessImageInto, type ImagePreprocessing } from "./image-preprocess.js";
import { BIOMEDCLIP_EXPORT as E, readBiomedclipManifest, type BiomedclipManifest } from "./biomedclip-manifest.js";
import { loadOnnxModel, type LoadedOnnxModel } from "./onnx-model.js";

// The manifest contract and the folder digest live in ./biomedclip-manifest.ts (no ONNX Runtime).
export { BIOMEDCLIP_EXPORT, biomedclipFolderDigest, biomedclipManifestSchema, readBiomedclipManifest, type BiomedclipManifest } from "./biomedclip-manifest.js";

export interface BiomedclipOptions {
  /** ONNX Runtime intra-op threads per session (default: ONNX Runtime's choice). */
  threads?: number;
}

export class BiomedclipEncoder implements Encoder {
  readonly id = "biomedclip";
  readonly dim: number;
  readonly digest: string;
  readonly imageDigest: string;
  readonly textDigest: string;
  readonly preprocessing: EncoderPreprocessing;
  readonly manifest: BiomedclipManifest;
  readonly tokenizer: BertTokenizer;
  private readonly imagePreprocessing: ImagePreprocessing;
  private readonly image: LoadedOnnxModel;
  private readonly text: LoadedOnnxModel;
  private readonly textHidden?: LoadedOnnxModel;
  private closed = false;

  private constructor(
    manifest: BiomedclipManifest,
    image: LoadedOnnxModel,
    text: LoadedOnnxModel,
    textHidden: LoadedOnnxModel | undefined,
    tokenizer: BertTokenizer,
    tokenizerSha: string,
  ) {
    this.manifest = manifest;
    this.image = image;
    this.text = text;
    this.textHidden = textHidden;
    this.tokenizer = tokenizer;
    this.dim = manifest.embedDim;
    this.imagePreprocessing = { ...BIOMEDCLIP_IMAGE_PREPROCESSING, size: manifest.image.size, mean: manifest.image.mean, std: manifest.image.std };
    this.preprocessing = { image: { ...this.imagePreprocessing }, text: { ...tokenizer.preprocessing } };
    this.imageDigest = hashJson({ id: this.id, weights: image.sha256, preprocessing: this.preprocessing.image, output: manifest.image.output });
    this.textDigest = hashJson({
      id: this.id,
      weights: text.sha256,
      tokenizer: tokenizerSha,
      preprocessing: this.preprocessing.text,
      output: manifest.text.output,
    });
    this.digest = hashJson({ image: this.imageDigest, text: this.textDigest, hidden: textHidden?.sha256 ?? null });
  }

  /** Loads and validates an exported folder; every problem is a ModelError naming the file. */
  static async load(dir: string, options: BiomedclipOptions = {}): Promise<BiomedclipEncoder> {
    const manifest = await readBiomedclipManifest(dir);
    const sessionOptions: ort.InferenceSession.SessionOptions = options.threads ? { intraOpNumThreads: options.threads } : {};
    const opset = { min: manifest.opset, max: manifest.opset };
    const size = manifest.image.size;
    const L = manifest.text.contextLength;
    const tokenizerFile = path.join(dir, manifest.tokenizer.file);
    const tokenizer = await BertTokenizer.fromFile(tokenizerFile, {
      contextLength: L,
      expectLowercase: manifest.tokenizer.lowercase,
      expectVocabSize: manifest.text.vocabSize,
    });
    const loaded: LoadedOnnxModel[] = [];
    try {
      const image = await loadOnnxModel(
        path.join(dir, manifest.image.file),
        {
          opset,
          inputs: [{ name: manifest.image.input, type: "float32", shape: ["batch", 3, size, size] }],
          outputs: [{ name: manifest.image.output, type: "float32", shape: ["batch", manifest.embedDim] }],
        },
        sessionOptions,
      );
      loaded.push(image);
      const text = await loadOnnxModel(
        path.join(dir, manifest.text.file),
        {
          opset,
          inputs: [{ name: manifest.text.input, type: "int64", shape: ["batch", L] }],
          outputs: [{ name: manifest.text.output, type: "float32", shape: ["batch", manifest.embedDim] }],
        },
        sessionOptions,
      );
      loaded.push(text);
      let hidden: LoadedOnnxModel | undefined;
      if (manifest.textHidden) {
        hidden = await loadOnnxModel(
          path.join(dir, manifest.textHidden.file),
          {
            opset,
            inputs: [{ name: manifest.textHidden.input, type: "int64", shape: ["batch", L] }],
            outputs: [{ name: manifest.textHidden.output, type: "float32", shape: ["batch", L, manifest.textHidden.hiddenSize] }],
          },
          sessionOptions,
        );
        loaded.push(hidden);
      }
      const tokenizerSha = await sha256File(tokenizerFile);
      return new BiomedclipEncoder(manifest, image, text, hidden, tokenizer, tokenizerSha);
    } catch (error) {
      await Promise.all(loaded.map((m) => m.session.release()));
      throw error;
    }
  }

  async embedImages(images: readonly Uint8Array[]): Promise<Float32Array> {
    if (images.length === 0) return new Float32Array(0);
    const size = this.imagePreprocessing.size;
    const pixels = new Float32Array(images.length * 3 * size * size);
    await Promise.all(images.map((bytes, i) => preprocessImageInto(bytes, this.imagePreprocessing, pixels, i * 3 * size * size)));
    const feeds = { [this.manifest.image.input]: new ort.Tensor("float32", pixels, [images.length, 3, size, size]) };
    const result = await this.image.session.run(feeds);
    return this.takeEmbeddings(result[this.manifest.image.output]!, images.length, this.image.file);
  }

  async embedTexts(texts: readonly string[]): Promise<Float32Array> {
    if (texts.length === 0) return new Float32Array(0);
    const batch = this.tokenizer.encode(texts);
    const feeds = { [this.manifest.text.input]: new ort.Tensor("int64", batch.ids, [texts.length, batch.contextLength]) };
    const result = await this.text.session.run(feeds);
    return this.takeEmbeddings(result[this.manifest.text.output]!, texts.length, this.text.file);
  }

  get hasTokenFeatures(): boolean {
    return this.textHidden !== undefined;
  }

  async tokenFeatures(texts: readonly string[]): Promise<TokenFeatures> {
    const hidden = this.textHidden;
    const spec = this.manifest.textHidden;
    if (!hidden || !spec) {
      throw new ModelError(`this model folder has no text hidden-states model`, {
        location: { file: path.dirname(this.text.file) },
        hint: `export it with tools/export_biomedclip.py (it writes ${E.files.textHidden})`,
      });
    }
    const batch = this.tokenizer.encode(texts);
    const result = await hidden.session.run({ [spec.input]: new ort.Tensor("int64", batch.ids, [texts.length, batch.contextLength]) });
    const tensor = result[spec.output]!;
    const expected = texts.length * batch.contextLength * spec.hiddenSize;
    if (tensor.data.length !== expected) {
      throw new ModelError(
        `output "${spec.output}" has ${tensor.data.length} values, expected ${expected} ([${texts.length}, ${batch.contextLength}, ${spec.hiddenSize}])`,
        { location: { file: hidden.file } },
      );
    }
    return {
      features: new Float32Array(tensor.data as Float32Array),
      mask: batch.mask,
      tokens: batch.tokens,
      length: batch.contextLength,
      width: spec.hiddenSize,
    };
  }

  private takeEmbeddings(tensor: ort.Tensor, n: number, file: string): Float32Array {
    if (tensor.type !== "float32" || tensor.data.length !== n * this.dim) {
      throw new ModelError(`model returned ${tensor.type} [${tensor.dims.join(", ")}], expected float32 [${n}, ${this.dim}]`, { location: { file } });
    }
    return l2NormalizeRows(new Float32Array(tensor.data as Float32Array), this.dim);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await Promise.all([this.image.session.release(), this.text.session.release(), this.textHidden?.session.release()]);
  }
}
