import assert from "node:assert/strict";
import { describe, test } from "node:test";
import sharp from "sharp";
import { BuiltinEncoder } from "../../src/embed/builtin.js";
import { gridFeatures, gridImageConfig } from "../../src/embed/builtin-image.js";
import { fitTfidf, wordNgrams } from "../../src/embed/builtin-text.js";
import { FIXTURE_REPORTS } from "./tiny-biomedclip.js";

const cos = (a: Float32Array, i: number, j: number, d = 512) => {
  let s = 0;
  for (let k = 0; k < d; k++) s += a[i * d + k]! * a[j * d + k]!;
  return s;
};

/** A 224x224 grey "X-ray" with an opacity (bright disc) at (cx, cy), on a background of the given brightness. */
async function opacity(cx: number, cy: number, background = 70, r = 25): Promise<Uint8Array> {
  const data = Buffer.alloc(224 * 224);
  for (let y = 0; y < 224; y++)
    for (let x = 0; x < 224; x++) data[y * 224 + x] = (x - cx) ** 2 + (y - cy) ** 2 < r * r ? background + 110 : background + ((x * 7 + y * 3) % 9);
  return new Uint8Array(
    await sharp(data, { raw: { width: 224, height: 224, channels: 1 } })
      .png()
      .toBuffer(),
  );
}

describe("builtin text encoder (TF-IDF word uni+bigrams, hashed projection)", () => {
  test("n-grams are lower-cased words and adjacent pairs", () => {
    assert.deepEqual(wordNgrams("Lower  LEFT lung."), ["lower", "left", "lung", "lower left", "left lung"]);
  });

  test("the fit is a pure function of the texts: same texts, same digest; different texts, different text digest, same image digest", () => {
    const a = new BuiltinEncoder({ fitTexts: FIXTURE_REPORTS });
    const b = new BuiltinEncoder({ fitTexts: [...FIXTURE_REPORTS] });
    const c = new BuiltinEncoder({ fitTexts: FIXTURE_REPORTS.slice(1) });
    assert.equal(a.digest, b.digest);
    assert.notEqual(a.textDigest, c.textDigest);
    assert.equal(a.imageDigest, c.imageDigest);
    assert.equal(fitTfidf(FIXTURE_REPORTS).df.get("infected areas"), 3);
  });

  test("identical texts embed identically; shared wording is closer than different zones; typos still land near", async () => {
    const enc = new BuiltinEncoder({ fitTexts: FIXTURE_REPORTS });
    const e = await enc.embedTexts([
      "Unilateral pulmonary infection, one infected area, lower left lung.",
      "Unilateral pulmonary infection, one infected area, lower left lung.",
      "Unilateral pulmonary infection, one infected area, lower left lung",
      "one small pink circle polyp, located in right of the image",
      "Unilateral pulmonary infection, one infected area, uppper right lung.",
      "",
    ]);
    assert.deepEqual(e.subarray(0, 512), e.subarray(512, 1024));
    assert.ok(cos(e, 0, 2) > 0.999, "punctuation does not matter");
    assert.ok(cos(e, 0, 4) > cos(e, 0, 3) + 0.3, `same template ${cos(e, 0, 4)} vs polyp ${cos(e, 0, 3)}`);
    assert.ok(cos(e, 0, 4) < 0.95, "a different zone is not the same report");
    assert.ok(Math.abs(cos(e, 0, 0) - 1) < 1e-5);
    assert.equal(Math.hypot(...e.subarray(5 * 512, 6 * 512)), 0, "a text with no words is a zero row");
  });
});

describe("builtin image encoder (zone statistics)", () => {
  test("deterministic, unit length, any width", async () => {
    const img = await opacity(60, 60);
    const a = await new BuiltinEncoder({ fitTexts: [], dim: 64 }).embedImages([img]);
    const b = await new BuiltinEncoder({ fitTexts: [], dim: 64 }).embedImages([img]);
    assert.deepEqual(a, b);
    assert.ok(Math.abs(Math.hypot(...a) - 1) < 1e-5);
  });

  test("an opacity in the upper-left lung zone raises that zone's relative intensity in the 3x2 grid", async () => {
    const config = gridImageConfig(512);
    const features = await gridFeatures(await opacity(50, 30), config);
    const offset = (1 + 4) * 4; // after the 1x1 and 2x2 grids, 4 statistics per cell
    const zoneMeans = [0, 1, 2, 3, 4, 5].map((cell) => features[offset + cell * 4]!);
    assert.equal(zoneMeans.indexOf(Math.max(...zoneMeans)), 0, `zone means ${zoneMeans.map((v) => v.toFixed(2))}`);
  });

  test("same lesion position under different exposure is closer than a lesion elsewhere", async () => {
    const enc = new BuiltinEncoder({ fitTexts: [] });
    const e = await enc.embedImages([await opacity(60, 60, 60), await opacity(62, 58, 100), await opacity(170, 170, 60), await opacity(60, 170, 60)]);
    assert.ok(cos(e, 0, 1) > 0.9, `exposure change ${cos(e, 0, 1)}`);
    assert.ok(cos(e, 0, 1) > cos(e, 0, 2) + 0.3, `same place ${cos(e, 0, 1)} vs opposite corner ${cos(e, 0, 2)}`);
    assert.ok(cos(e, 0, 1) > cos(e, 0, 3), "same place beats another zone");
  });

  test("colour images: redness counts (a red polyp on pink mucosa differs from a pale one)", async () => {
    const make = async (red: number) => {
      const data = Buffer.alloc(224 * 224 * 3);
      for (let y = 0; y < 224; y++)
        for (let x = 0; x < 224; x++) {
          const inside = (x - 112) ** 2 + (y - 112) ** 2 < 900;
          data.set(inside ? [red, 90, 90] : [200, 120, 120], (y * 224 + x) * 3);
        }
      return new Uint8Array(
        await sharp(data, { raw: { width: 224, height: 224, channels: 3 } })
          .jpeg()
          .toBuffer(),
      );
    };
    const enc = new BuiltinEncoder({ fitTexts: [] });
    const e = await enc.embedImages([await make(250), await make(245), await make(90)]);
    assert.ok(cos(e, 0, 1) > cos(e, 0, 2));
  });
});
