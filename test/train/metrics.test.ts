import assert from "node:assert/strict";
import { test } from "node:test";
import { SegmentationMeter, diceFromCounts, iouFromCounts, overlapCounts } from "../../src/segmenter/metrics.js";

test("Dice and IoU of a partial overlap", () => {
  // prediction: 4 pixels, truth: 4 pixels, overlap 2 -> Dice 0.5, IoU 2/6
  const p = [0.9, 0.9, 0.9, 0.9, 0, 0, 0, 0];
  const g = [0, 0, 1, 1, 1, 1, 0, 0];
  const c = overlapCounts(p, g);
  assert.deepEqual(c, { intersection: 2, predicted: 4, truth: 4 });
  assert.equal(diceFromCounts(c), 0.5);
  assert.equal(iouFromCounts(c), 2 / 6);
});

test("threshold 0.5 counts as foreground", () => {
  assert.equal(overlapCounts([0.5, 0.4999], [1, 1]).predicted, 1);
});

test("empty masks: both empty -> 1, one empty -> 0", () => {
  assert.equal(diceFromCounts(overlapCounts([0, 0.1], [0, 0])), 1);
  assert.equal(iouFromCounts(overlapCounts([0, 0.1], [0, 0])), 1);
  assert.equal(diceFromCounts(overlapCounts([0.9, 0], [0, 0])), 0);
  assert.equal(iouFromCounts(overlapCounts([0, 0], [1, 0])), 0);
});

test("per-image mean differs from pooled and both are reported", () => {
  const meter = new SegmentationMeter();
  meter.add([0, 0, 0, 0], [0, 0, 0, 0]); // empty/empty: 1
  meter.add([1, 1, 0, 0], [1, 1, 1, 1]); // Dice 2*2/(2+4) = 0.667, IoU 0.5
  const r = meter.result();
  assert.equal(r.images, 2);
  assert.ok(Math.abs(r.dice - (1 + 4 / 6) / 2) < 1e-12);
  assert.ok(Math.abs(r.iou - 0.75) < 1e-12);
  // pooled: intersection 2, predicted 2, truth 4 -> Dice 4/6, IoU 2/4
  assert.ok(Math.abs(r.dicePooled - 4 / 6) < 1e-12);
  assert.equal(r.iouPooled, 0.5);
});

test("an empty meter reports NaN, not a fake score", () => {
  assert.ok(Number.isNaN(new SegmentationMeter().result().dice));
});
