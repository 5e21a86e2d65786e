import { mkdirSync, writeFileSync } from "node:fs";
import path from "node:path";
import sharp from "sharp";

const FINDINGS = [
  "bilateral ground-glass opacity",
  "left lower lobe consolidation",
  "right upper zone infiltrate",
  "patchy opacity in both lungs",
  "no focal consolidation",
];

/**
 * Writes a small dataset in the ProLearn layout (images/, masks/, reports/, split.json) that the
 * ingest stage reads as qata-cov19: grey images with one bright blob, the blob as the mask, a
 * one-line report per image. Deterministic in `seed`; every `count`-th id has no report.
 */
export async function writeSyntheticDataset(root: string, options: { count: number; size?: number; seed?: number }): Promise<{ ids: string[] }> {
  const size = options.size ?? 64;
  let state = (options.seed ?? 7) >>> 0;
  const random = () => (state = (Math.imul(state, 1664525) + 1013904223) >>> 0) / 2 ** 32;
  for (const dir of ["images", "masks", "reports"]) mkdirSync(path.join(root, dir), { recursive: true });
  const ids: string[] = [];
  for (let i = 0; i < options.count; i++) {
    const id = `case_${String(i).padStart(5, "0")}`;
    ids.push(id);
    const cx = size * (0.25 + 0.5 * random());
    const cy = size * (0.25 + 0.5 * random());
    const r = size * (0.08 + 0.12 * random());
    const image = Buffer.alloc(size * size);
    const mask = Buffer.alloc(size * size);
    for (let y = 0; y < size; y++) {
      for (let x = 0; x < size; x++) {
        const inside = (x - cx) ** 2 + (y - cy) ** 2 <= r * r;
        image[y * size + x] = Math.min(255, Math.round((inside ? 180 : 60) + 40 * random()));
        mask[y * size + x] = inside ? 255 : 0;
      }
    }
    await sharp(image, { raw: { width: size, height: size, channels: 1 } })
      .png()
      .toFile(path.join(root, "images", `${id}.png`));
    await sharp(mask, { raw: { width: size, height: size, channels: 1 } })
      .png()
      .toFile(path.join(root, "masks", `${id}.png`));
    writeFileSync(path.join(root, "reports", `${id}.txt`), `${FINDINGS[i % FINDINGS.length]}, case ${i % 13}\n`);
  }
  const train = ids.filter((_, i) => i % 10 < 8);
  const val = ids.filter((_, i) => i % 10 === 8);
  const test = ids.filter((_, i) => i % 10 === 9);
  writeFileSync(path.join(root, "split.json"), JSON.stringify({ train, val, test }));
  return { ids };
}
