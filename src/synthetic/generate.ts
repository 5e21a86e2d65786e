import type { DatasetKind } from "../pipeline/spec.js";
import { clampByte, insideEllipse, lesionShape, makeRng, valueNoise, type Ellipse, type Rng } from "./draw.js";

/** One synthetic sample: pixels, a 0/255 mask, and a report written from the mask. */
export interface SyntheticSample {
  width: number;
  height: number;
  channels: 1 | 3;
  pixels: Uint8Array;
  /** 0/255, one channel. */
  mask: Uint8Array;
  report: string;
  /** Chest datasets: lung zones [upper L, middle L, lower L, upper R, middle R, lower R] (SGSeg order). */
  zones?: number[];
  /** Kvasir: MedVLSM-style prompts p0..p9 and the bounding box [xmin, ymin, xmax, ymax]. */
  prompts?: Record<string, string | string[]>;
  bbox?: [number, number, number, number];
}

const NUMBER_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"];
const ZONE_NAMES = ["upper", "middle", "lower"];

/**
 * Which lung zones the mask covers, in image coordinates with the radiological convention (the
 * patient's right lung on the image's left). A zone counts when at least 1% of it is lesion.
 */
function coveredZones(mask: Uint8Array, width: number, lungs: { right: Ellipse; left: Ellipse }): number[] {
  const zones = [0, 0, 0, 0, 0, 0];
  const totals = [0, 0, 0, 0, 0, 0];
  for (const [offset, lung] of [
    [0, lungs.left],
    [3, lungs.right],
  ] as const) {
    const top = lung.cy - lung.ry;
    for (let y = Math.floor(top); y < lung.cy + lung.ry; y++) {
      const zone = Math.min(2, Math.max(0, Math.floor(((y - top) / (2 * lung.ry)) * 3)));
      for (let x = Math.floor(lung.cx - lung.rx); x < lung.cx + lung.rx; x++) {
        if (x < 0 || y < 0 || x >= width || !insideEllipse(lung, x, y)) continue;
        totals[offset + zone]++;
        if (mask[y * width + x]) zones[offset + zone]++;
      }
    }
  }
  return zones.map((count, i) => (count > 0 && count >= 0.01 * totals[i]! ? 1 : 0));
}

function zonePhrase(flags: number[]): string {
  const names = ZONE_NAMES.filter((_, i) => flags[i]);
  return names.length === 3 ? "all" : names.join(" ");
}

/** LViT-style chest report from the zones: "Bilateral pulmonary infection, two infected areas, upper left lung and middle lower right lung." */
export function chestReport(zones: number[]): string {
  const left = zones.slice(0, 3);
  const right = zones.slice(3);
  const parts: string[] = [];
  if (left.some(Boolean)) parts.push(`${zonePhrase(left)} left lung`);
  if (right.some(Boolean)) parts.push(`${zonePhrase(right)} right lung`);
  if (parts.length === 0) return "No pulmonary infection, zero infected areas.";
  const kind = parts.length === 2 ? "Bilateral" : "Unilateral";
  const areas = parts.length;
  return `${kind} pulmonary infection, ${NUMBER_WORDS[areas]} infected area${areas === 1 ? "" : "s"}, ${parts.join(" and ")}.`;
}

/**
 * A decoy: a lesion drawn like the real ones in one lung zone the mask does not touch, absent
 * from the mask and from the report. Only the report's zone words then say which lesion is the
 * one to segment. Drawn with its own generator, so the rest of the sample is the same as without.
 */
function decoyLesion(rng: Rng, size: number, lungs: { right: Ellipse; left: Ellipse }, mask: Uint8Array, covered: number[]): Uint8Array {
  const free = [0, 1, 2, 3, 4, 5].filter((z) => !covered[z]);
  // Two pixels of clearance from the real lesion, so the two never merge into one blob.
  const clear = new Uint8Array(size * size);
  for (let y = 0; y < size; y++)
    for (let x = 0; x < size; x++) {
      if (!mask[y * size + x]) continue;
      for (let dy = -2; dy <= 2; dy++)
        for (let dx = -2; dx <= 2; dx++) {
          const xx = x + dx;
          const yy = y + dy;
          if (xx >= 0 && yy >= 0 && xx < size && yy < size) clear[yy * size + xx] = 1;
        }
    }
  // A few tries: a decoy that reaches a zone the report names would be described by it too.
  for (let attempt = 0; attempt < 8 && free.length > 0; attempt++) {
    const zone = free[Math.floor(rng() * free.length)]!;
    // Zones are [upper L, middle L, lower L, upper R, middle R, lower R]; the patient's left lung is on the image's right.
    const l = zone < 3 ? lungs.left : lungs.right;
    const row = zone % 3;
    const cy = l.cy - l.ry + (row + 0.5) * ((2 * l.ry) / 3) + (rng() - 0.5) * 0.1 * l.ry;
    const cx = l.cx + (rng() - 0.5) * l.rx;
    const shape = lesionShape(rng, cx, cy, l.rx * (0.45 + rng() * 0.5));
    const decoy = new Uint8Array(size * size);
    for (let y = 0; y < size; y++) for (let x = 0; x < size; x++) if (!clear[y * size + x] && insideEllipse(l, x, y) && shape(x, y)) decoy[y * size + x] = 255;
    if (!coveredZones(decoy, size, lungs).some((flag, i) => flag && covered[i])) return decoy;
  }
  return new Uint8Array(size * size);
}

function chest(rng: Rng, size: number, ct: boolean, allowEmpty: boolean, decoyRng?: Rng): SyntheticSample {
  const s = size;
  const lungs = ct
    ? {
        right: { cx: 0.33 * s, cy: 0.5 * s, rx: 0.14 * s, ry: 0.22 * s, angle: 0.15 },
        left: { cx: 0.67 * s, cy: 0.5 * s, rx: 0.14 * s, ry: 0.22 * s, angle: -0.15 },
      }
    : {
        right: { cx: 0.32 * s, cy: 0.48 * s, rx: 0.15 * s, ry: 0.3 * s, angle: 0.05 },
        left: { cx: 0.68 * s, cy: 0.48 * s, rx: 0.15 * s, ry: 0.3 * s, angle: -0.05 },
      };
  const jitter = (e: Ellipse): Ellipse => ({
    ...e,
    cx: e.cx + (rng() - 0.5) * 0.04 * s,
    cy: e.cy + (rng() - 0.5) * 0.04 * s,
    rx: e.rx * (0.92 + rng() * 0.16),
    ry: e.ry * (0.92 + rng() * 0.16),
  });
  const lung = { right: jitter(lungs.right), left: jitter(lungs.left) };
  const mask = new Uint8Array(s * s);
  const empty = allowEmpty && rng() < 0.2;
  if (!empty) {
    const choice = rng();
    const chosen = choice < 0.35 ? [lung.right] : choice < 0.5 ? [lung.left] : [lung.right, lung.left];
    for (const l of chosen) {
      const zone = Math.floor(rng() * 3);
      const cy = l.cy - l.ry + (zone + 0.5) * ((2 * l.ry) / 3) + (rng() - 0.5) * 0.1 * l.ry;
      const cx = l.cx + (rng() - 0.5) * l.rx;
      const shape = lesionShape(rng, cx, cy, l.rx * (0.45 + rng() * 0.5));
      for (let y = 0; y < s; y++) for (let x = 0; x < s; x++) if (insideEllipse(l, x, y) && shape(x, y)) mask[y * s + x] = 255;
    }
  }
  const zones = coveredZones(mask, s, lung);
  const decoy = decoyRng ? decoyLesion(decoyRng, s, lung, mask, zones) : undefined;
  const coarse = valueNoise(rng, s, Math.max(4, s / 8));
  const fine = valueNoise(rng, s, Math.max(2, s / 40));
  const pixels = new Uint8Array(s * s);
  const body: Ellipse = ct
    ? { cx: 0.5 * s, cy: 0.5 * s, rx: 0.46 * s, ry: 0.4 * s, angle: 0 }
    : { cx: 0.5 * s, cy: 0.55 * s, rx: 0.47 * s, ry: 0.55 * s, angle: 0 };
  for (let y = 0; y < s; y++) {
    for (let x = 0; x < s; x++) {
      const i = y * s + x;
      let v = 20;
      if (insideEllipse(body, x, y)) v = ct ? 120 : 150;
      const inLung = insideEllipse(lung.right, x, y) || insideEllipse(lung.left, x, y);
      if (inLung) v = ct ? 30 : 60;
      if (!ct && inLung) v += 18 * Math.max(0, Math.sin((y / s) * 28)); // ribs
      if (mask[i] || decoy?.[i]) v += (ct ? 70 : 65) + 30 * fine[i]!; // opacity / ground glass, textured
      v += 25 * (coarse[i]! - 0.5) + 14 * (fine[i]! - 0.5);
      pixels[i] = clampByte(v);
    }
  }
  return { width: s, height: s, channels: 1, pixels, mask, report: chestReport(zones), zones };
}

function positionWord(cx: number, cy: number): string {
  const h = cx < 0.4 ? "left" : cx > 0.6 ? "right" : "";
  const v = cy < 0.4 ? "top" : cy > 0.6 ? "bottom" : "";
  return v && h ? `${v} ${h}` : v || h || "center";
}

const POLYP_FACTS = [
  "which is a projecting growth of tissue",
  "which is often a bumpy flesh in rectum",
  "which is a small lump in the lining of colon",
  "which is a tissue growth that often resemble mushroom like stalks",
  "which is an abnormal growth of tissues projecting from a mucous membrane",
];

function polyp(rng: Rng, size: number): SyntheticSample {
  const width = size;
  const height = size - 2 * Math.floor(rng() * size * 0.1);
  const short = Math.min(width, height);
  const cx = width * (0.25 + rng() * 0.5);
  const cy = height * (0.25 + rng() * 0.5);
  const radius = short * (0.08 + rng() * 0.2);
  const shape = lesionShape(rng, cx, cy, radius);
  const mask = new Uint8Array(width * height);
  let count = 0;
  let sx = 0;
  let sy = 0;
  let xmin = width;
  let ymin = height;
  let xmax = 0;
  let ymax = 0;
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      if (!shape(x, y)) continue;
      mask[y * width + x] = 255;
      count++;
      sx += x;
      sy += y;
      if (x < xmin) xmin = x;
      if (x > xmax) xmax = x;
      if (y < ymin) ymin = y;
      if (y > ymax) ymax = y;
    }
  }
  const noiseSize = Math.max(width, height);
  const coarse = valueNoise(rng, noiseSize, Math.max(4, noiseSize / 6));
  const fine = valueNoise(rng, noiseSize, Math.max(2, noiseSize / 30));
  const redder = rng() < 0.5;
  const pixels = new Uint8Array(width * height * 3);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const i = y * width + x;
      const n = y * noiseSize + x;
      const dx = (x - width / 2) / width;
      const dy = (y - height / 2) / height;
      const vignette = 1 - 1.6 * (dx * dx + dy * dy);
      let r = 170 + 50 * (coarse[n]! - 0.5);
      let g = 80 + 30 * (coarse[n]! - 0.5);
      let b = 70 + 20 * (fine[n]! - 0.5);
      if (mask[i]) {
        r += redder ? 55 : 40;
        g += redder ? 25 : 55;
        b += 35;
        const hx = (x - cx) / radius + 0.3;
        const hy = (y - cy) / radius + 0.3;
        if (hx * hx + hy * hy < 0.05) {
          r += 40;
          g += 60;
          b += 60;
        }
        r += 25 * (fine[n]! - 0.5);
      }
      pixels[i * 3] = clampByte(r * vignette);
      pixels[i * 3 + 1] = clampByte(g * vignette);
      pixels[i * 3 + 2] = clampByte(b * vignette);
    }
  }
  const coverage = count / (width * height);
  const sizeWord = coverage < 0.05 ? "small" : coverage < 0.15 ? "medium" : "large";
  const aspect = (xmax - xmin + 1) / Math.max(1, ymax - ymin + 1);
  const shapeWord = aspect > 0.75 && aspect < 1.33 ? "round" : "oval";
  const colour = redder ? "red" : "pink";
  const where = positionWord(sx / Math.max(1, count) / width, sy / Math.max(1, count) / height);
  const base = `${sizeWord} ${colour} ${shapeWord} polyp`;
  const prompts: Record<string, string | string[]> = {
    p0: "",
    p1: "polyp",
    p2: `${shapeWord} polyp`,
    p3: `${colour} ${shapeWord} polyp`,
    p4: base,
    p5: `one ${base}`,
    p6: `one ${base}, located in ${where} of the image`,
    p7: POLYP_FACTS.map((f) => `polyp ${f}`),
    p8: POLYP_FACTS.map((f) => `one ${base} ${f}`),
    p9: POLYP_FACTS.map((f) => `one ${base} ${f} located in ${where} of the image`),
  };
  return { width, height, channels: 3, pixels, mask, report: prompts.p6 as string, prompts, bbox: [xmin, ymin, xmax, ymax] };
}

export interface SynthesisOptions {
  /** Chest kinds: add a decoy lesion in one lung zone that is neither in the mask nor in the report. */
  decoys?: boolean;
}

/** Draws sample `index` of a synthetic dataset; the same (kind, seed, index, size, options) always gives the same sample. */
export function synthesizeSample(kind: DatasetKind, seed: number, index: number, size: number, options: SynthesisOptions = {}): SyntheticSample {
  const rng = makeRng((seed * 100003 + index * 7919 + 17) >>> 0);
  if (kind === "kvasir-seg") return polyp(rng, size);
  const decoyRng = options.decoys ? makeRng((seed * 100003 + index * 7919 + 0xdec0) >>> 0) : undefined;
  return chest(rng, size, kind === "mosmeddata-plus", kind === "mosmeddata-plus", decoyRng);
}
