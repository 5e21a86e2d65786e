/**
 * Small inline-SVG charts for the run report. Each returns a standalone <svg> string with a
 * <title> (read by screen readers and shown as a tooltip) and fixed pixel geometry, so the
 * report needs no script and no network to draw them.
 */

export function escapeXml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]!);
}

/** Categorical colours (Tableau 10, then a second, lighter ring), readable on white. */
export const PALETTE = ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac", "#86bcb6", "#d4a6c8"];
export const NOISE_COLOR = "#9aa0a6";

export function categoryColor(index: number): string {
  return index < 0 ? NOISE_COLOR : PALETTE[index % PALETTE.length]!;
}

/** Tick values at 1/2/5 x 10^n steps covering [min, max]. */
export function niceTicks(min: number, max: number, count = 5): number[] {
  if (!Number.isFinite(min) || !Number.isFinite(max)) return [];
  if (min === max) {
    const pad = min === 0 ? 1 : Math.abs(min) * 0.1;
    min -= pad;
    max += pad;
  }
  const rough = (max - min) / Math.max(1, count);
  const magnitude = 10 ** Math.floor(Math.log10(rough));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * magnitude).find((s) => s >= rough) ?? 10 * magnitude;
  const ticks: number[] = [];
  // Ticks are multiples of the step, computed by index so float drift never prints "-5.55e-17" for 0.
  const first = Math.ceil(min / step - 1e-9);
  for (let i = first; i * step <= max + step * 1e-9; i++) ticks.push(i === 0 ? 0 : Number((i * step).toPrecision(12)));
  return ticks;
}

export function formatNumber(value: number, digits = 3): string {
  if (!Number.isFinite(value)) return String(value);
  if (Number.isInteger(value) && Math.abs(value) < 1e9) return value.toLocaleString("en-US");
  const abs = Math.abs(value);
  if (abs !== 0 && (abs < 10 ** -digits || abs >= 1e6)) return value.toExponential(2).replace(/\.?0+e/, "e");
  return Number(value.toFixed(digits)).toString();
}

function textWidth(text: string, fontSize = 12): number {
  return text.length * fontSize * 0.58;
}

export interface Bar {
  label: string;
  value: number;
  color?: string;
  /** Shown after the value, e.g. "(cached)". */
  note?: string;
}

/** Horizontal bars, one per row, with the value printed at the end of each bar. */
export function barChart(options: { bars: Bar[]; title: string; width?: number; format?: (v: number) => string; id?: string }): string {
  const { bars, title } = options;
  const width = options.width ?? 560;
  const format = options.format ?? ((v: number) => formatNumber(v));
  const rowHeight = 22;
  const labelWidth = Math.min(200, Math.max(40, ...bars.map((b) => textWidth(b.label) + 10)));
  const valueWidth = Math.max(48, ...bars.map((b) => textWidth(`${format(b.value)}${b.note ? ` ${b.note}` : ""}`) + 12));
  const plotWidth = Math.max(60, width - labelWidth - valueWidth);
  const height = bars.length * rowHeight + 8;
  const max = Math.max(0, ...bars.map((b) => b.value));
  const scale = (v: number) => (max > 0 ? (Math.max(0, v) / max) * plotWidth : 0);
  const rows = bars.map((b, i) => {
    const y = 4 + i * rowHeight;
    const w = scale(b.value);
    return (
      `<g class="bar"><text x="${labelWidth - 8}" y="${y + 15}" text-anchor="end" class="axis-label">${escapeXml(b.label)}</text>` +
      `<rect x="${labelWidth}" y="${y + 3}" width="${w.toFixed(1)}" height="${rowHeight - 6}" rx="2" fill="${b.color ?? PALETTE[0]}"><title>${escapeXml(`${b.label}: ${format(b.value)}`)}</title></rect>` +
      `<text x="${(labelWidth + w + 6).toFixed(1)}" y="${y + 15}" class="value-label">${escapeXml(format(b.value))}${b.note ? ` <tspan class="muted">${escapeXml(b.note)}</tspan>` : ""}</text></g>`
    );
  });
  return (
    `<svg xmlns="http://www.w3.org/2000/svg" class="chart bar-chart" role="img" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}"${options.id ? ` data-chart="${escapeXml(options.id)}"` : ""}><title>${escapeXml(title)}</title>` +
    `<line x1="${labelWidth}" y1="2" x2="${labelWidth}" y2="${height - 2}" class="axis"/>${rows.join("")}</svg>`
  );
}

export interface Series {
  name: string;
  color: string;
  points: { x: number; y: number }[];
}

interface Frame {
  width: number;
  height: number;
  left: number;
  right: number;
  top: number;
  bottom: number;
}

function axes(frame: Frame, x: { min: number; max: number; label: string; integer?: boolean }, y: { min: number; max: number; label: string }) {
  const { width, height, left, right, top, bottom } = frame;
  const plotW = width - left - right;
  const plotH = height - top - bottom;
  const sx = (v: number) => left + (x.max === x.min ? plotW / 2 : ((v - x.min) / (x.max - x.min)) * plotW);
  const sy = (v: number) => top + plotH - (y.max === y.min ? plotH / 2 : ((v - y.min) / (y.max - y.min)) * plotH);
  const parts: string[] = [];
  const xTicks = niceTicks(x.min, x.max, Math.max(2, Math.floor(plotW / 70))).filter(
    (t) => t >= x.min - 1e-9 && t <= x.max + 1e-9 && (!x.integer || Number.isInteger(t)),
  );
  const yTicks = niceTicks(y.min, y.max, Math.max(2, Math.floor(plotH / 45))).filter((t) => t >= y.min - 1e-9 && t <= y.max + 1e-9);
  for (const t of yTicks) {
    parts.push(`<line x1="${left}" x2="${width - right}" y1="${sy(t).toFixed(1)}" y2="${sy(t).toFixed(1)}" class="grid"/>`);
    parts.push(`<text x="${left - 6}" y="${(sy(t) + 4).toFixed(1)}" text-anchor="end" class="tick">${escapeXml(formatNumber(t))}</text>`);
  }
  for (const t of xTicks) {
    parts.push(`<line x1="${sx(t).toFixed(1)}" x2="${sx(t).toFixed(1)}" y1="${top + plotH}" y2="${top + plotH + 4}" class="axis"/>`);
    parts.push(`<text x="${sx(t).toFixed(1)}" y="${top + plotH + 16}" text-anchor="middle" class="tick">${escapeXml(formatNumber(t))}</text>`);
  }
  parts.push(`<line x1="${left}" y1="${top + plotH}" x2="${width - right}" y2="${top + plotH}" class="axis"/>`);
  parts.push(`<line x1="${left}" y1="${top}" x2="${left}" y2="${top + plotH}" class="axis"/>`);
  parts.push(`<text x="${left + plotW / 2}" y="${height - 4}" text-anchor="middle" class="axis-label">${escapeXml(x.label)}</text>`);
  parts.push(`<text transform="translate(12 ${top + plotH / 2}) rotate(-90)" text-anchor="middle" class="axis-label">${escapeXml(y.label)}</text>`);
  return { sx, sy, svg: parts.join("") };
}

function legend(items: { label: string; color: string; shape?: "dot" | "line" | "diamond" }[], x: number, y: number, maxWidth: number): string {
  let cx = x;
  let cy = y;
  const parts: string[] = [];
  for (const item of items) {
    const w = 18 + textWidth(item.label, 11) + 14;
    if (cx + w > x + maxWidth && cx > x) {
      cx = x;
      cy += 16;
    }
    const mark =
      item.shape === "line"
        ? `<line x1="${cx}" x2="${cx + 12}" y1="${cy - 4}" y2="${cy - 4}" stroke="${item.color}" stroke-width="2.5"/>`
        : item.shape === "diamond"
          ? `<path d="M${cx + 6} ${cy - 10} l5 5 l-5 5 l-5 -5 z" fill="${item.color}" stroke="#222" stroke-width="0.8"/>`
          : `<circle cx="${cx + 6}" cy="${cy - 4}" r="4.5" fill="${item.color}"/>`;
    parts.push(`<g class="legend-item">${mark}<text x="${cx + 17}" y="${cy}" class="legend">${escapeXml(item.label)}</text></g>`);
    cx += w;
  }
  return `<g class="legend">${parts.join("")}</g>`;
}

function legendRows(labels: string[], maxWidth: number): number {
  let rows = labels.length ? 1 : 0;
  let used = 0;
  for (const label of labels) {
    const w = 18 + textWidth(label, 11) + 14;
    if (used + w > maxWidth && used > 0) {
      rows++;
      used = 0;
    }
    used += w;
  }
  return rows;
}

/** Lines over a numeric x axis (epochs); `yDomain` fixes the axis, e.g. [0, 1] for Dice. */
export function lineChart(options: {
  series: Series[];
  title: string;
  xLabel: string;
  yLabel: string;
  width?: number;
  height?: number;
  yDomain?: [number, number];
  integerX?: boolean;
  marker?: { x: number; label: string };
  id?: string;
}): string {
  const width = options.width ?? 520;
  const legendH =
    legendRows(
      options.series.map((s) => s.name),
      width - 60,
    ) * 16;
  const height = (options.height ?? 240) + legendH;
  const all = options.series.flatMap((s) => s.points).filter((p) => Number.isFinite(p.x) && Number.isFinite(p.y));
  const xs = all.map((p) => p.x);
  const ys = all.map((p) => p.y);
  const xMin = Math.min(...xs);
  const xMax = Math.max(...xs);
  let [yMin, yMax] = options.yDomain ?? [Math.min(...ys), Math.max(...ys)];
  if (!options.yDomain) {
    const pad = (yMax - yMin) * 0.08 || Math.abs(yMax) * 0.1 || 1;
    yMin = yMin >= 0 && yMin - pad < 0 ? 0 : yMin - pad;
    yMax += pad;
  }
  const frame = { width, height, left: 56, right: 16, top: 12 + legendH, bottom: 36 };
  const { sx, sy, svg } = axes(
    frame,
    { min: xMin, max: xMax, label: options.xLabel, integer: options.integerX },
    { min: yMin, max: yMax, label: options.yLabel },
  );
  const lines = options.series.map((s) => {
    const pts = s.points.filter((p) => Number.isFinite(p.x) && Number.isFinite(p.y));
    const d = pts.map((p, i) => `${i ? "L" : "M"}${sx(p.x).toFixed(1)} ${sy(p.y).toFixed(1)}`).join(" ");
    const dots =
      pts.length <= 80
        ? pts
            .map(
              (p) =>
                `<circle cx="${sx(p.x).toFixed(1)}" cy="${sy(p.y).toFixed(1)}" r="2.6" fill="${s.color}"><title>${escapeXml(`${s.name} at ${formatNumber(p.x)}: ${formatNumber(p.y, 4)}`)}</title></circle>`,
            )
            .join("")
        : "";
    return `<g class="series" data-series="${escapeXml(s.name)}"><path d="${d}" fill="none" stroke="${s.color}" stroke-width="2"/>${dots}</g>`;
  });
  const marker =
    options.marker && Number.isFinite(options.marker.x)
      ? `<line x1="${sx(options.marker.x).toFixed(1)}" x2="${sx(options.marker.x).toFixed(1)}" y1="${frame.top}" y2="${height - frame.bottom}" class="marker"/><text x="${(sx(options.marker.x) + 4).toFixed(1)}" y="${frame.top + 11}" class="tick">${escapeXml(options.marker.label)}</text>`
      : "";
  return (
    `<svg xmlns="http://www.w3.org/2000/svg" class="chart line-chart" role="img" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}"${options.id ? ` data-chart="${escapeXml(options.id)}"` : ""}><title>${escapeXml(options.title)}</title>` +
    svg +
    marker +
    lines.join("") +
    legend(
      options.series.map((s) => ({ label: s.name, color: s.color, shape: "line" as const })),
      frame.left,
      12,
      width - 60,
    ) +
    `</svg>`
  );
}

export interface ScatterPoint {
  x: number;
  y: number;
  color: string;
  /** Drawn as a larger outlined diamond on top of the others (prototypes). */
  emphasis?: boolean;
  title?: string;
  /** Dot radius in pixels (default 3), e.g. grown with how many data a dot stands for. */
  radius?: number;
  /** How many data the dot stands for; written as data-count for readers of the SVG. */
  count?: number;
}

export function scatterPlot(options: {
  points: ScatterPoint[];
  title: string;
  xLabel: string;
  yLabel: string;
  legend: { label: string; color: string; shape?: "dot" | "diamond" }[];
  width?: number;
  height?: number;
  id?: string;
}): string {
  const width = options.width ?? 600;
  const legendH =
    legendRows(
      options.legend.map((l) => l.label),
      width - 60,
    ) * 16;
  const height = (options.height ?? 420) + legendH;
  const xs = options.points.map((p) => p.x);
  const ys = options.points.map((p) => p.y);
  const pad = (lo: number, hi: number) => {
    const p = (hi - lo) * 0.05 || 1;
    return [lo - p, hi + p] as const;
  };
  const [xMin, xMax] = pad(Math.min(...xs), Math.max(...xs));
  const [yMin, yMax] = pad(Math.min(...ys), Math.max(...ys));
  const frame = { width, height, left: 56, right: 16, top: 12 + legendH, bottom: 36 };
  const { sx, sy, svg } = axes(frame, { min: xMin, max: xMax, label: options.xLabel }, { min: yMin, max: yMax, label: options.yLabel });
  const plain = options.points
    .filter((p) => !p.emphasis)
    .map(
      (p) =>
        `<circle cx="${sx(p.x).toFixed(1)}" cy="${sy(p.y).toFixed(1)}" r="${(p.radius ?? 3).toFixed(1)}"${p.count !== undefined ? ` data-count="${p.count}"` : ""} fill="${p.color}" fill-opacity="0.72">${p.title ? `<title>${escapeXml(p.title)}</title>` : ""}</circle>`,
    );
  const emphasised = options.points
    .filter((p) => p.emphasis)
    .map((p) => {
      const cx = sx(p.x);
      const cy = sy(p.y);
      return `<path d="M${cx.toFixed(1)} ${(cy - 6).toFixed(1)} l6 6 l-6 6 l-6 -6 z" fill="${p.color}" stroke="#1f2328" stroke-width="1.1">${p.title ? `<title>${escapeXml(p.title)}</title>` : ""}</path>`;
    });
  return (
    `<svg xmlns="http://www.w3.org/2000/svg" class="chart scatter-plot" role="img" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}"${options.id ? ` data-chart="${escapeXml(options.id)}"` : ""}><title>${escapeXml(options.title)}</title>` +
    svg +
    `<g class="points">${plain.join("")}</g><g class="prototypes">${emphasised.join("")}</g>` +
    legend(options.legend, frame.left, 12, width - 60) +
    `</svg>`
  );
}
