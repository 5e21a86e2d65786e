import { createHash } from "node:crypto";
import type { Split } from "./reports.js";

/** Deterministic rank of an id for a purpose: sha256("seed:purpose:id"), ties broken by id. */
export function seededRank<T>(items: readonly T[], idOf: (item: T) => string, seed: number, purpose: string): T[] {
  const keyed = items.map((item) => ({
    item,
    id: idOf(item),
    h: createHash("sha256")
      .update(`${seed}:${purpose}:${idOf(item)}`)
      .digest("hex"),
  }));
  keyed.sort((a, b) => (a.h < b.h ? -1 : a.h > b.h ? 1 : a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  return keyed.map((k) => k.item);
}

/**
 * Seeded split by fractions: ids ranked by a seeded hash, the first round(train*n) go to train,
 * the next round(val*n) to val, the rest to test. Independent of file order.
 */
export function seededSplit(ids: readonly string[], seed: number, fractions: { train: number; val: number }): Map<string, Split> {
  const ranked = seededRank(ids, (id) => id, seed, "split");
  const nTrain = Math.round(fractions.train * ranked.length);
  const nVal = Math.round(fractions.val * ranked.length);
  const out = new Map<string, Split>();
  ranked.forEach((id, i) => out.set(id, i < nTrain ? "train" : i < nTrain + nVal ? "val" : "test"));
  return out;
}

/** Moves a seeded fraction of the given training ids to val (Kaggle layout: val is 20% of train). */
export function seededValidation(trainIds: readonly string[], seed: number, fraction: number): Set<string> {
  const ranked = seededRank(trainIds, (id) => id, seed, "val");
  return new Set(ranked.slice(0, Math.round(fraction * ranked.length)));
}

/**
 * The training ids that keep their report under textAvailability r: the candidates (training
 * samples that have a report) ranked by a seeded hash, the first round(r*n) kept. The ranking
 * does not depend on r, so for one seed the subsets are nested: r=0.01 within 0.05 within 0.1 ...
 */
export function availableSubset(candidateIds: readonly string[], seed: number, fraction: number): Set<string> {
  const ranked = seededRank(candidateIds, (id) => id, seed, "text-availability");
  return new Set(ranked.slice(0, Math.round(fraction * ranked.length)));
}
