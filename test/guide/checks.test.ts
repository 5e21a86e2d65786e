import { test } from "node:test";
import assert from "node:assert/strict";
import { chanceDice, guideChanceWarning } from "../../src/guide/checks.js";

// Four 2x2 masks: two with one lesion pixel, one fully lesion, one empty.
const masks = [Uint8Array.of(1, 0, 0, 0), Uint8Array.of(0, 0, 0, 1), Uint8Array.of(1, 1, 1, 1), Uint8Array.of(0, 0, 0, 0)];

test("chance Dice is the better of 'lesion everywhere' and 'no lesion anywhere', per-image mean", () => {
  const chance = chanceDice(masks);
  // everywhere: 2*1/(4+1) twice, 2*4/(4+4) once, 0 on the empty mask.
  assert.ok(Math.abs(chance.everywhere - (0.4 + 0.4 + 1 + 0) / 4) < 1e-12);
  // nowhere: 1 on the empty mask only.
  assert.equal(chance.nowhere, 0.25);
  assert.equal(chance.best, chance.everywhere);
});

test("a guide model at or below chance raises a warning with its figures; above chance, none", () => {
  const chance = chanceDice(masks).best;
  const warning = guideChanceWarning(chance, masks);
  assert.equal(warning?.code, "guide-no-better-than-chance");
  assert.match(warning!.message, /no better than predicting lesion everywhere on 4 validation images/);
  assert.equal(warning!.figures!.bestValDice, chance);
  assert.equal(warning!.figures!.chanceDice, chance);
  assert.equal(guideChanceWarning(chance + 0.01, masks), undefined);
  assert.equal(guideChanceWarning(Number.NaN, masks), undefined, "no validation score, no verdict");
  assert.equal(guideChanceWarning(0, []), undefined, "no validation images, no verdict");
});
