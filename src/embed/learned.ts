import { existsSync } from "node:fs";
import path from "node:path";
import { DataError, ModelError } from "../errors.js";
import { decodeImage } from "../segmenter/data.js";
import { disposeParams, initParams, parameterShapes, type NetConfig, type ParamStore } from "../segmenter/model.js";
import { netForward } from "../segmenter/model.js";
import { tf } from "../segmenter/runtime.js";
import { packTensors, readFloat32File, readJson, unpackTensors, writeFloat32File, writeJsonAtomic, type TensorEntry } from "../segmenter/weights.js";
import { hashJson, sha256 } from "../util/hash.js";
import { l2NormalizeRows, type Encoder, type EncoderPreprocessing, type TokenFeatures } from "./encoder.js";
import type { LearnedHead } from "./encoder-kinds.js";
import { BOTTLENECK_GRID, MASK_GRIDS, poolFeatures } from "./learned-head.js";

/** Bump when the learned encoder's arithmetic changes: it keys its checkpoints and digests. */
export const LEARNED_ENCODER_VERSION = "1";
export const LEARNED_ENCODER_FILE = "learned-encoder.json";
/** How the last training of the encoder went (times, resumed epochs): beside the checkpoint, never an output. */
export const LEARNED_RUN_FILE = "learned-run.json";
export const LEARNED_WEIGHTS_FILE = "learned-encoder.bin";
const FORMAT = "prolearn-learned-encoder/1";
/** Images per trunk forward pass when embedding. */
const FORWARD_BATCH = 32;

/** What learned-encoder.json holds: the trunk's architecture, the feature standardisation, the head and how each was fitted. */
export interface LearnedEncoderFile {
  format: typeof FORMAT;
  version: string;
  net: NetConfig;
  channels: 1 | 3;
  grids: { bottleneck: readonly [number, number]; mask: readonly (readonly [number, number])[] };
  featureWidth: number;
  /** Per-feature mean and multiplier (see learned-head.ts, Standardizer). */
  featureMean: number[];
  featureScale: number[];
  head: { kind: LearnedHead; outputDim: number; selection: Record<string, unknown> };
  text: { id: string; dim: number; textDigest: string };
  training: Record<string, unknown>;
  weights: string;
  /** Trunk parameters (`trunk/<name>`) and the head matrix `head.w` [featureWidth, outputDim]. */
  tensors: TensorEntry[];
}

/** Pixel bytes (0..255, H*W*C per image) -> feature rows: the trunk's pooled bottleneck and pooled predicted mask. */
export async function trunkFeatures(store: ParamStore, net: NetConfig, pixels: readonly Uint8Array[]): Promise<Float32Array> {
  const size = net.imageSize;
  const perImage = size * size * net.inChannels;
  const parts: Float32Array[] = [];
  let width = 0;
  for (let start = 0; start < pixels.length; start += FORWARD_BATCH) {
    const batch = pixels.slice(start, start + FORWARD_BATCH);
    const images = new Float32Array(batch.length * perImage);
    batch.forEach((p, b) => {
      if (p.length !== perImage) throw new ModelError(`image ${start + b} has ${p.length} values, the trunk needs ${perImage}`);
      for (let i = 0; i < perImage; i++) images[b * perImage + i] = p[i]! / 255;
    });
    const [bottleneck, probabilities] = tf.tidy(() => {
      const result = netForward(store, net, tf.tensor4d(images, [batch.length, size, size, net.inChannels]), null, { bottleneck: true });
      return [result.bottleneck!, tf.sigmoid(result.logits)];
    });
    const [, h, w, c] = bottleneck.shape as [number, number, number, number];
    const [b, p] = (await Promise.all([bottleneck.data(), probabilities.data()])) as [Float32Array, Float32Array];
    bottleneck.dispose();
    probabilities.dispose();
    const features = poolFeatures(b, h, w, c, p, size, batch.length);
    width = features.length / batch.length;
    parts.push(features);
  }
  const out = new Float32Array(pixels.length * width);
  let offset = 0;
  for (const part of parts) {
    out.set(part, offset);
    offset += part.length;
  }
  return out;
}

/** Standardised features times the head matrix, L2-normalised: the query embedding. */
export function applyHead(
  features: Float32Array,
  n: number,
  featureMean: Float32Array,
  featureScale: Float32Array,
  head: Float32Array,
  outputDim: number,
): Float32Array {
  const width = featureMean.length;
  const out = new Float32Array(n * outputDim);
  const row = new Float32Array(width);
  for (let i = 0; i < n; i++) {
    for (let k = 0; k < width; k++) row[k] = (features[i * width + k]! - featureMean[k]!) * featureScale[k]!;
    for (let k = 0; k < width; k++) {
      const x = row[k]!;
      if (x === 0) continue;
      for (let c = 0; c < outputDim; c++) out[i * outputDim + c] += x * head[k * outputDim + c]!;
    }
  }
  return l2NormalizeRows(out, outputDim);
}

/** Writes the trained encoder (weights first, then the JSON that points at them). */
export async function saveLearnedEncoder(
  dir: string,
  file: Omit<LearnedEncoderFile, "format" | "version" | "weights" | "tensors">,
  trunk: ParamStore,
  head: Float32Array,
): Promise<void> {
  const tensors: [string, tf.Tensor | Float32Array][] = [...trunk].map(([name, entry]) => [`trunk/${name}`, entry.variable]);
  tensors.push(["head.w", head]);
  const { entries, values } = await packTensors(tensors);
  await writeFloat32File(path.join(dir, LEARNED_WEIGHTS_FILE), values);
  const json: LearnedEncoderFile = { format: FORMAT, version: LEARNED_ENCODER_VERSION, ...file, weights: LEARNED_WEIGHTS_FILE, tensors: entries };
  await writeJsonAtomic(path.join(dir, LEARNED_ENCODER_FILE), json);
}

export function hasLearnedEncoder(dir: string): boolean {
  return existsSync(path.join(dir, LEARNED_ENCODER_FILE)) && existsSync(path.join(dir, LEARNED_WEIGHTS_FILE));
}

/** The text side the learned encoder delegates to (the builtin or BiomedCLIP encoder). */
export type TextSide = Pick<Encoder, "id" | "dim" | "textDigest" | "preprocessing" | "embedTexts" | "tokenFeatures" | "close">;

/**
 * The learned query encoder: images go through the trained trunk, its pooled features through
 * the head into the text encoder's space; texts go to the text encoder unchanged.
 */
export class LearnedEncoder implements Encoder {
  readonly id: string;
  readonly dim: number;
  readonly digest: string;
  readonly imageDigest: string;
  readonly textDigest: string;
  readonly preprocessing: EncoderPreprocessing;
  readonly file: LearnedEncoderFile;
  private readonly store: ParamStore;
  private readonly head: Float32Array;
  private readonly featureMean: Float32Array;
  private readonly featureScale: Float32Array;
  private readonly text: TextSide;
  readonly tokenFeatures?: (texts: readonly string[]) => Promise<TokenFeatures>;

  private constructor(file: LearnedEncoderFile, store: ParamStore, head: Float32Array, weightsDigest: string, text: TextSide) {
    this.file = file;
    this.store = store;
    this.head = head;
    this.text = text;
    this.featureMean = Float32Array.from(file.featureMean);
    this.featureScale = Float32Array.from(file.featureScale);
    this.dim = file.head.outputDim;
    this.id = `learned-${file.head.kind}+${text.id}`;
    const image = {
      kind: "learned-unet-grid",
      version: LEARNED_ENCODER_VERSION,
      size: file.net.imageSize,
      channels: file.channels,
      resize: "fill-bilinear",
      grids: file.grids,
      head: file.head.kind,
      weights: weightsDigest,
    };
    this.preprocessing = { image, text: text.preprocessing.text };
    this.imageDigest = hashJson({ image, mean: sha256(new Uint8Array(this.featureMean.buffer)), scale: sha256(new Uint8Array(this.featureScale.buffer)) });
    this.textDigest = text.textDigest;
    this.digest = hashJson({ image: this.imageDigest, text: this.textDigest });
    if (text.tokenFeatures) this.tokenFeatures = (texts) => text.tokenFeatures!(texts);
  }

  /** Loads learned-encoder.json and its weights from `dir`; `text` must be the encoder the head was aligned to. */
  static async load(dir: string, text: TextSide): Promise<LearnedEncoder> {
    const jsonFile = path.join(dir, LEARNED_ENCODER_FILE);
    const file = await readJson<LearnedEncoderFile>(jsonFile);
    if (file.format !== FORMAT) throw new ModelError(`unknown learned encoder format ${String(file.format)}`, { location: { file: jsonFile } });
    if (file.text.textDigest !== text.textDigest || file.text.dim !== text.dim) {
      throw new ModelError(
        `the learned head was aligned to text encoder ${file.text.id} (${file.text.textDigest.slice(0, 12)}), not to ${text.id} (${text.textDigest.slice(0, 12)})`,
        { location: { file: jsonFile }, hint: "re-run the embed stage (--force embed)" },
      );
    }
    const weightsFile = path.join(dir, file.weights);
    const raw = await readFloat32File(weightsFile);
    const values = unpackTensors(file.tensors, raw, jsonFile);
    const config = { net: file.net, guidance: { kind: "none" as const } };
    const external: Record<string, Float32Array> = {};
    const store = initParams(config, 0, external);
    for (const spec of parameterShapes(config)) {
      const v = values.get(`trunk/${spec.name}`);
      const size = spec.shape.reduce((a, b) => a * b, 1);
      if (!v || v.length !== size) {
        disposeParams(store);
        throw new ModelError(`learned encoder weights lack trunk tensor ${spec.name} (or it has the wrong size)`, { location: { file: weightsFile } });
      }
      tf.tidy(() => store.get(spec.name)!.variable.assign(tf.tensor(v, spec.shape)));
    }
    const head = values.get("head.w");
    if (!head || head.length !== file.featureWidth * file.head.outputDim) {
      disposeParams(store);
      throw new ModelError(`learned encoder weights lack head.w [${file.featureWidth}, ${file.head.outputDim}]`, { location: { file: weightsFile } });
    }
    return new LearnedEncoder(file, store, Float32Array.from(head), sha256(new Uint8Array(raw.buffer, raw.byteOffset, raw.byteLength)), text);
  }

  /** Encoded images -> decoded pixels at the trunk's size, as training decoded them. */
  async decode(images: readonly Uint8Array[]): Promise<Uint8Array[]> {
    return Promise.all(
      images.map(async (bytes, i) => {
        try {
          return await decodeImage(bytes, this.file.net.imageSize, this.file.channels);
        } catch (error) {
          throw new DataError(`cannot decode image ${i} of the batch: ${(error as Error).message}`);
        }
      }),
    );
  }

  /** Decoded pixels -> query embeddings. */
  async embedPixels(pixels: readonly Uint8Array[]): Promise<Float32Array> {
    const features = await trunkFeatures(this.store, this.file.net, pixels);
    return applyHead(features, pixels.length, this.featureMean, this.featureScale, this.head, this.dim);
  }

  async embedImages(images: readonly Uint8Array[]): Promise<Float32Array> {
    return this.embedPixels(await this.decode(images));
  }

  embedTexts(texts: readonly string[]): Promise<Float32Array> {
    return this.text.embedTexts(texts);
  }

  async close(): Promise<void> {
    disposeParams(this.store);
    await this.text.close();
  }
}

export { BOTTLENECK_GRID, MASK_GRIDS };
