import { readFile, stat } from "node:fs/promises";
import path from "node:path";
import * as ort from "onnxruntime-node";
import { z } from "zod";
import { ModelError } from "../errors.js";
import { hashJson, sha256File } from "../util/hash.js";
import { BertTokenizer } from "./bert-tokenizer.js";
import { l2NormalizeRows, type Encoder, type EncoderPreprocessing, type TokenFeatures } from "./encoder.js";
import { BIOMEDCLIP_IMAGE_PREPROCESSING, preprocessImageInto, type ImagePreprocessing } from "./image-preprocess.js";
import { loadOnnxModel, type LoadedOnnxModel } from "./onnx-model.js";
import { digestFile } from "../pipeline/file-digest.js";

/**
 * The export contract shared with tools/export_biomedclip.py: file names, tensor names, opset.
 * The script writes these same literals into manifest.json; the loader checks the ONNX files
 * against the manifest.
 */
export const BIOMEDCLIP_EXPORT = {
  format: "prolearn-biomedclip-onnx/1",
  source: "hf-hub:microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224",
  opset: 17,
  files: { manifest: "manifest.json", image: "image.onnx", text: "text.onnx", textHidden: "text_hidden.onnx", tokenizer: "tokenizer.json" },
  tensors: { pixelValues: "pixel_values", imageEmbeds: "image_embeds", inputIds: "input_ids", textEmbeds: "text_embeds", lastHiddenState: "last_hidden_state" },
  embedDim: 512,
  imageSize: 224,
  contextLength: 256,
  hiddenSize: 768,
} as const;

const E = BIOMEDCLIP_EXPORT;
const triple = z.tuple([z.number(), z.number(), z.number()]);

export const biomedclipManifestSchema = z.object({
  format: z.literal(E.format),
  source: z.string().default(E.source),
  opset: z.number().int().default(E.opset),
  embedDim: z.number().int().positive().default(E.embedDim),
  image: z.object({
    file: z.string().default(E.files.image),
    input: z.string().default(E.tensors.pixelValues),
    output: z.string().default(E.tensors.imageEmbeds),
    size: z.number().int().positive().default(E.imageSize),
    mean: triple.default(BIOMEDCLIP_IMAGE_PREPROCESSING.mean),
    std: triple.default(BIOMEDCLIP_IMAGE_PREPROCESSING.std),
  }),
  text: z.object({
    file: z.string().default(E.files.text),
    input: z.string().default(E.tensors.inputIds),
    output: z.string().default(E.tensors.textEmbeds),
    contextLength: z.number().int().min(2).default(E.contextLength),
    vocabSize: z.number().int().positive().optional(),
  }),
  textHidden: z
    .object({
      file: z.string().default(E.files.textHidden),
      input: z.string().default(E.tensors.inputIds),
      output: z.string().default(E.tensors.lastHiddenState),
      hiddenSize: z.number().int().positive().default(E.hiddenSize),
    })
    .nullable()
    .default(null),
  tokenizer: z.object({ file: z.string().default(E.files.tokenizer), lowercase: z.boolean().default(true) }),
});
export type BiomedclipManifest = z.output<typeof biomedclipManifestSchema>;

export async function readBiomedclipManifest(dir: string): Promise<BiomedclipManifest> {
  const file = path.join(dir, E.files.manifest);
  let raw: unknown;
  try {
    raw = JSON.parse(await readFile(file, "utf8"));
  } catch (error) {
    const missing = (error as NodeJS.ErrnoException).code === "ENOENT";
    throw new ModelError(missing ? `model folder has no ${E.files.manifest}` : `cannot read ${E.files.manifest}: ${(error as Error).message}`, {
      location: { file },
      hint: "create the folder with tools/export_biomedclip.py (docs/embed.md)",
      cause: error,
    });
  }
  const parsed = biomedclipManifestSchema.safeParse(raw);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    throw new ModelError(`invalid manifest: ${issue.message}`, { location: { file, keyPath: issue.path.join(".") } });
  }
  return parsed.data;
}

function manifestFiles(manifest: BiomedclipManifest): string[] {
  return [manifest.image.file, manifest.text.file, ...(manifest.textHidden ? [manifest.textHidden.file] : []), manifest.tokenizer.file];
}


/**
 * Content digest of a model folder (manifest + every file it names), for the stage's cache key.
 * Hashing 400 MB of weights takes seconds, so file digests go through the engine's stat cache
 * (re-hashed only when a file's size or mtime changed, across runs and processes).
 */
export async function biomedclipFolderDigest(dir: string): Promise<string> {
  const manifest = await readBiomedclipManifest(dir);
  const digests: Record<string, string> = {};
  for (const file of manifestFiles(manifest).map((f) => path.join(dir, f))) {
    try {
      await stat(file);
    } catch {
      throw new ModelError("model file is missing", { location: { file }, hint: `the manifest in ${dir} names it` });
    }
    digests[path.basename(file)] = await digestFile(file);
  }
  return hashJson({ manifest, files: digests });
}

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

  private constructor(manifest: BiomedclipManifest, image: LoadedOnnxModel, text: LoadedOnnxModel, textHidden: LoadedOnnxModel | undefined, tokenizer: BertTokenizer, tokenizerSha: string) {
    this.manifest = manifest;
    this.image = image;
    this.text = text;
    this.textHidden = textHidden;
    this.tokenizer = tokenizer;
    this.dim = manifest.embedDim;
    this.imagePreprocessing = { ...BIOMEDCLIP_IMAGE_PREPROCESSING, size: manifest.image.size, mean: manifest.image.mean, std: manifest.image.std };
    this.preprocessing = { image: { ...this.imagePreprocessing }, text: { ...tokenizer.preprocessing } };
    this.imageDigest = hashJson({ id: this.id, weights: image.sha256, preprocessing: this.preprocessing.image, output: manifest.image.output });
    this.textDigest = hashJson({ id: this.id, weights: text.sha256, tokenizer: tokenizerSha, preprocessing: this.preprocessing.text, output: manifest.text.output });
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
    const tokenizer = await BertTokenizer.fromFile(tokenizerFile, { contextLength: L, expectLowercase: manifest.tokenizer.lowercase, expectVocabSize: manifest.text.vocabSize });
    const loaded: LoadedOnnxModel[] = [];
    try {
      const image = await loadOnnxModel(
        path.join(dir, manifest.image.file),
        { opset, inputs: [{ name: manifest.image.input, type: "float32", shape: ["batch", 3, size, size] }], outputs: [{ name: manifest.image.output, type: "float32", shape: ["batch", manifest.embedDim] }] },
        sessionOptions,
      );
      loaded.push(image);
      const text = await loadOnnxModel(
        path.join(dir, manifest.text.file),
        { opset, inputs: [{ name: manifest.text.input, type: "int64", shape: ["batch", L] }], outputs: [{ name: manifest.text.output, type: "float32", shape: ["batch", manifest.embedDim] }] },
        sessionOptions,
      );
      loaded.push(text);
      let hidden: LoadedOnnxModel | undefined;
      if (manifest.textHidden) {
        hidden = await loadOnnxModel(
          path.join(dir, manifest.textHidden.file),
          { opset, inputs: [{ name: manifest.textHidden.input, type: "int64", shape: ["batch", L] }], outputs: [{ name: manifest.textHidden.output, type: "float32", shape: ["batch", L, manifest.textHidden.hiddenSize] }] },
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
      throw new ModelError(`this model folder has no text hidden-states model`, { location: { file: path.dirname(this.text.file) }, hint: `export it with tools/export_biomedclip.py (it writes ${E.files.textHidden})` });
    }
    const batch = this.tokenizer.encode(texts);
    const result = await hidden.session.run({ [spec.input]: new ort.Tensor("int64", batch.ids, [texts.length, batch.contextLength]) });
    const tensor = result[spec.output]!;
    const expected = texts.length * batch.contextLength * spec.hiddenSize;
    if (tensor.data.length !== expected) {
      throw new ModelError(`output "${spec.output}" has ${tensor.data.length} values, expected ${expected} ([${texts.length}, ${batch.contextLength}, ${spec.hiddenSize}])`, { location: { file: hidden.file } });
    }
    return { features: new Float32Array(tensor.data as Float32Array), mask: batch.mask, tokens: batch.tokens, length: batch.contextLength, width: spec.hiddenSize };
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
