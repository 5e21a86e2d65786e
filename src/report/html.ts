import type {
  DatasetPart,
  ExamplesPart,
  FilteringPart,
  HistoryPart,
  MetricsPart,
  OverviewStage,
  Part,
  PrototypesPart,
  ReportModel,
  Thumbnail,
  TrainingPart,
} from "./model.js";
import type { StageWarning } from "../pipeline/stage.js";
import { NOISE_COLOR, PALETTE, barChart, categoryColor, escapeXml as esc, formatNumber, lineChart, scatterPlot } from "./svg.js";

/**
 * Renders the report model as one self-contained HTML page: inline CSS, inline SVG, images as
 * data: URIs, no script. The Content-Security-Policy forbids every fetch, so opening the file
 * offline shows exactly what a reviewer sees online.
 */
export function renderReportHtml(model: ReportModel): string {
  const sections = [
    { id: "overview", title: "Run overview", body: overviewSection(model) },
    { id: "dataset", title: "Dataset", body: partBody(model.sections.dataset, datasetSection) },
    { id: "filtering", title: "Token filtering", body: partBody(model.sections.filtering, filteringSection) },
    { id: "prototypes", title: "Prototype space", body: partBody(model.sections.prototypes, prototypesSection) },
    { id: "training", title: "Training", body: partBody(model.sections.training, trainingSection) },
  ];
  const stateOf = (id: string) => (id === "overview" ? "ok" : model.sections[id as keyof ReportModel["sections"]].state);
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src data:; style-src 'unsafe-inline'">
<meta name="generator" content="prolearn">
<title>${esc(`${model.pipeline} · run ${model.runId}`)}</title>
<style>${CSS}</style>
</head>
<body>
<header class="page-header">
  <div class="title-row">
    <h1>${esc(model.pipeline)} <span class="muted">run report</span></h1>
    <span class="badge status-${model.status === "ok" && model.warnings.length ? "warned" : model.status}" data-metric="run-status">${model.status === "ok" ? "succeeded" : "failed"}${model.warnings.length ? ` with ${plural(model.warnings.length, "warning")}` : ""}</span>
  </div>
  ${warningsList(model.warnings)}
  <p class="meta">run <code data-metric="run-id">${esc(model.runId)}</code> · <span data-metric="run-seconds">${esc(formatSeconds(model.seconds))}</span>
   · ${model.totals.ran} ran, ${model.totals.cached} cached, ${model.totals.failed} failed${model.totals.skipped ? `, ${model.totals.skipped} skipped` : ""}
   ${model.startedAt ? ` · started ${esc(model.startedAt.replace("T", " ").replace(/\.\d+Z$/, " UTC"))}` : ""}${model.trigger ? ` · trigger ${esc(model.trigger)}` : ""}${model.executor ? ` · executor ${esc(model.executor)}` : ""}</p>
  <p class="meta">dataset <b>${esc(model.dataset.kind)}</b> (${esc(model.dataset.layout)} layout) at <code>${esc(model.dataset.root)}</code> · text availability ${esc(formatPercent(model.dataset.textAvailability))} · seed ${model.dataset.seed}</p>
  <nav>${sections.map((s) => `<a href="#${s.id}" class="nav-${stateOf(s.id)}">${esc(s.title)}</a>`).join("")}</nav>
</header>
<main>
${sections.map((s) => `<section id="${s.id}" data-section="${s.id}" data-state="${stateOf(s.id)}"><h2>${esc(s.title)}</h2>${s.body}</section>`).join("\n")}
</main>
<footer>Generated ${esc(model.generatedAt)} by prolearn from the stage outputs of this run in <code>${esc(model.workdir)}</code>. Thumbnails: <span class="swatch truth"></span> ground truth, <span class="swatch prediction"></span> prediction.</footer>
</body>
</html>
`;
}

/** The header's list of failed checks: amber, one line each, with the figures the check compared. */
function warningsList(warnings: ReportModel["warnings"]): string {
  if (!warnings.length) return "";
  return `<ul class="warnings" data-metric="run-warnings">${warnings.map((w) => `<li data-warning="${esc(w.code)}" data-stage="${esc(w.stage)}"><b>${esc(w.stage)}</b>: ${warningText(w)}</li>`).join("")}</ul>`;
}

function warningText(w: StageWarning): string {
  const figures = Object.entries(w.figures ?? {}).map(([k, v]) => `${esc(k)} ${esc(typeof v === "number" ? String(Number(v.toPrecision(4))) : String(v))}`);
  return `${inlineCode(w.message)} <code class="muted">${esc(w.code)}</code>${figures.length ? ` <span class="figures">(${figures.join(", ")})</span>` : ""}`;
}

function plural(n: number, word: string): string {
  return `${n} ${word}${n === 1 ? "" : "s"}`;
}

function partBody<T>(part: Part<T>, render: (data: T) => string): string {
  if (part.state === "ok") return render(part.data);
  return notice(part);
}

function notice(part: { state: "absent" | "error"; message: string }): string {
  return `<div class="notice ${part.state}" data-notice="${part.state}">${part.state === "error" ? "<b>Could not read this part of the run.</b> " : ""}${inlineCode(part.message)}</div>`;
}

/** `code` spans in messages; everything else escaped. */
function inlineCode(text: string): string {
  return esc(text)
    .split("`")
    .map((chunk, i) => (i % 2 ? `<code>${chunk}</code>` : chunk))
    .join("")
    .replace(/\n/g, "<br>");
}

function formatSeconds(seconds: number | null): string {
  if (seconds === null || !Number.isFinite(seconds)) return "—";
  if (seconds < 1) return `${(seconds * 1000).toFixed(0)} ms`;
  if (seconds < 60) return `${seconds.toFixed(seconds < 10 ? 2 : 1)} s`;
  const m = Math.floor(seconds / 60);
  return `${m} min ${Math.round(seconds % 60)} s`;
}

function formatPercent(fraction: number, digits = 0): string {
  return `${(fraction * 100).toFixed(digits)}%`;
}

const WARNED_COLOR = "#bf8700";
const STATUS_COLORS: Record<OverviewStage["status"], string> = {
  ran: "#4e79a7",
  cached: "#59a14f",
  failed: "#e15759",
  skipped: "#9aa0a6",
  "not run": "#c4c8cc",
};

function overviewSection(model: ReportModel): string {
  const rows = model.stages.map((s) => {
    const summary = s.summary.length
      ? `<div class="summary">${s.summary.map(([k, v]) => `<span><span class="muted">${esc(k)}</span> ${esc(v)}</span>`).join("")}</div>`
      : "";
    return `<tr data-stage="${esc(s.name)}">
      <td><b>${esc(s.name)}</b></td>
      <td><span class="badge stage-${s.warnings.length ? "warned" : s.status.replace(" ", "-")}" data-metric="stage-status"${s.warnings.length ? ` data-warnings="${s.warnings.length}" title="${esc(plural(s.warnings.length, "warning"))}"` : ""}>${esc(s.status)}</span></td>
      <td class="num" data-metric="stage-seconds">${esc(formatSeconds(s.seconds))}</td>
      <td>${s.cacheKey ? `<code title="${esc(s.digest ? `output digest ${s.digest}` : "")}">${esc(s.cacheKey.slice(0, 12))}</code>` : `<span class="muted">—</span>`}</td>
      <td class="reason">${esc(s.reason)}${s.error ? `<pre class="error">${esc(s.error)}</pre>` : ""}${s.warnings.length ? `<ul class="warnings stage-warnings">${s.warnings.map((w) => `<li data-warning="${esc(w.code)}">warning: ${warningText(w)}</li>`).join("")}</ul>` : ""}${summary}</td>
    </tr>`;
  });
  const timed = model.stages.filter((s) => s.seconds !== null);
  const chart = timed.length
    ? `<figure>${barChart({ id: "stage-durations", title: "Stage durations in seconds", bars: timed.map((s) => ({ label: s.name, value: s.seconds!, color: s.warnings.length ? WARNED_COLOR : STATUS_COLORS[s.status], note: s.warnings.length ? `${s.status}, ${plural(s.warnings.length, "warning")}` : s.status })), format: (v) => formatSeconds(v), width: 640 })}<figcaption>Time per stage; colour = <span style="color:${STATUS_COLORS.ran}">ran</span>, <span style="color:${STATUS_COLORS.cached}">cached</span>, <span style="color:${STATUS_COLORS.failed}">failed</span>${timed.some((s) => s.warnings.length) ? `, <span style="color:${WARNED_COLOR}">with warnings</span>` : ""}.</figcaption></figure>`
    : "";
  return `<table class="stages"><thead><tr><th>stage</th><th>status</th><th class="num">time</th><th>cache key</th><th>why</th></tr></thead><tbody>${rows.join("")}</tbody></table>${chart}`;
}

function datasetSection(d: DatasetPart): string {
  const total = d.splits.reduce(
    (a, s) => ({
      samples: a.samples + s.samples,
      withReport: a.withReport + s.withReport,
      reportAvailable: a.reportAvailable + s.reportAvailable,
      emptyMasks: a.emptyMasks + (s.emptyMasks ?? 0),
    }),
    { samples: 0, withReport: 0, reportAvailable: 0, emptyMasks: 0 },
  );
  const hasEmpty = d.splits.some((s) => s.emptyMasks !== null);
  const splitRows = d.splits
    .map(
      (s) =>
        `<tr data-split="${esc(s.split)}"><td>${esc(s.split)}</td><td class="num" data-metric="split-samples">${s.samples.toLocaleString("en-US")}</td><td class="num" data-metric="split-with-report">${s.withReport.toLocaleString("en-US")}</td><td class="num" data-metric="split-report-available">${s.reportAvailable.toLocaleString("en-US")} <span class="muted">(${formatPercent(s.samples ? s.reportAvailable / s.samples : 0)})</span></td>${hasEmpty ? `<td class="num">${s.emptyMasks}</td>` : ""}</tr>`,
    )
    .join("");
  const splitTable = `<table class="compact"><thead><tr><th>split</th><th class="num">samples</th><th class="num">with a report</th><th class="num">report usable</th>${hasEmpty ? `<th class="num">empty masks</th>` : ""}</tr></thead><tbody>${splitRows}<tr class="total"><td>all</td><td class="num" data-metric="samples-total">${total.samples.toLocaleString("en-US")}</td><td class="num">${total.withReport.toLocaleString("en-US")}</td><td class="num">${total.reportAvailable.toLocaleString("en-US")}</td>${hasEmpty ? `<td class="num">${total.emptyMasks}</td>` : ""}</tr></tbody></table>`;
  const availability = barChart({
    id: "report-availability",
    title: "Samples per split, and how many may use their report",
    width: 460,
    bars: d.splits.flatMap((s) => [
      { label: `${s.split}: samples`, value: s.samples, color: "#bac8d8" },
      { label: `${s.split}: report usable`, value: s.reportAvailable, color: PALETTE[0] },
    ]),
  });
  let quarantine: string;
  if (d.quarantine.state !== "ok") quarantine = notice(d.quarantine);
  else if (!d.quarantine.data.total)
    quarantine = `<p data-metric="quarantine-total" data-value="0">Nothing was quarantined: every file found was ingested.</p>`;
  else {
    const q = d.quarantine.data;
    quarantine = `<p><b data-metric="quarantine-total">${q.total.toLocaleString("en-US")}</b> quarantine entr${q.total === 1 ? "y" : "ies"} (kept samples are flagged, not dropped).</p>
    <table class="compact quarantine"><thead><tr><th>reason</th><th class="num">count</th><th class="num">kept</th><th>examples</th></tr></thead><tbody>${q.reasons
      .map(
        (r) =>
          `<tr data-reason="${esc(r.reason)}"><td><code>${esc(r.reason)}</code></td><td class="num" data-metric="quarantine-count">${r.count}</td><td class="num">${r.kept}</td><td class="paths">${r.examples.map((e) => `<div><code>${esc(e)}</code></div>`).join("")}${r.count > r.examples.length ? `<div class="muted">and ${r.count - r.examples.length} more</div>` : ""}</td></tr>`,
      )
      .join("")}</tbody></table>`;
  }
  const fingerprint = d.fingerprint?.length
    ? `<details><summary>Dataset fingerprint</summary><dl class="kv">${d.fingerprint.map(([k, v]) => `<dt>${esc(k)}</dt><dd>${esc(v)}</dd>`).join("")}</dl></details>`
    : "";
  const grid = d.thumbnails.length
    ? `<div class="thumbs">${d.thumbnails.map((t) => `<figure class="thumb" data-thumb="${esc(t.id)}" title="${esc(`${t.id} (${t.split})`)}">${img(t, `${t.id} (${t.split})`)}<figcaption><span class="split split-${esc(t.split)}">${esc(t.split)}</span> ${esc(t.id)}${t.maskEmpty ? ' <span class="muted">empty mask</span>' : ""}</figcaption></figure>`).join("")}</div>`
    : `<p class="muted">No samples to show.</p>`;
  return `<div class="cols"><div><h3>Splits and reports</h3>${splitTable}</div><div><h3>Report availability</h3>${availability}</div></div>
  <h3>Quarantine</h3>${quarantine}${fingerprint}
  <h3>Samples <span class="muted">(${d.thumbnails.length} of ${d.rows.toLocaleString("en-US")}, spread over the splits; mask outlined)</span></h3>${grid}`;
}

function img(t: Thumbnail, alt: string): string {
  return `<img src="${t.uri}" width="${t.width}" height="${t.height}" alt="${esc(alt)}">`;
}

function filteringSection(f: FilteringPart): string {
  const stats = `<div class="stats">
    ${stat("reports scored", f.reports.toLocaleString("en-US"), "filter-reports")}
    ${stat("tokens", f.tokens.toLocaleString("en-US"), "filter-tokens")}
    ${stat("tokens kept", `${f.keptTokens.toLocaleString("en-US")} (${formatPercent(f.tokens ? f.keptTokens / f.tokens : 0)})`, "filter-kept")}
    ${stat("threshold τ", f.threshold === null ? "—" : formatNumber(f.threshold, 4), "filter-threshold")}
  </div>`;
  const examples = f.examples
    .map((e) => {
      const max = Math.max(...e.tokens.map((t) => (Number.isFinite(t.score) ? t.score : 0)), 1e-12);
      const tokens = e.tokens
        .map((t, i) => {
          const continuation = t.text.startsWith("##");
          const text = continuation ? t.text.slice(2) : t.text;
          const space = i === 0 || continuation || /^[.,;:!?)]$/.test(text) ? "" : " ";
          const alpha = Number.isFinite(t.score) ? 0.06 + 0.84 * Math.max(0, t.score / max) : 0;
          return `${space}<span class="tok ${t.kept ? "kept" : "dropped"}" style="background-color: rgba(242, 142, 43, ${alpha.toFixed(3)})" title="${esc(`score ${formatNumber(t.score, 4)}${t.kept ? ", kept" : ", dropped"}`)}" data-score="${t.score}">${esc(text)}</span>`;
        })
        .join("");
      return `<div class="report-tokens" data-report="${esc(e.id)}"><div class="rid">${esc(e.id)}</div><p class="tokens">${tokens}</p><p class="filtered"><span class="muted">kept:</span> ${esc(e.filtered)}</p></div>`;
    })
    .join("");
  return `${stats}<p class="legend-line">Shading = cross-attention score relative to the report's highest; <span class="tok kept" style="background-color: rgba(242,142,43,0.7)">kept</span> tokens are dark, <span class="tok dropped">dropped</span> ones struck through. Hover a token for its score.</p>${examples}`;
}

function stat(label: string, value: string, metric: string): string {
  return `<div class="stat"><div class="stat-value" data-metric="${metric}">${esc(value)}</div><div class="stat-label">${esc(label)}</div></div>`;
}

function clusterName(cluster: number): string {
  return cluster < 0 ? "noise" : `cluster ${cluster}`;
}

function prototypesSection(p: PrototypesPart): string {
  const stats = `<div class="stats">
    ${stat("prototypes", String(p.prototypes), "prototype-count")}
    ${stat("surrogate labels", String(p.clusters.length), "cluster-count")}
    ${stat("reports clustered", p.assigned.toLocaleString("en-US"), "assigned-count")}
    ${stat(p.noiseReassigned ? `noise points (${p.noiseReassigned === p.noise ? "all" : p.noiseReassigned.toLocaleString("en-US")} given the nearest label)` : "noise points", p.noise.toLocaleString("en-US"), "noise-count")}
  </div>`;
  const sizes = barChart({
    id: "cluster-sizes",
    title: "Members per surrogate label",
    width: 460,
    bars: [
      ...p.clusters.map((c) => ({ label: clusterName(c.cluster), value: c.members, color: categoryColor(c.cluster), note: `${c.prototypes} proto` })),
      ...(p.noise - p.noiseReassigned > 0 ? [{ label: "noise", value: p.noise - p.noiseReassigned, color: NOISE_COLOR }] : []),
    ],
  });
  let projection: string;
  if (p.projection.state !== "ok") projection = notice(p.projection);
  else {
    const pr = p.projection.data;
    const clusters = [...new Set(pr.points.map((q) => q.cluster))].sort((a, b) => a - b);
    projection = `<figure>${scatterPlot({
      id: "projection",
      title: "Text embeddings projected on their first two principal components",
      xLabel: `PC1 (${formatPercent(pr.explained[0], 1)} of variance)`,
      yLabel: `PC2 (${formatPercent(pr.explained[1], 1)})`,
      width: 620,
      height: 400,
      legend: [
        ...clusters.map((c) => ({ label: clusterName(c), color: categoryColor(c) })),
        ...(pr.prototypes.length ? [{ label: "prototype (response)", color: "#ffffff", shape: "diamond" as const }] : []),
      ],
      points: [
        // Area proportional to the reports a point stands for (identical reports share one point).
        ...pr.points.map((q) => ({
          x: q.x,
          y: q.y,
          color: categoryColor(q.cluster),
          radius: Math.min(16, 3 * Math.sqrt(q.count)),
          count: q.count,
          title: `${q.id}: ${clusterName(q.cluster)}${q.count > 1 ? ` (${q.count} identical reports)` : ""}`,
        })),
        ...pr.prototypes.map((q) => ({
          x: q.x,
          y: q.y,
          color: categoryColor(q.cluster),
          emphasis: true,
          title: `prototype ${q.id} (${clusterName(q.cluster)})`,
        })),
      ],
    })}<figcaption data-metric="projection-points">${pr.points.length.toLocaleString("en-US")} point${pr.points.length === 1 ? "" : "s"} for ${pr.points.reduce((a, q) => a + q.count, 0).toLocaleString("en-US")} of ${pr.population.toLocaleString("en-US")} embedded reports, coloured by surrogate label; a point's area grows with the number of identical reports it stands for (hover for the count); diamonds are the response prototypes.</figcaption></figure>`;
  }
  let gallery: string;
  if (p.gallery.state !== "ok") gallery = notice(p.gallery);
  else {
    const g = p.gallery.data;
    gallery = `<h3>Prototype gallery <span class="muted">(${g.cards.length} of ${g.total}, every label shown)</span></h3><div class="gallery">${g.cards
      .map(
        (c) => `<figure class="card" data-prototype="${c.prototypeId}" style="border-top-color:${categoryColor(c.cluster)}">
      ${c.thumbnail ? img(c.thumbnail, `prototype ${c.prototypeId}`) : `<div class="no-image">${c.sampleId ? "image not in this run" : "cluster mean: no single sample"}</div>`}
      <figcaption><div><b>#${c.prototypeId}</b> · ${esc(clusterName(c.cluster))}, sub ${c.subcluster} · ${c.size} member${c.size === 1 ? "" : "s"}</div>
      ${c.report ? `<p class="report">${esc(c.report)}</p>` : `<p class="muted">no usable report</p>`}
      ${c.sampleId ? `<div class="rid">${esc(c.sampleId)}</div>` : ""}</figcaption></figure>`,
      )
      .join("")}</div>`;
  }
  return `${stats}<div class="cols"><div><h3>Cluster sizes</h3>${sizes}</div><div><h3>2-D projection</h3>${projection}</div></div>${gallery}`;
}

function trainingSection(t: TrainingPart): string {
  return `<h3>Learning curves</h3>${partBody(t.history, (h) => historyBlock(h))}<h3>Learning curves of the image-only U-Net (baseline)</h3>${partBody(t.baselineHistory, (h) => historyBlock(h, "baseline-"))}<h3>Test metrics</h3>${partBody(t.metrics, metricsBlock)}<h3>Test predictions</h3>${partBody(t.examples, examplesBlock)}`;
}

/** `prefix` keeps the chart and metric names of a second block (the baseline's) apart from the first. */
function historyBlock(h: HistoryPart, prefix = ""): string {
  const kind = (name: string) =>
    /loss/i.test(name)
      ? "loss"
      : /dice|iou|acc|f1/i.test(name)
        ? "quality"
        : /learning.?rate|^lr$/i.test(name)
          ? "lr"
          : /second|time|duration/i.test(name)
            ? "time"
            : "other";
  const marker = h.bestEpoch !== null ? { x: h.bestEpoch, label: `best (${h.bestEpoch})` } : undefined;
  let colour = 0;
  const chart = (series: HistoryPart["series"], title: string, yLabel: string, id: string, yDomain?: [number, number]) =>
    series.some((s) => s.points.length)
      ? `<figure>${lineChart({ id: prefix + id, title, xLabel: "epoch", yLabel, integerX: true, width: 440, height: 220, series: series.map((s) => ({ ...s, color: PALETTE[colour++ % PALETTE.length]! })), ...(yDomain ? { yDomain } : {}), ...(marker ? { marker } : {}) })}</figure>`
      : "";
  const of = (k: string) => h.series.filter((s) => kind(s.name) === k);
  const quality = of("quality");
  const last = (name: string) => h.series.find((s) => s.name === name)?.points.at(-1)?.y;
  const shown = h.series.filter((s) => kind(s.name) !== "time");
  const finals = shown
    .map(
      (s) =>
        `<span><span class="muted">${esc(s.name)}</span> <b data-metric="${prefix}final-${esc(s.name)}">${esc(formatNumber(last(s.name) ?? Number.NaN, 4))}</b></span>`,
    )
    .join("");
  const times = of("time").flatMap((s) => s.points.map((p) => p.y));
  const timing = times.length ? `; ${formatSeconds(times.reduce((a, b) => a + b, 0) / times.length)} per epoch` : "";
  return `<p class="summary-line"><b data-metric="${prefix}epochs">${h.epochs}</b> epoch${h.epochs === 1 ? "" : "s"}${h.bestEpoch !== null ? `, best at epoch <b data-metric="${prefix}best-epoch">${h.bestEpoch}</b>` : ""}${esc(timing)}. Last epoch: ${finals}</p>
  <div class="cols">${chart(of("loss"), "Training loss per epoch", "loss", "loss")}${chart(quality, "Validation quality per epoch", "score", "quality", quality.every((s) => s.points.every((p) => p.y >= 0 && p.y <= 1)) ? [0, 1] : undefined)}${chart(of("lr"), "Learning rate per epoch", "learning rate", "learning-rate")}${of(
    "other",
  )
    .map((s) => chart([s], `${s.name} per epoch`, s.name, `other-${s.name}`))
    .join("")}</div>`;
}

function metricsBlock(m: MetricsPart): string {
  const baseline = m.baselineRow !== null ? m.rows[m.baselineRow]! : undefined;
  const cell = (value: MetricsPart["rows"][number][number], col: number, rowIndex: number) => {
    if (value === null) return `<td class="muted">—</td>`;
    if (typeof value !== "number") return `<td>${esc(String(value))}</td>`;
    const base = baseline?.[col];
    const delta =
      baseline && rowIndex !== m.baselineRow && typeof base === "number" && !/^(images|count|n|samples|rows|seed)$|availability/i.test(m.columns[col]!)
        ? value - base
        : undefined;
    const deltaHtml =
      delta !== undefined && Number.isFinite(delta)
        ? ` <span class="delta ${delta > 0 ? "up" : delta < 0 ? "down" : ""}">${delta >= 0 ? "+" : "−"}${formatNumber(Math.abs(delta), 4)}</span>`
        : "";
    return `<td class="num" data-metric="${esc(m.columns[col]!)}">${esc(formatNumber(value, 4))}${deltaHtml}</td>`;
  };
  const rows = m.rows.map((row, i) => `<tr${i === m.baselineRow ? ' class="baseline"' : ""}>${row.map((v, c) => cell(v, c, i)).join("")}</tr>`).join("");
  const caption = baseline ? `Differences are against the baseline row (highlighted).` : `No row is labelled as a baseline, so no differences are shown.`;
  return `<table class="metrics compact"><thead><tr>${m.columns.map((c) => `<th>${esc(c)}</th>`).join("")}</tr></thead><tbody>${rows}</tbody></table><p class="muted small">${caption}</p>`;
}

function examplesBlock(e: ExamplesPart): string {
  if (!e.items.length) return `<p class="muted">examples.parquet holds no rows.</p>`;
  return `<p class="muted small">${e.items.length} of ${e.total} test examples: image, ground truth <span class="swatch truth"></span>, prediction <span class="swatch prediction"></span>.</p><div class="examples">${e.items
    .map(
      (x) => `<div class="example" data-example="${esc(x.id)}"><div class="triplet">
      <figure>${img(x.image, `${x.id} image`)}<figcaption>image</figcaption></figure>
      <figure>${img(x.truth, `${x.id} ground truth`)}<figcaption>ground truth</figcaption></figure>
      <figure>${img(x.prediction, `${x.id} prediction`)}<figcaption>prediction</figcaption></figure>${x.baseline ? `<figure>${img(x.baseline, `${x.id} baseline prediction`)}<figcaption>baseline</figcaption></figure>` : ""}</div>
      <div class="rid">${esc(x.id)}${x.scores.map(([k, v]) => ` · ${esc(k)} <b>${esc(formatNumber(v, 3))}</b>`).join("")}</div></div>`,
    )
    .join("")}</div>`;
}

const CSS = `
:root { --fg: #1f2328; --muted: #656d76; --line: #d8dee4; --bg: #f6f8fa; --card: #ffffff; --accent: #4e79a7; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Noto Sans", "DejaVu Sans", sans-serif; color: var(--fg); background: var(--bg); }
code, pre { font-family: ui-monospace, "SFMono-Regular", "DejaVu Sans Mono", Menlo, monospace; font-size: 12px; }
.page-header { background: var(--card); border-bottom: 1px solid var(--line); padding: 18px 32px 0; position: sticky; top: 0; z-index: 1; }
.title-row { display: flex; align-items: center; gap: 12px; }
h1 { font-size: 22px; margin: 0; }
h2 { font-size: 18px; margin: 0 0 12px; padding-bottom: 6px; border-bottom: 1px solid var(--line); }
h3 { font-size: 14px; margin: 18px 0 8px; }
.meta { margin: 4px 0; color: var(--muted); }
nav { display: flex; gap: 4px; margin-top: 10px; }
nav a { padding: 6px 12px; color: var(--fg); text-decoration: none; border-bottom: 2px solid transparent; }
nav a:hover { border-bottom-color: var(--accent); }
nav a.nav-absent { color: var(--muted); }
nav a.nav-error { color: #b42318; }
main { max-width: 1320px; margin: 0 auto; padding: 16px 32px 32px; }
section { background: var(--card); border: 1px solid var(--line); border-radius: 8px; padding: 18px 22px; margin: 16px 0; scroll-margin-top: 130px; }
.muted { color: var(--muted); font-weight: normal; }
.small { font-size: 12px; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: 6px 10px; border-bottom: 1px solid var(--line); vertical-align: top; }
th { font-size: 12px; color: var(--muted); font-weight: 600; }
table.compact { width: auto; min-width: 360px; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tr.total td { font-weight: 600; border-top: 2px solid var(--line); }
tr.baseline td { background: #fff8e6; }
td.reason { color: var(--fg); max-width: 620px; }
.summary { display: flex; flex-wrap: wrap; gap: 4px 14px; margin-top: 4px; font-size: 12px; }
pre.error { white-space: pre-wrap; color: #b42318; background: #fef3f2; padding: 6px 8px; border-radius: 4px; margin: 6px 0 0; }
.badge { display: inline-block; padding: 1px 8px; border-radius: 10px; font-size: 12px; font-weight: 600; color: #fff; }
.status-ok { background: #1a7f37; } .status-failed { background: #cf222e; } .status-warned, .stage-warned { background: #bf8700; }
ul.warnings { list-style: none; margin: 8px 0 0; padding: 8px 12px; background: #fff8c5; border-left: 4px solid #bf8700; border-radius: 4px; color: #4d2d00; font-size: 13px; }
ul.warnings li + li { margin-top: 2px; }
ul.stage-warnings { margin: 4px 0; padding: 4px 8px; font-size: 12px; }
.stage-ran { background: #4e79a7; } .stage-cached { background: #59a14f; } .stage-failed { background: #e15759; }
.stage-skipped, .stage-not-run { background: #9aa0a6; }
.notice { padding: 10px 14px; border-radius: 6px; background: #f3f4f6; color: var(--muted); border-left: 4px solid #c4c8cc; }
.notice.error { background: #fef3f2; color: #7a271a; border-left-color: #e15759; }
.cols { display: flex; flex-wrap: wrap; gap: 8px 40px; align-items: flex-start; }
figure { margin: 0; }
figcaption { font-size: 12px; color: var(--muted); }
.chart { display: block; max-width: 100%; height: auto; font-family: inherit; }
.chart .axis { stroke: #8c959f; stroke-width: 1; }
.chart .grid { stroke: #eaeef2; stroke-width: 1; }
.chart .tick { font-size: 11px; fill: var(--muted); }
.chart .axis-label { font-size: 12px; fill: var(--fg); }
.chart .value-label { font-size: 11px; fill: var(--fg); }
.chart .legend { font-size: 11px; fill: var(--fg); }
.chart .muted { fill: var(--muted); }
.chart .marker { stroke: #8c959f; stroke-dasharray: 4 3; }
.thumbs { display: grid; grid-template-columns: repeat(auto-fill, minmax(112px, 1fr)); gap: 10px; }
.thumb { text-align: center; }
.thumb img, .card img, .triplet img { display: block; margin: 0 auto; border-radius: 4px; background: #000; image-rendering: auto; }
.thumb figcaption { overflow: hidden; text-overflow: ellipsis; white-space: nowrap; font-size: 11px; }
.split { display: inline-block; padding: 0 5px; border-radius: 3px; font-size: 10px; background: #eaeef2; color: var(--fg); }
.split-train { background: #dbe7f3; } .split-val { background: #fde9d6; } .split-test { background: #dcefd8; }
.quarantine td.paths code { font-size: 11px; word-break: break-all; }
.kv { display: grid; grid-template-columns: max-content 1fr; gap: 2px 16px; margin: 8px 0; }
.kv dt { color: var(--muted); } .kv dd { margin: 0; }
details summary { cursor: pointer; color: var(--accent); margin-top: 10px; }
.stats { display: flex; flex-wrap: wrap; gap: 12px; margin-bottom: 8px; }
.stat { background: var(--bg); border: 1px solid var(--line); border-radius: 6px; padding: 8px 14px; min-width: 130px; }
.stat-value { font-size: 18px; font-weight: 600; font-variant-numeric: tabular-nums; }
.stat-label { font-size: 12px; color: var(--muted); }
.legend-line { color: var(--muted); font-size: 12px; }
.report-tokens { border: 1px solid var(--line); border-radius: 6px; padding: 8px 12px; margin: 8px 0; }
.report-tokens .tokens { margin: 2px 0; line-height: 1.9; }
.report-tokens .filtered { margin: 2px 0; font-size: 12px; }
.tok { padding: 1px 2px; border-radius: 3px; }
.tok.kept { font-weight: 600; }
.tok.dropped { color: #8c959f; text-decoration: line-through; }
.rid { font-size: 11px; color: var(--muted); font-family: ui-monospace, "DejaVu Sans Mono", monospace; word-break: break-all; }
.gallery { display: grid; grid-template-columns: repeat(auto-fill, minmax(200px, 1fr)); gap: 12px; }
.card { border: 1px solid var(--line); border-top: 4px solid var(--accent); border-radius: 6px; padding: 8px; }
.card figcaption { color: var(--fg); margin-top: 6px; }
.card .report { margin: 4px 0; font-size: 12px; display: -webkit-box; -webkit-line-clamp: 4; -webkit-box-orient: vertical; overflow: hidden; }
.no-image { height: 96px; display: flex; align-items: center; justify-content: center; background: var(--bg); color: var(--muted); font-size: 12px; border-radius: 4px; text-align: center; }
.examples { display: grid; grid-template-columns: repeat(auto-fill, minmax(min(100%, 540px), 1fr)); gap: 14px; }
.example { border: 1px solid var(--line); border-radius: 6px; padding: 8px; }
.triplet { display: flex; flex-wrap: wrap; gap: 10px; }
.triplet figcaption { text-align: center; }
.delta { font-size: 11px; margin-left: 4px; }
.delta.up { color: #1a7f37; } .delta.down { color: #cf222e; }
.summary-line span { margin-right: 12px; }
.swatch { display: inline-block; width: 10px; height: 10px; border-radius: 2px; vertical-align: middle; }
.swatch.truth { background: rgb(255, 122, 0); } .swatch.prediction { background: rgb(0, 170, 255); }
footer { max-width: 1320px; margin: 0 auto; padding: 0 32px 32px; color: var(--muted); font-size: 12px; }
`;
