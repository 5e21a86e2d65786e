/**
 * Builds, at test time, a BiomedCLIP-shaped model folder whose ONNX files are a few hundred KB:
 * the same file names, tensor names, dtypes and shapes as tools/export_biomedclip.py writes, so
 * the real loading, preprocessing, tokenisation and batching code runs on it. Weights are
 * seeded random numbers; the models are linear (pooling / embedding sums followed by MatMul).
 */
import { mkdir, writeFile } from "node:fs/promises";
import path from "node:path";
import onnxProto from "onnx-proto";
import { BIOMEDCLIP_EXPORT } from "../../src/embed/biomedclip.js";
import { mulberry32 } from "../../src/util/random.js";

const { onnx } = onnxProto;
const FLOAT = onnx.TensorProto.DataType.FLOAT;
const INT64 = onnx.TensorProto.DataType.INT64;

/** The report sentences the tiny tokenizer's vocabulary is made from. */
export const FIXTURE_REPORTS = [
  "Bilateral pulmonary infection, two infected areas, all left lung and middle lower right lung.",
  "Unilateral pulmonary infection, one infected area, lower left lung.",
  "Bilateral pulmonary infection, three infected areas, upper middle left lung and lower right lung.",
  "No pulmonary infection, zero infected areas.",
  "one small pink circle polyp, located in right of the image",
  "one medium sized oval polyp, located in center of the image",
  "Unilateral pulmonary infection, one infected area, midlle lower right lung.",
];

export function fixtureVocabulary(): string[] {
  const words = new Set<string>();
  for (const text of FIXTURE_REPORTS) for (const w of text.toLowerCase().match(/[a-z0-9]+|[^\sa-z0-9]/g) ?? []) words.add(w);
  const extra = ["infections", "the", "a", "of", "in", "is", "with", "lungs", "opacity", "polyps", "large", "red", "flat", "top", "bottom", "image", "size"];
  for (const w of extra) words.add(w);
  for (const suffix of ["s", "ed", "ing", "ly", "al", "er", "e", "y", "le", "lle"]) words.add(`##${suffix}`);
  for (const c of "abcdefghijklmnopqrstuvwxyz0123456789") {
    words.add(c);
    words.add(`##${c}`);
  }
  return [...words].sort();
}

/** A BERT uncased WordPiece tokenizer.json in the Hugging Face format, [PAD] = 0. */
export function buildTokenizerJson(
  words: readonly string[] = fixtureVocabulary(),
  options: { lowercase?: boolean; padId?: number } = {},
): { json: unknown; vocabSize: number } {
  const specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"];
  const vocab: Record<string, number> = {};
  if (options.padId !== undefined && options.padId !== 0) {
    // A deliberately wrong tokenizer for the mismatch test: [PAD] moved away from 0.
    vocab["[UNK]"] = 0;
    vocab["[PAD]"] = options.padId;
  }
  for (const token of [...specials, ...words]) if (!(token in vocab)) vocab[token] = Object.keys(vocab).length;
  const json = {
    version: "1.0",
    truncation: null,
    padding: null,
    added_tokens: specials.map((content) => ({
      id: vocab[content],
      content,
      single_word: false,
      lstrip: false,
      rstrip: false,
      normalized: false,
      special: true,
    })),
    normalizer: { type: "BertNormalizer", clean_text: true, handle_chinese_chars: true, strip_accents: null, lowercase: options.lowercase ?? true },
    pre_tokenizer: { type: "BertPreTokenizer" },
    post_processor: { type: "BertProcessing", sep: ["[SEP]", vocab["[SEP]"]], cls: ["[CLS]", vocab["[CLS]"]] },
    decoder: { type: "WordPiece", prefix: "##", cleanup: true },
    model: { type: "WordPiece", unk_token: "[UNK]", continuing_subword_prefix: "##", max_input_chars_per_word: 100, vocab },
  };
  return { json, vocabSize: Object.keys(vocab).length };
}

/** Uniform draws in [-0.5, 0.5) from the project's seeded generator. */
function seededRandom(seed: number): () => number {
  const uniform = mulberry32(seed);
  return () => uniform() - 0.5;
}

function floatTensor(name: string, dims: number[], seed: number, zeroFirstRow = false): onnxProto.onnx.ITensorProto {
  const random = seededRandom(seed);
  const count = dims.reduce((a, b) => a * b, 1);
  const values = new Float32Array(count);
  for (let i = 0; i < count; i++) values[i] = random();
  if (zeroFirstRow) values.fill(0, 0, count / dims[0]!);
  return { name, dims, dataType: FLOAT, rawData: new Uint8Array(values.buffer) };
}

function int64Tensor(name: string, values: number[]): onnxProto.onnx.ITensorProto {
  return { name, dims: [values.length], dataType: INT64, int64Data: values };
}

function valueInfo(name: string, elemType: number, dims: (number | string)[]): onnxProto.onnx.IValueInfoProto {
  return { name, type: { tensorType: { elemType, shape: { dim: dims.map((d) => (typeof d === "number" ? { dimValue: d } : { dimParam: d })) } } } };
}

function model(graph: onnxProto.onnx.IGraphProto, opset: number): Uint8Array {
  return onnx.ModelProto.encode({ irVersion: 8, producerName: "prolearn-test", opsetImport: [{ domain: "", version: opset }], graph }).finish();
}

export interface TinyModelOptions {
  opset?: number;
  /** Size the image model's input claims (224 for a correct folder). */
  imageSize?: number;
  embedDim?: number;
  contextLength?: number;
  withHidden?: boolean;
  /** Fixes the batch dimension at this size instead of a symbolic "batch". */
  fixedBatch?: number;
  imageOutputName?: string;
  tokenizer?: { lowercase?: boolean; padId?: number };
  /** Manifest vocabSize; defaults to the tokenizer's. */
  manifestVocabSize?: number;
}

const TEXT_WIDTH = 16;
const HIDDEN = BIOMEDCLIP_EXPORT.hiddenSize;

/** Writes manifest.json, image.onnx, text.onnx, text_hidden.onnx and tokenizer.json into dir. */
export async function writeTinyBiomedclipFolder(dir: string, options: TinyModelOptions = {}): Promise<{ dir: string; vocabSize: number }> {
  const E = BIOMEDCLIP_EXPORT;
  const opset = options.opset ?? E.opset;
  const size = options.imageSize ?? E.imageSize;
  const dim = options.embedDim ?? E.embedDim;
  const L = options.contextLength ?? E.contextLength;
  const batch: number | string = options.fixedBatch ?? "batch";
  const pool = 32;
  const cells = 3 * Math.floor(size / pool) * Math.floor(size / pool);
  const { json: tokenizerJson, vocabSize } = buildTokenizerJson(fixtureVocabulary(), options.tokenizer);
  await mkdir(dir, { recursive: true });

  const imageOutput = options.imageOutputName ?? E.tensors.imageEmbeds;
  const image = model(
    {
      name: "tiny_image_tower",
      input: [valueInfo(E.tensors.pixelValues, FLOAT, [batch, 3, size, size])],
      output: [valueInfo(imageOutput, FLOAT, [batch, dim])],
      initializer: [floatTensor("w_image", [cells, dim], 1)],
      node: [
        {
          opType: "AveragePool",
          input: [E.tensors.pixelValues],
          output: ["pooled"],
          attribute: [
            { name: "kernel_shape", type: onnx.AttributeProto.AttributeType.INTS, ints: [pool, pool] },
            { name: "strides", type: onnx.AttributeProto.AttributeType.INTS, ints: [pool, pool] },
          ],
        },
        { opType: "Flatten", input: ["pooled"], output: ["flat"], attribute: [{ name: "axis", type: onnx.AttributeProto.AttributeType.INT, i: 1 }] },
        { opType: "MatMul", input: ["flat", "w_image"], output: [imageOutput] },
      ],
    },
    opset,
  );
  const embedding = () => floatTensor("token_embedding", [vocabSize, TEXT_WIDTH], 2, true);
  const text = model(
    {
      name: "tiny_text_tower",
      input: [valueInfo(E.tensors.inputIds, INT64, [batch, L])],
      output: [valueInfo(E.tensors.textEmbeds, FLOAT, [batch, dim])],
      initializer: [embedding(), floatTensor("w_text", [TEXT_WIDTH, dim], 3), int64Tensor("sum_axes", [1])],
      node: [
        { opType: "Gather", input: ["token_embedding", E.tensors.inputIds], output: ["tokens"] },
        {
          opType: "ReduceSum",
          input: ["tokens", "sum_axes"],
          output: ["summed"],
          attribute: [{ name: "keepdims", type: onnx.AttributeProto.AttributeType.INT, i: 0 }],
        },
        { opType: "MatMul", input: ["summed", "w_text"], output: [E.tensors.textEmbeds] },
      ],
    },
    opset,
  );
  const hidden = model(
    {
      name: "tiny_text_hidden",
      input: [valueInfo(E.tensors.inputIds, INT64, [batch, L])],
      output: [valueInfo(E.tensors.lastHiddenState, FLOAT, [batch, L, HIDDEN])],
      initializer: [embedding(), floatTensor("w_hidden", [TEXT_WIDTH, HIDDEN], 4)],
      node: [
        { opType: "Gather", input: ["token_embedding", E.tensors.inputIds], output: ["tokens"] },
        { opType: "MatMul", input: ["tokens", "w_hidden"], output: [E.tensors.lastHiddenState] },
      ],
    },
    opset,
  );
  const withHidden = options.withHidden ?? true;
  const manifest = {
    format: E.format,
    source: "prolearn test suite: tiny random model with BiomedCLIP's interface (not BiomedCLIP)",
    opset: E.opset,
    embedDim: E.embedDim,
    image: {
      file: E.files.image,
      input: E.tensors.pixelValues,
      output: E.tensors.imageEmbeds,
      size: E.imageSize,
      mean: [0.48145466, 0.4578275, 0.40821073],
      std: [0.26862954, 0.26130258, 0.27577711],
    },
    text: {
      file: E.files.text,
      input: E.tensors.inputIds,
      output: E.tensors.textEmbeds,
      contextLength: E.contextLength,
      vocabSize: options.manifestVocabSize ?? vocabSize,
    },
    textHidden: withHidden ? { file: E.files.textHidden, input: E.tensors.inputIds, output: E.tensors.lastHiddenState, hiddenSize: HIDDEN } : null,
    tokenizer: { file: E.files.tokenizer, lowercase: true },
  };
  await writeFile(path.join(dir, E.files.image), image);
  await writeFile(path.join(dir, E.files.text), text);
  if (withHidden) await writeFile(path.join(dir, E.files.textHidden), hidden);
  await writeFile(path.join(dir, E.files.tokenizer), JSON.stringify(tokenizerJson));
  await writeFile(path.join(dir, E.files.manifest), JSON.stringify(manifest, null, 2));
  return { dir, vocabSize };
}
