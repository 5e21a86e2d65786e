/** Seeded drawing of synthetic medical images whose lesions are visible and match their masks. */
import { mulberry32, type Random } from "../util/random.js";

export type Rng = Random;
export const makeRng = mulberry32;

export interface Ellipse {
  cx: number;
  cy: number;
  rx: number;
  ry: number;
  angle: number;
}

export function insideEllipse(e: Ellipse, x: number, y: number): boolean {
  const dx = x - e.cx;
  const dy = y - e.cy;
  const c = Math.cos(e.angle);
  const s = Math.sin(e.angle);
  const u = (dx * c + dy * s) / e.rx;
  const v = (-dx * s + dy * c) / e.ry;
  return u * u + v * v <= 1;
}

/** A lesion: a union of 1-3 overlapping ellipses with a wobbly outline, so shapes vary. */
export function lesionShape(rng: Rng, cx: number, cy: number, radius: number): (x: number, y: number) => boolean {
  const parts: Ellipse[] = [];
  const count = 1 + Math.floor(rng() * 3);
  for (let i = 0; i < count; i++) {
    parts.push({
      cx: cx + (rng() - 0.5) * radius,
      cy: cy + (rng() - 0.5) * radius,
      rx: radius * (0.5 + rng() * 0.6),
      ry: radius * (0.4 + rng() * 0.6),
      angle: rng() * Math.PI,
    });
  }
  const wobble = 0.12 + rng() * 0.15;
  const phase = rng() * Math.PI * 2;
  const lobes = 3 + Math.floor(rng() * 4);
  return (x, y) => {
    for (const p of parts) {
      const theta = Math.atan2(y - p.cy, x - p.cx);
      const scale = 1 + wobble * Math.sin(lobes * theta + phase);
      if (insideEllipse({ ...p, rx: p.rx * scale, ry: p.ry * scale }, x, y)) return true;
    }
    return false;
  };
}

/** Value noise in [0,1): smooth texture so images are not flat. */
export function valueNoise(rng: Rng, size: number, cell: number): Float32Array {
  const grid = Math.ceil(size / cell) + 2;
  const lattice = new Float32Array(grid * grid);
  for (let i = 0; i < lattice.length; i++) lattice[i] = rng();
  const out = new Float32Array(size * size);
  for (let y = 0; y < size; y++) {
    const gy = y / cell;
    const y0 = Math.floor(gy);
    const fy = gy - y0;
    for (let x = 0; x < size; x++) {
      const gx = x / cell;
      const x0 = Math.floor(gx);
      const fx = gx - x0;
      const a = lattice[y0 * grid + x0]!;
      const b = lattice[y0 * grid + x0 + 1]!;
      const c = lattice[(y0 + 1) * grid + x0]!;
      const d = lattice[(y0 + 1) * grid + x0 + 1]!;
      const top = a + (b - a) * fx;
      const bottom = c + (d - c) * fx;
      out[y * size + x] = top + (bottom - top) * fy;
    }
  }
  return out;
}

export function clampByte(v: number): number {
  return v < 0 ? 0 : v > 255 ? 255 : Math.round(v);
}
