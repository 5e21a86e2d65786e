import assert from "node:assert/strict";
import { readFileSync, readdirSync } from "node:fs";
import path from "node:path";
import test from "node:test";
import { makeData, RecordBatch, Struct, Table, tableToIPC, vectorFromArray } from "apache-arrow";
import sharp from "sharp";
import { binarizeIntoScanlines, decodeJoined, decodePair, decodePairSeparately, type DecodeOutcome, type DecodeParams } from "../../src/ingest/decode.js";
import { encodeGreyPngScanlines, scanlineLength } from "../../src/ingest/png.js";
import { arrowSchema, RowBatchBuilder, SAMPLE_COLUMNS } from "../../src/ingest/schema.js";
import { realDataPath } from "./helpers.js";
import { skipUnless } from "../helpers/skip.js";

/** The binarisation rule written pixel by pixel, as the stage documents it. */
function reference(grey: Uint8Array, params: DecodeParams): { bits: Uint8Array; foreground: number; ambiguousFraction: number } {
  const t = params.maskThreshold;
  let max = 0;
  for (const v of grey) max = Math.max(max, v);
  if (max <= 1) return { bits: Uint8Array.from(grey), foreground: grey.reduce((a, v) => a + v, 0), ambiguousFraction: 0 };
  const bits = grey.map((v) => (v > t ? 1 : 0));
  const ambiguous = grey.filter((v) => v > t - 64 && v <= t + 64).length;
  return { bits, foreground: bits.reduce((a, v) => a + v, 0), ambiguousFraction: ambiguous / grey.length };
}

function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s * 1664525 + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

/** A 0/255 mask with rectangles, runs that straddle 4-pixel words, and some JPEG-like noise. */
function syntheticMask(width: number, height: number, seed: number, kind: "mask255" | "noisy" | "labels" | "soft"): Uint8Array {
  const random = rng(seed);
  const grey = new Uint8Array(width * height);
  for (let r = 0; r < 3; r++) {
    const x0 = Math.floor(random() * width);
    const y0 = Math.floor(random() * height);
    const x1 = Math.min(width, x0 + 1 + Math.floor(random() * width));
    const y1 = Math.min(height, y0 + 1 + Math.floor(random() * height));
    for (let y = y0; y < y1; y++) grey.fill(kind === "labels" ? 1 : 255, y * width + x0, y * width + x1);
  }
  if (kind === "noisy")
    for (let i = 0; i < grey.length; i++) if (random() < 0.05) grey[i] = grey[i]! ? 255 - Math.floor(random() * 20) : Math.floor(random() * 20);
  if (kind === "soft") for (let i = 0; i < grey.length; i++) grey[i] = Math.floor(random() * 256);
  return grey;
}

test("binarizeIntoScanlines matches the pixel-by-pixel rule on odd widths, unaligned buffers, label and soft masks", () => {
  let cases = 0;
  for (const [width, height] of [
    [7, 5],
    [13, 11],
    [224, 224],
    [1, 9],
    [33, 2],
  ] as const) {
    for (const kind of ["mask255", "noisy", "labels", "soft"] as const) {
      for (const maskThreshold of [0, 127, 200]) {
        const params = { maskThreshold, maskAmbiguousFraction: 0.01 };
        const source = syntheticMask(width, height, width * 31 + height + maskThreshold, kind);
        // Offset 1 makes the pixel buffer unaligned, which takes the byte-at-a-time path.
        for (const offset of [0, 1]) {
          const backing = new Uint8Array(source.length + offset);
          backing.set(source, offset);
          const grey = backing.subarray(offset);
          const out = new Uint8Array(scanlineLength(width, height));
          const got = binarizeIntoScanlines(grey, width, height, params, out);
          const want = reference(grey, params);
          assert.equal(got.foreground, want.foreground, `${kind} ${width}x${height} t=${maskThreshold} offset ${offset}`);
          assert.equal(got.ambiguousFraction, want.ambiguousFraction);
          for (let y = 0; y < height; y++) {
            assert.equal(out[y * (width + 1)], 0, "filter byte");
            assert.deepEqual(out.subarray(y * (width + 1) + 1, (y + 1) * (width + 1)), want.bits.subarray(y * width, (y + 1) * width));
          }
          cases++;
        }
      }
    }
  }
  assert.equal(cases, 5 * 4 * 3 * 2);
});

test("the mask PNG decodes (with libvips) to exactly the 0/1 scanline pixels", async () => {
  const width = 37;
  const height = 23;
  const grey = syntheticMask(width, height, 5, "noisy");
  const out = new Uint8Array(scanlineLength(width, height));
  const { foreground } = binarizeIntoScanlines(grey, width, height, { maskThreshold: 127, maskAmbiguousFraction: 1 }, out);
  const png = encodeGreyPngScanlines(out, width, height);
  const meta = await sharp(png).metadata();
  assert.deepEqual([meta.format, meta.width, meta.height, meta.channels, meta.depth], ["png", width, height, 1, "uchar"]);
  const { data, info } = await sharp(png).greyscale().raw().toBuffer({ resolveWithObject: true });
  assert.equal(info.channels, 1);
  assert.deepEqual(new Uint8Array(data), reference(grey, { maskThreshold: 127, maskAmbiguousFraction: 1 }).bits);
  assert.equal(
    data.reduce((a, v) => a + v, 0),
    foreground,
  );
});

test("RowBatchBuilder, fed row by row, writes the same Arrow IPC bytes as vectorFromArray over the whole column", () => {
  const rows = Array.from({ length: 9 }, (_, i) => ({
    id: `s${i}`,
    dataset: "qata-cov19",
    split: i % 3 === 0 ? "test" : "train",
    image: Uint8Array.from({ length: 5 + i }, (_, k) => (k * 7 + i) & 255),
    mask: Uint8Array.from([i, 1, 0]),
    width: 10 + i,
    height: 20 - i,
    image_format: "png",
    report: i % 4 === 0 ? null : `report ${i}`,
    report_normalized: i % 4 === 0 ? null : `report ${i}`,
    report_available: i % 2 === 0,
    image_sha256: "a".repeat(64),
    mask_sha256: "b".repeat(64),
    source_image: `images/s${i}.png`,
    source_mask: `masks/s${i}.png`,
    mask_empty: i === 3,
    mask_coverage: i / 9,
  }));
  const builder = new RowBatchBuilder<(typeof rows)[number]>(SAMPLE_COLUMNS);
  for (const row of rows) builder.append(row);
  const schema = arrowSchema(SAMPLE_COLUMNS);
  const children = SAMPLE_COLUMNS.map(
    (c, i) => vectorFromArray(rows.map((r) => (r as Record<string, unknown>)[c.name] ?? null) as never[], schema.fields[i]!.type).data[0]!,
  );
  const expected = new RecordBatch(schema, makeData({ type: new Struct(schema.fields), length: rows.length, nullCount: 0, children }));
  assert.deepEqual(tableToIPC(new Table([builder.finish()]), "stream"), tableToIPC(new Table([expected]), "stream"));
});

async function png(pixels: Uint8Array, width: number, height: number, channels: 1 | 2 | 3 | 4): Promise<Buffer> {
  // Raw input counts as sRGB: say b-w for 1 and 2 bands, or sharp writes an RGB PNG.
  const image = sharp(Buffer.from(pixels), { raw: { width, height, channels } });
  return (channels <= 2 ? image.toColourspace("b-w") : image).png().toBuffer();
}

function texture(width: number, height: number, channels: number, seed: number): Uint8Array {
  const random = rng(seed);
  return Uint8Array.from({ length: width * height * channels }, () => Math.floor(random() * 256));
}

function sameOutcome(a: DecodeOutcome, b: DecodeOutcome, what: string): void {
  if (a.ok && b.ok) {
    assert.deepEqual(a.value, b.value, what);
    return;
  }
  // A failure's detail quotes libvips, whose message for the same fault varies between runs.
  assert.deepEqual(a.ok ? "ok" : [a.reason, a.source], b.ok ? "ok" : [b.reason, b.source], what);
}

test("one joined decode of image and mask gives exactly what decoding them one by one gives", async () => {
  const params = { maskThreshold: 127, maskAmbiguousFraction: 0.01 };
  const [w, h] = [45, 31];
  const mask = await png(syntheticMask(w, h, 9, "mask255"), w, h, 1);
  // [what, image, mask, decoded in one pipeline?]
  const pairs: [string, Buffer, Buffer, boolean][] = [];
  for (const channels of [1, 2, 3, 4] as const)
    pairs.push([`${channels}-band PNG image, grey mask`, await png(texture(w, h, channels, channels), w, h, channels), mask, true]);
  const grey = await png(texture(w, h, 1, 7), w, h, 1);
  pairs.push(["label mask (0/1)", grey, await png(syntheticMask(w, h, 3, "labels"), w, h, 1), true]);
  pairs.push(["soft mask (not binary)", grey, await png(syntheticMask(w, h, 4, "soft"), w, h, 1), true]);
  pairs.push(["empty mask", grey, await png(new Uint8Array(w * h), w, h, 1), true]);
  pairs.push([
    "mask with alpha",
    grey,
    await png(
      new Uint8Array(w * h * 2).map((_, i) => (i % 2 ? 255 : (i >> 5) % 2 ? 255 : 0)),
      w,
      h,
      2,
    ),
    false,
  ]);
  pairs.push(["mask of another size", grey, await png(syntheticMask(w + 1, h, 9, "mask255"), w + 1, h, 1), false]);
  pairs.push(["truncated mask", grey, mask.subarray(0, mask.length - 30), false]);
  pairs.push(["truncated image", grey.subarray(0, grey.length - 40), mask, false]);
  pairs.push([
    "JPEG image",
    await sharp(Buffer.from(texture(w, h, 3, 2)), { raw: { width: w, height: h, channels: 3 } })
      .jpeg()
      .toBuffer(),
    mask,
    false,
  ]);
  for (const [what, image, maskBytes, oneDecode] of pairs) {
    assert.equal((await decodeJoined(image, maskBytes)) !== undefined, oneDecode, `${what}: ${oneDecode ? "one joined decode" : "general path"}`);
    sameOutcome(await decodePair(image, maskBytes, params), await decodePairSeparately(image, maskBytes, params), what);
  }
  const joined = await decodePair(pairs[0]![1], mask, params);
  assert.ok(joined.ok && joined.value.maskCoverage > 0, "the grey pair decodes and has foreground");
});

test("joined decode matches the general path on real QaTa-COV19 pairs", {
  skip: skipUnless(realQataPairs(), "real QaTa subset not found under ../shared/data or $PROLEARN_REAL_DATA"),
}, async () => {
  const { images, masks, names } = realQataPairs()!;
  const params = { maskThreshold: 127, maskAmbiguousFraction: 0.01 };
  for (const name of names) {
    const image = readFileSync(path.join(images, name));
    const mask = readFileSync(path.join(masks, `mask_${name}`));
    assert.ok(await decodeJoined(image, mask), `${name}: real QaTa pairs take the one-pipeline path`);
    sameOutcome(await decodePair(image, mask, params), await decodePairSeparately(image, mask, params), name);
  }
});

function realQataPairs(): { images: string; masks: string; names: string[] } | undefined {
  const images = realDataPath("qata-cov19", "QaTa", "images", "train", "images");
  const masks = realDataPath("qata-cov19", "QaTa", "images", "train", "masks");
  if (!images || !masks) return undefined;
  return { images, masks, names: readdirSync(images).sort().slice(0, 40) };
}
