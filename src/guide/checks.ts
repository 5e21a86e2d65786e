import type { StageWarning } from "../pipeline/stage.js";
import { diceFromCounts, overlapCounts } from "../segmenter/metrics.js";

/**
 * Per-image mean Dice of the two answers that need no model: "lesion everywhere" and "no lesion
 * anywhere" (which scores 1 on an empty mask, by the empty-mask rule of metrics.ts). A guide
 * model whose best validation Dice does not beat the better of them has learned nothing about
 * where lesions are, and its cross-attention scores are noise for filtering.
 */
export function chanceDice(masks: readonly ArrayLike<number>[]): { everywhere: number; nowhere: number; best: number } {
  if (!masks.length) return { everywhere: Number.NaN, nowhere: Number.NaN, best: Number.NaN };
  let everywhere = 0;
  let nowhere = 0;
  for (const mask of masks) {
    everywhere += diceFromCounts(overlapCounts(new Float32Array(mask.length).fill(1), mask));
    nowhere += diceFromCounts(overlapCounts(new Float32Array(mask.length), mask));
  }
  everywhere /= masks.length;
  nowhere /= masks.length;
  return { everywhere, nowhere, best: Math.max(everywhere, nowhere) };
}

/** The guide stage's quality gate, as a warning when the model does no better than chance. */
export function guideChanceWarning(bestValDice: number | null, valMasks: readonly ArrayLike<number>[]): StageWarning | undefined {
  if (bestValDice === null || !Number.isFinite(bestValDice) || !valMasks.length) return undefined;
  const chance = chanceDice(valMasks);
  if (bestValDice > chance.best) return undefined;
  return {
    code: "guide-no-better-than-chance",
    message: `the guide model's best validation Dice is no better than predicting ${chance.everywhere >= chance.nowhere ? "lesion everywhere" : "no lesion anywhere"} on ${valMasks.length} validation images`,
    figures: { bestValDice, chanceDice: chance.best, lesionEverywhereDice: chance.everywhere, noLesionDice: chance.nowhere, valImages: valMasks.length },
  };
}
