/**
 * Segmentation metrics (METHOD.md §5). Predictions are probabilities thresholded at 0.5 (a pixel
 * is foreground when p >= 0.5); ground truth is foreground when > 0.5.
 *
 * Empty-mask rule: when prediction and ground truth are both empty, Dice = IoU = 1 (a correct
 * "nothing here"); when exactly one is empty, both are 0. The pooled values sum intersections
 * and sizes over every test pixel first, so empty images only contribute their false positives.
 */
export interface OverlapCounts {
  intersection: number;
  predicted: number;
  truth: number;
}

export function overlapCounts(probabilities: ArrayLike<number>, truth: ArrayLike<number>, threshold = 0.5): OverlapCounts {
  if (probabilities.length !== truth.length) throw new RangeError(`prediction has ${probabilities.length} pixels, truth ${truth.length}`);
  let intersection = 0;
  let predicted = 0;
  let positives = 0;
  for (let i = 0; i < probabilities.length; i++) {
    const p = probabilities[i]! >= threshold;
    const g = truth[i]! > 0.5;
    if (p) predicted++;
    if (g) positives++;
    if (p && g) intersection++;
  }
  return { intersection, predicted, truth: positives };
}

export function diceFromCounts(c: OverlapCounts): number {
  const denominator = c.predicted + c.truth;
  return denominator === 0 ? 1 : (2 * c.intersection) / denominator;
}

export function iouFromCounts(c: OverlapCounts): number {
  const union = c.predicted + c.truth - c.intersection;
  return union === 0 ? 1 : c.intersection / union;
}

export interface SegmentationScores {
  /** Mean over images of per-image Dice (the paper's number). */
  dice: number;
  /** Mean over images of per-image IoU (the paper's mIoU). */
  iou: number;
  /** Dice over all test pixels pooled (GuideSeg / SGSeg). */
  dicePooled: number;
  iouPooled: number;
  images: number;
}

/** Accumulates per-image and pooled scores image by image, so a test set never sits in memory at once. */
export class SegmentationMeter {
  private diceSum = 0;
  private iouSum = 0;
  private total: OverlapCounts = { intersection: 0, predicted: 0, truth: 0 };
  private count = 0;

  add(probabilities: ArrayLike<number>, truth: ArrayLike<number>): { dice: number; iou: number; counts: OverlapCounts } {
    const counts = overlapCounts(probabilities, truth);
    const dice = diceFromCounts(counts);
    const iou = iouFromCounts(counts);
    this.diceSum += dice;
    this.iouSum += iou;
    this.total.intersection += counts.intersection;
    this.total.predicted += counts.predicted;
    this.total.truth += counts.truth;
    this.count++;
    return { dice, iou, counts };
  }

  result(): SegmentationScores {
    if (this.count === 0) return { dice: Number.NaN, iou: Number.NaN, dicePooled: Number.NaN, iouPooled: Number.NaN, images: 0 };
    return {
      dice: this.diceSum / this.count,
      iou: this.iouSum / this.count,
      dicePooled: diceFromCounts(this.total),
      iouPooled: iouFromCounts(this.total),
      images: this.count,
    };
  }
}
