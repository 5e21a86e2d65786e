import assert from "node:assert/strict";
import { rm, writeFile } from "node:fs/promises";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import sharp from "sharp";
import { ModelError } from "../../src/errors.js";
import { BertTokenizer } from "../../src/embed/bert-tokenizer.js";
import { BIOMEDCLIP_EXPORT, BiomedclipEncoder } from "../../src/embed/biomedclip.js";
import { createEncoder } from "../../src/embed/factory.js";
import { BIOMEDCLIP_IMAGE_PREPROCESSING as P, centerCropOffset, preprocessImage, shortestSideSize } from "../../src/embed/image-preprocess.js";
import { readOnnxHeader } from "../../src/embed/onnx-model.js";
import { blobImage, scratchDir } from "./helpers.js";
import { buildTokenizerJson, writeTinyBiomedclipFolder } from "./tiny-biomedclip.js";

const norm = (v: number, c: number) => (v / 255 - P.mean[c]!) / P.std[c]!;
const close = (a: number, b: number, what: string) => assert.ok(Math.abs(a - b) < 1e-6, `${what}: ${a} vs ${b}`);
const plane = 224 * 224;

describe("BiomedCLIP preprocessing", () => {
  test("a 224x224 grey PNG is normalised per channel and repeated to 3 channels (hand-computed pixels)", async () => {
    const raw = Buffer.alloc(plane, 128);
    raw[0] = 0;
    raw[7 * 224 + 5] = 255;
    const png = await sharp(raw, { raw: { width: 224, height: 224, channels: 1 } })
      .png()
      .toBuffer();
    const x = await preprocessImage(png);
    assert.equal(x.length, 3 * plane);
    for (let c = 0; c < 3; c++) {
      close(x[c * plane]!, (0 - P.mean[c]!) / P.std[c]!, `pixel (0,0) channel ${c}`);
      close(x[c * plane + 7 * 224 + 5]!, (1 - P.mean[c]!) / P.std[c]!, `pixel (5,7) channel ${c}`);
      close(x[c * plane + 100 * 224 + 100]!, norm(128, c), `pixel (100,100) channel ${c}`);
    }
    close(x[0]!, -1.7922625, "R of black = -mean/std, to 7 digits");
    close(x[plane + 7 * 224 + 5]!, (1 - 0.4578275) / 0.26130258, "G of white");
  });

  test("shortest side already 224: center crop offset round((300-224)/2) = 38 rows, channels kept apart, alpha dropped", async () => {
    const width = 224;
    const height = 300;
    const raw = Buffer.alloc(width * height * 4);
    for (let y = 0; y < height; y++) for (let x = 0; x < width; x++) raw.set([y % 256, 50, 200, 7], (y * width + x) * 4);
    const png = await sharp(raw, { raw: { width, height, channels: 4 } })
      .png()
      .toBuffer();
    const x = await preprocessImage(png);
    close(x[0]!, norm(38, 0), "R of output row 0 = source row 38");
    close(x[223 * 224 + 10]!, norm((38 + 223) % 256, 0), "R of output row 223");
    close(x[plane + 5]!, norm(50, 1), "G");
    close(x[2 * plane + 5]!, norm(200, 2), "B (alpha 7 ignored)");
  });

  test("resize: torchvision sizes and crop offsets; a constant image stays constant through bicubic resize", async () => {
    assert.deepEqual(shortestSideSize(500, 333, 224), { width: 336, height: 224 });
    assert.deepEqual(shortestSideSize(332, 487, 224), { width: 224, height: 328 });
    assert.equal(centerCropOffset(225, 224), 0, "0.5 rounds to even 0");
    assert.equal(centerCropOffset(227, 224), 2, "1.5 rounds to even 2");
    assert.equal(centerCropOffset(229, 224), 2, "2.5 rounds to even 2");
    const jpeg = await sharp({ create: { width: 640, height: 480, channels: 3, background: { r: 90, g: 90, b: 90 } } })
      .png()
      .toBuffer();
    const x = await preprocessImage(jpeg);
    for (const i of [0, 1000, plane - 1]) close(x[i]!, norm(90, 0), `pixel ${i}`);
  });

  test("undecodable bytes give a DataError", async () => {
    await assert.rejects(preprocessImage(new Uint8Array([1, 2, 3]), P, "bad.png"), /cannot decode image bad.png/);
  });
});

describe("BERT tokenizer (generated WordPiece tokenizer.json through @huggingface/tokenizers)", () => {
  const { json, vocabSize } = buildTokenizerJson();
  const tokenizer = BertTokenizer.fromJson(json, { file: "tokenizer.json", contextLength: 256, expectLowercase: true, expectVocabSize: vocabSize });
  const vocab = (json as { model: { vocab: Record<string, number> } }).model.vocab;

  test("[CLS] text [SEP], lower-cased, word pieces, [UNK], padded with 0 to 256, mask = ids != 0", () => {
    const batch = tokenizer.encode(["Bilateral pulmonary infectioned, Zebra."]);
    const ids = Array.from(batch.ids.slice(0, 10), Number);
    assert.deepEqual(
      batch.tokens[0],
      ["[CLS]", "bilateral", "pulmonary", "infection", "##ed", ",", "z", "##e", "##b", "##r", "##a", ".", "[SEP]"].slice(0, batch.tokens[0]!.length),
    );
    assert.equal(ids[0], vocab["[CLS]"]);
    assert.equal(ids[1], vocab.bilateral);
    const used = batch.tokens[0]!.length;
    assert.equal(Number(batch.ids[used - 1]), vocab["[SEP]"]);
    assert.equal(batch.ids.length, 256);
    for (let i = used; i < 256; i++) assert.equal(batch.ids[i], 0n);
    for (let i = 0; i < 256; i++) assert.equal(batch.mask[i], batch.ids[i] !== 0n ? 1 : 0);
    assert.equal(Number(tokenizer.encode(["€"]).ids[1]), vocab["[UNK]"] ?? -1, "a character outside the vocabulary is [UNK]");
  });

  test("upper case maps to the same ids; long texts truncate to 254 pieces + [SEP]", () => {
    const a = tokenizer.encode(["LOWER LEFT LUNG"]);
    const b = tokenizer.encode(["lower left lung"]);
    assert.deepEqual(a.ids, b.ids);
    const long = tokenizer.encode([Array(400).fill("lung").join(" ")]);
    assert.equal(long.tokens[0]!.length, 256);
    assert.equal(Number(long.ids[255]), vocab["[SEP]"]);
    assert.equal(Number(long.ids[254]), vocab.lung);
  });

  test("tokenizer mismatches are ModelErrors naming the file", () => {
    assert.throws(
      () => BertTokenizer.fromJson(buildTokenizerJson(undefined, { padId: 7 }).json, { file: "/m/tokenizer.json", contextLength: 256 }),
      (e: unknown) => e instanceof ModelError && /expected \[PAD\] = 0, found 7/.test(e.message) && e.location.file === "/m/tokenizer.json",
    );
    assert.throws(
      () => BertTokenizer.fromJson(json, { file: "t.json", contextLength: 256, expectVocabSize: vocabSize + 1 }),
      /expects a vocabulary of \d+ tokens, the tokenizer has \d+/,
    );
    assert.throws(
      () => BertTokenizer.fromJson(buildTokenizerJson(undefined, { lowercase: false }).json, { file: "t.json", contextLength: 256, expectLowercase: true }),
      /expected an uncased tokenizer/,
    );
    assert.throws(
      () => BertTokenizer.fromJson({ model: { type: "BPE", vocab: {} } }, { file: "t.json", contextLength: 256 }),
      /not a BERT WordPiece tokenizer/,
    );
  });
});

describe("BiomedCLIP encoder on a test-built ONNX folder (real code path, tiny random weights)", () => {
  let dir: string;
  let encoder: BiomedclipEncoder;
  before(async () => {
    dir = path.join(await scratchDir("model"), "biomedclip");
    await writeTinyBiomedclipFolder(dir);
    encoder = (await createEncoder({ encoder: "biomedclip", model: dir })) as BiomedclipEncoder;
  });
  after(async () => {
    await encoder?.close();
    await rm(path.dirname(dir), { recursive: true, force: true });
  });

  test("the files carry the export contract: opset 17, tensor names, 512-d", async () => {
    const { readFile } = await import("node:fs/promises");
    assert.equal(readOnnxHeader(await readFile(path.join(dir, "image.onnx"))).opsets[""], 17);
    assert.equal(encoder.dim, 512);
    assert.equal(encoder.manifest.image.input, "pixel_values");
    assert.equal(encoder.manifest.text.output, "text_embeds");
    assert.match(encoder.digest, /^[0-9a-f]{64}$/);
  });

  test("images: batch of 3 equals three batches of 1, rows are unit length, different images differ", async () => {
    const images = await Promise.all([blobImage(1), blobImage(2), blobImage(3, 300, 3)]);
    const batch = await encoder.embedImages(images);
    assert.equal(batch.length, 3 * 512);
    for (let i = 0; i < 3; i++) {
      const single = await encoder.embedImages([images[i]!]);
      for (let j = 0; j < 512; j += 51) close(batch[i * 512 + j]!, single[j]!, `image ${i} dim ${j}`);
      const n = Math.hypot(...batch.subarray(i * 512, (i + 1) * 512));
      close(n, 1, "norm");
    }
    assert.notEqual(batch[0], batch[512]);
  });

  test("texts: identical texts give identical embeddings, case does not matter, tokenFeatures are [n,256,768] with the tokenizer's mask", async () => {
    const texts = ["Bilateral pulmonary infection, two infected areas.", "One small pink polyp", "BILATERAL pulmonary infection, two infected areas."];
    const out = await encoder.embedTexts(texts);
    assert.deepEqual(out.subarray(0, 512), out.subarray(1024, 1536));
    assert.notDeepEqual(out.subarray(0, 512), out.subarray(512, 1024));
    const features = await encoder.tokenFeatures(texts.slice(0, 2));
    assert.equal(features.features.length, 2 * 256 * 768);
    assert.equal(features.length, 256);
    assert.equal(features.width, 768);
    assert.deepEqual(features.mask, encoder.tokenizer.encode(texts.slice(0, 2)).mask);
    assert.equal(features.tokens[1]![0], "[CLS]");
  });
});

describe("bad model folders are ModelErrors naming the file and expected vs found", () => {
  const cases: {
    name: string;
    options: Parameters<typeof writeTinyBiomedclipFolder>[1];
    mutate?: (dir: string) => Promise<void>;
    file: string;
    message: RegExp;
  }[] = [
    { name: "missing text tower", options: {}, mutate: (d) => rm(path.join(d, "text.onnx")), file: "text.onnx", message: /model file is missing/ },
    { name: "missing manifest", options: {}, mutate: (d) => rm(path.join(d, "manifest.json")), file: "manifest.json", message: /no manifest.json/ },
    {
      name: "wrong image size",
      options: { imageSize: 112 },
      file: "image.onnx",
      message: /input "pixel_values" has the wrong shape: expected float32 \[batch, 3, 224, 224\], found float32 \[batch, 3, 112, 112\]/,
    },
    { name: "wrong embedding width", options: { embedDim: 256 }, file: "image.onnx", message: /expected float32 \[batch, 512\], found float32 \[batch, 256\]/ },
    {
      name: "fixed batch",
      options: { fixedBatch: 1 },
      file: "image.onnx",
      message: /expected float32 \[batch, 3, 224, 224\], found float32 \[1, 3, 224, 224\]/,
    },
    { name: "renamed output", options: { imageOutputName: "embeds" }, file: "image.onnx", message: /output "image_embeds" not found: .* "embeds"/ },
    { name: "wrong opset", options: { opset: 13 }, file: "image.onnx", message: /wrong opset: expected 17, found 13/ },
    { name: "tokenizer with [PAD] != 0", options: { tokenizer: { padId: 9 } }, file: "tokenizer.json", message: /expected \[PAD\] = 0, found 9/ },
    {
      name: "tokenizer vocabulary differs from the text tower's",
      options: { manifestVocabSize: 30522 },
      file: "tokenizer.json",
      message: /expects a vocabulary of 30522 tokens/,
    },
    {
      name: "not an ONNX file",
      options: {},
      mutate: (d) => writeFile(path.join(d, "image.onnx"), "hello"),
      file: "image.onnx",
      message: /wrong opset|not an ONNX model/,
    },
  ];
  for (const c of cases) {
    test(c.name, async () => {
      const root = await scratchDir("bad");
      const dir = path.join(root, "m");
      await writeTinyBiomedclipFolder(dir, c.options);
      await c.mutate?.(dir);
      await assert.rejects(BiomedclipEncoder.load(dir), (error: unknown) => {
        assert.ok(error instanceof ModelError, `ModelError, got ${String(error)}`);
        assert.match(error.message, c.message);
        assert.equal(path.basename(error.location.file ?? ""), c.file);
        return true;
      });
      await rm(root, { recursive: true, force: true });
    });
  }
  test("export constants match what the test folder writes", () => {
    assert.equal(BIOMEDCLIP_EXPORT.files.textHidden, "text_hidden.onnx");
    assert.equal(BIOMEDCLIP_EXPORT.tensors.lastHiddenState, "last_hidden_state");
  });
});
