import { test, describe } from "node:test";
import assert from "node:assert/strict";
import { chmodSync, existsSync, mkdirSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import path from "node:path";
import sharp from "sharp";
import { z } from "zod";
import { Catalog } from "../../src/pipeline/catalog.js";
import { defineStage, type StageDefinition } from "../../src/pipeline/stage.js";
import { gatherReport, parseHistory, shareOut, spread } from "../../src/report/gather.js";
import { renderReportHtml } from "../../src/report/html.js";
import { fitPca2, project } from "../../src/report/pca.js";
import { barChart, escapeXml, lineChart, niceTicks, scatterPlot } from "../../src/report/svg.js";
import { PREDICTION_COLOR, TRUTH_COLOR, thumbnailDataUri } from "../../src/report/thumbnails.js";
import { ensureRunReport, reportPath, runResultFromCatalog } from "../../src/report/write.js";
import { demoFacts, demoRegistry, demoRegistryWithWarning, rng, syntheticXray } from "./fixtures.js";
import { cli, demoProject, runDemo } from "./helpers.js";

async function decode(uri: string) {
  assert.match(uri, /^data:image\/png;base64,/);
  return sharp(Buffer.from(uri.slice(uri.indexOf(",") + 1), "base64"))
    .raw()
    .toBuffer({ resolveWithObject: true });
}

describe("report charts", () => {
  test("ticks fall on 1/2/5 steps and cover the range", () => {
    assert.deepEqual(niceTicks(0, 1, 5), [0, 0.2, 0.4, 0.6, 0.8, 1]);
    assert.deepEqual(niceTicks(1, 12, 6), [2, 4, 6, 8, 10, 12]);
    assert.deepEqual(niceTicks(-0.6, 0.6, 6), [-0.6, -0.4, -0.2, 0, 0.2, 0.4, 0.6], "zero prints as 0, not float drift");
    assert.ok(niceTicks(5, 5).length >= 2);
  });

  test("bar, line and scatter charts draw one mark per datum and escape text", () => {
    const bars = barChart({
      title: "t",
      bars: [
        { label: "a<b", value: 3 },
        { label: "c", value: 1 },
      ],
    });
    assert.equal((bars.match(/<rect /g) ?? []).length, 2);
    assert.match(bars, /a&lt;b/);
    assert.doesNotMatch(bars, /a<b/);
    const line = lineChart({
      title: "l",
      xLabel: "epoch",
      yLabel: "loss",
      series: [
        {
          name: "loss",
          color: "#000",
          points: [
            { x: 1, y: 2 },
            { x: 2, y: 1 },
            { x: 3, y: Number.NaN },
          ],
        },
      ],
    });
    assert.equal((line.match(/<circle /g) ?? []).length, 2 + 0, "NaN points are left out");
    assert.match(line, /<path d="M[\d.]+ [\d.]+ L[\d.]+ [\d.]+"/);
    const scatter = scatterPlot({
      title: "s",
      xLabel: "x",
      yLabel: "y",
      legend: [{ label: "c0", color: "#f00" }],
      points: [
        { x: 0, y: 0, color: "#f00" },
        { x: 1, y: 1, color: "#f00" },
        { x: 2, y: 0, color: "#f00", emphasis: true },
      ],
    });
    assert.equal((scatter.match(/<circle cx/g) ?? []).length, 2 + 1, "two points and one legend dot");
    assert.match(scatter, /<g class="prototypes"><path /);
    assert.equal(escapeXml(`<&>"'`), "&lt;&amp;&gt;&quot;&#39;");
  });
});

describe("report PCA", () => {
  test("finds the two directions of largest spread and their share of the variance", () => {
    const random = rng(3);
    const dim = 10;
    const rows = [...Array(400).keys()].map(() => {
      const row = new Float32Array(dim);
      for (let j = 0; j < dim; j++) row[j] = (random() - 0.5) * 0.1;
      row[2] += (random() - 0.5) * 10;
      row[7] += (random() - 0.5) * 4;
      return row;
    });
    const pca = fitPca2(rows, dim);
    assert.ok(Math.abs(pca.components[0][2]!) > 0.999, "first component along axis 2");
    assert.ok(Math.abs(pca.components[1][7]!) > 0.999, "second component along axis 7");
    assert.ok(pca.explained[0] > 0.8 && pca.explained[0] < 0.9, `explained ${pca.explained[0]}`);
    assert.ok(pca.explained[0] + pca.explained[1] > 0.99);
    const [a] = project(pca, rows[0]!);
    assert.ok(
      Math.abs(a - (rows[0]![2]! - pca.mean[2]!) * Math.sign(pca.components[0][2]!)) < 0.15,
      "PC1 coordinate is the axis-2 offset, up to the small sample correlation with axis 7",
    );
    assert.deepEqual(fitPca2(rows, dim).components[0], pca.components[0], "deterministic");
  });
});

describe("report thumbnails", () => {
  test("a grey PNG gets the mask as an orange fill with an opaque outline, inside a 96 px box", async () => {
    const { image, mask, truth } = await syntheticXray(11);
    const thumb = await thumbnailDataUri(image, [{ mask, color: TRUTH_COLOR }], 96);
    assert.equal(thumb.width, 96);
    const { data, info } = await decode(thumb.uri);
    assert.equal(info.width, 96);
    let inside = -1;
    for (let i = 0; i < truth.length && inside < 0; i++) {
      const x = i % 64;
      const y = Math.floor(i / 64);
      if (truth[i] && truth[i - 1] && truth[i + 1] && truth[i - 64] && truth[i + 64] && truth[i - 2] && truth[i + 2])
        inside = Math.round(y * 1.5 + 0.75) * 96 + Math.round(x * 1.5 + 0.75);
    }
    assert.ok(inside >= 0);
    const [r, g, b] = [data[inside * 3]!, data[inside * 3 + 1]!, data[inside * 3 + 2]!];
    assert.ok(r > b + 40 && r > g, `mask pixel tinted orange, got ${r},${g},${b}`);
    const corner = [data[0]!, data[1]!, data[2]!];
    assert.ok(Math.abs(corner[0]! - corner[2]!) < 3, "background stays grey");
  });

  test("a wide RGB JPEG keeps its aspect ratio; a 0..255 prediction is thresholded at the middle", async () => {
    const width = 300;
    const height = 150;
    const rgb = Buffer.alloc(width * height * 3, 0);
    for (let i = 0; i < width * height; i++) rgb[i * 3] = 180;
    const jpeg = await sharp(rgb, { raw: { width, height, channels: 3 } })
      .jpeg()
      .toBuffer();
    const probabilities = Buffer.alloc(width * height, 100);
    for (let y = 50; y < 100; y++) for (let x = 100; x < 200; x++) probabilities[y * width + x] = 200;
    const prediction = await sharp(probabilities, { raw: { width, height, channels: 1 } })
      .png()
      .toBuffer();
    const thumb = await thumbnailDataUri(jpeg, [{ mask: prediction, color: PREDICTION_COLOR }], 96);
    assert.deepEqual([thumb.width, thumb.height], [96, 48]);
    const { data } = await decode(thumb.uri);
    const centre = (24 * 96 + 48) * 3;
    assert.ok(data[centre + 2]! > 60, "prediction region tinted blue");
    assert.ok(data[2]! < 20, "values below 127 are background");
  });
});

describe("report history", () => {
  test("reads the train stage's records, a bare list and columns; nulls are gaps", () => {
    const a = parseHistory({
      epochs: [
        { epoch: 1, loss: 1, valDice: null },
        { epoch: 2, loss: 0.5, valDice: 0.7 },
      ],
      bestEpoch: 2,
    });
    assert.equal(a.epochs, 2);
    assert.equal(a.bestEpoch, 2);
    assert.deepEqual(a.series.find((s) => s.name === "valDice")!.points, [{ x: 2, y: 0.7 }]);
    const b = parseHistory([{ loss: 3 }, { loss: 2 }]);
    assert.deepEqual(b.series[0]!.points, [
      { x: 1, y: 3 },
      { x: 2, y: 2 },
    ]);
    const c = parseHistory({ epoch: [1, 2, 3], loss: [3, 2, 1] });
    assert.deepEqual(
      c.series.map((s) => s.name),
      ["loss"],
    );
    assert.throws(() => parseHistory({ note: "nothing" }), /no per-epoch records/);
  });

  test("thumbnail quotas: even over the splits, a small split's unused share goes to the others", () => {
    assert.deepEqual(shareOut([40, 10, 10], 24), [8, 8, 8]);
    assert.deepEqual(shareOut([24, 6, 6], 24), [12, 6, 6]);
    assert.deepEqual(shareOut([2, 1], 24), [2, 1]);
    assert.deepEqual(shareOut([5, 5, 5], 2), [1, 1, 0]);
  });

  test("spread picks evenly spaced rows", () => {
    assert.deepEqual(spread([0, 1, 2, 3, 4, 5, 6, 7, 8, 9], 2), [2, 7]);
    assert.deepEqual(spread([1, 2], 5), [1, 2]);
  });
});

describe("run report from a demo run", () => {
  test("every section holds the numbers of the run's outputs", async () => {
    const { file, workdir } = demoProject();
    const { pipeline, result } = await runDemo(file);
    assert.equal(result.status, "ok");
    assert.equal(result.report, reportPath(workdir, result.runId));
    assert.ok(existsSync(result.report!));
    assert.deepEqual(readdirSync(path.dirname(result.report!)), [`${result.runId}.html`], "no temporary files left behind");
    const catalog = new Catalog(workdir);
    assert.equal(catalog.getRun(result.runId)!.report, result.report, "the catalog records the report");
    catalog.close();

    const facts = demoFacts();
    const model = await gatherReport({ pipeline, result });
    assert.deepEqual(
      model.stages.map((s) => [s.name, s.status]),
      ["ingest", "filter", "embed", "prototypes", "train", "evaluate"].map((n) => [n, "ran"]),
    );
    assert.ok(model.stages.every((s) => s.cacheKey && s.reason === "never ran"));

    const dataset = model.sections.dataset;
    assert.equal(dataset.state, "ok");
    if (dataset.state !== "ok") return;
    for (const s of dataset.data.splits)
      assert.deepEqual({ samples: s.samples, withReport: s.withReport, reportAvailable: s.reportAvailable, emptyMasks: s.emptyMasks }, facts.splits[s.split]);
    assert.deepEqual(
      dataset.data.splits.map((s) => s.split),
      ["train", "val", "test"],
    );
    assert.equal(dataset.data.thumbnails.length, 24);
    assert.deepEqual([...new Set(dataset.data.thumbnails.map((t) => t.split))], ["train", "val", "test"]);
    assert.equal(dataset.data.quarantine.state, "ok");
    if (dataset.data.quarantine.state === "ok") {
      assert.deepEqual(Object.fromEntries(dataset.data.quarantine.data.reasons.map((r) => [r.reason, r.count])), facts.quarantine);
      assert.equal(dataset.data.quarantine.data.reasons[0]!.examples.length, 3);
    }

    const filtering = model.sections.filtering;
    assert.equal(filtering.state, "ok");
    if (filtering.state === "ok") {
      assert.deepEqual([filtering.data.reports, filtering.data.tokens, filtering.data.keptTokens], [facts.filteredReports, facts.tokens, facts.keptTokens]);
      assert.ok(Math.abs(filtering.data.threshold! - facts.threshold) < 1e-6);
      assert.equal(filtering.data.examples.length, 6);
      assert.ok(filtering.data.examples.every((e) => e.tokens.length > 3 && e.tokens.some((t) => t.kept) && e.tokens.some((t) => !t.kept)));
    }

    const prototypes = model.sections.prototypes;
    assert.equal(prototypes.state, "ok");
    if (prototypes.state === "ok") {
      const p = prototypes.data;
      assert.deepEqual([p.prototypes, p.clusters.length, p.noise, p.assigned], [facts.prototypes, facts.clusters, facts.noise, facts.assigned]);
      assert.equal(p.clusters.reduce((a, c) => a + c.members, 0) + p.noise, facts.assigned);
      assert.equal(p.projection.state, "ok");
      if (p.projection.state === "ok") {
        assert.equal(p.projection.data.points.length, facts.assigned);
        assert.equal(p.projection.data.prototypes.length, facts.prototypes);
        // Well-separated clusters stay apart in the projection: each point is nearer its own cluster's centroid.
        const centroid = (c: number) => {
          const own = p.projection.state === "ok" ? p.projection.data.points.filter((q) => q.cluster === c) : [];
          return [own.reduce((a, q) => a + q.x, 0) / own.length, own.reduce((a, q) => a + q.y, 0) / own.length] as const;
        };
        const centres = [0, 1, 2].map(centroid);
        for (const q of p.projection.data.points.filter((q) => q.cluster >= 0)) {
          const d = centres.map(([x, y]) => (q.x - x) ** 2 + (q.y - y) ** 2);
          assert.equal(d.indexOf(Math.min(...d)), q.cluster);
        }
      }
      assert.equal(p.gallery.state, "ok");
      if (p.gallery.state === "ok") {
        assert.equal(p.gallery.data.cards.length, facts.prototypes);
        assert.ok(p.gallery.data.cards.every((c) => c.thumbnail && c.report && c.report.length > 5));
      }
    }

    const training = model.sections.training;
    assert.equal(training.state, "ok");
    if (training.state === "ok") {
      const { history, metrics, examples } = training.data;
      assert.equal(history.state, "ok");
      if (history.state === "ok") {
        assert.equal(history.data.epochs, facts.epochs);
        assert.equal(history.data.bestEpoch, facts.bestEpoch);
        assert.ok(Math.abs(history.data.series.find((s) => s.name === "valDice")!.points.at(-1)!.y - facts.finalValDice) < 1e-9);
      }
      assert.equal(metrics.state, "ok");
      if (metrics.state === "ok") {
        assert.equal(metrics.data.rows.length, 2);
        assert.equal(metrics.data.baselineRow, 1);
        assert.ok(Math.abs((metrics.data.rows[0]![metrics.data.columns.indexOf("dice")] as number) - 0.8123) < 1e-6);
      }
      assert.equal(examples.state, "ok");
      if (examples.state === "ok") {
        assert.equal(examples.data.items.length, facts.examples);
        assert.ok(examples.data.items.every((x) => x.baseline && x.scores.some(([k]) => k === "dice")));
      }
    }

    const html = readFileSync(result.report!, "utf8");
    assert.match(html, /Content-Security-Policy" content="default-src 'none'/);
    assert.doesNotMatch(html, /(src|href)="(https?:)?\/\//, "nothing is fetched from the network");
    assert.doesNotMatch(html, /<script/);
    assert.match(html, /data-metric="samples-total">60</);
    assert.match(html, /data-metric="quarantine-total">8</);
    assert.match(html, /<span class="delta up">\+0\.0404<\/span>/, "ProLearn's Dice against the baseline");
  });

  test("a cached rerun says so, and sections of stages the pipeline lacks say that instead of numbers", async () => {
    const { file } = demoProject(["ingest", "embed"]);
    await runDemo(file);
    const { pipeline, result } = await runDemo(file);
    const model = await gatherReport({ pipeline, result }, { maxThumbnails: 6 });
    assert.deepEqual(
      model.stages.map((s) => s.status),
      ["cached", "cached"],
    );
    assert.equal(model.stages[0]!.reason, "inputs, params and code unchanged");
    assert.equal(model.sections.dataset.state, "ok");
    if (model.sections.dataset.state === "ok") assert.equal(model.sections.dataset.data.thumbnails.length, 6);
    for (const [name, stage] of [
      ["filtering", "filter"],
      ["prototypes", "prototypes"],
    ] as const) {
      const part = model.sections[name];
      assert.equal(part.state, "absent");
      if (part.state === "absent") assert.match(part.message, new RegExp(`This pipeline has no \`${stage}\` stage`));
    }
    assert.equal(model.sections.training.state, "absent");
    const html = renderReportHtml(model);
    assert.match(html, /<section id="training" data-section="training" data-state="absent">/);
    assert.match(html, /has no <code>train<\/code> or <code>evaluate<\/code> stage/);
    assert.doesNotMatch(html, /data-metric="prototype-count"/);
  });

  test("a failed stage is shown with its error, and the sections after it say why they are empty", async () => {
    const registry = new Map(demoRegistry());
    registry.set(
      "prototypes",
      defineStage({
        name: "prototypes",
        version: "1",
        description: "fails",
        params: z.strictObject({}),
        inputs: ["embed"],
        outputs: ["prototypes.parquet"],
        async run() {
          throw new Error("HDBSCAN found no cluster: every point is noise");
        },
      }) as StageDefinition,
    );
    const { file } = demoProject();
    const { pipeline, result } = await runDemo(file, registry);
    assert.equal(result.status, "failed");
    assert.ok(result.report && existsSync(result.report), "a failed run still gets its report");
    const model = await gatherReport({ pipeline, result });
    const stage = model.stages.find((s) => s.name === "prototypes")!;
    assert.equal(stage.status, "failed");
    assert.match(stage.error!, /every point is noise/);
    assert.equal(model.sections.prototypes.state, "absent");
    if (model.sections.prototypes.state === "absent") assert.match(model.sections.prototypes.message, /failed in this run: HDBSCAN found no cluster/);
    assert.equal(model.sections.training.state, "ok");
    if (model.sections.training.state === "ok") assert.equal(model.sections.training.data.history.state, "absent");
    assert.equal(model.sections.filtering.state, "ok", "stages before the failure still report");
  });

  test("a stage that warned is amber in its row and listed in the header, on the run that produced it and on cached reruns", async () => {
    const registry = demoRegistryWithWarning();
    const { file, workdir } = demoProject();
    const first = await runDemo(file, registry);
    assert.equal(first.result.status, "ok");
    const second = await runDemo(file, registry);
    assert.equal(second.result.stages.find((s) => s.name === "prototypes")!.status, "cached");
    for (const { pipeline, result } of [first, second]) {
      const model = await gatherReport({ pipeline, result }, { maxThumbnails: 6 });
      assert.deepEqual(
        model.warnings.map((w) => [w.stage, w.code]),
        [["prototypes", "prototypes-not-useful"]],
      );
      assert.deepEqual(
        model.stages.find((s) => s.name === "prototypes")!.warnings.map((w) => w.figures),
        [{ samples: 12, marginOverMean: -0.0123, marginOverRandom: 0.0456 }],
      );
      const html = renderReportHtml(model);
      assert.match(html, /<span class="badge status-warned" data-metric="run-status">succeeded with 1 warning<\/span>/);
      assert.match(
        html,
        /<li data-warning="prototypes-not-useful" data-stage="prototypes"><b>prototypes<\/b>: on 12 validation samples PSA&#39;s approximated text is no closer .*marginOverMean -0\.0123, marginOverRandom 0\.0456/,
      );
      assert.match(
        html,
        /<tr data-stage="prototypes">\s*<td><b>prototypes<\/b><\/td>\s*<td><span class="badge stage-warned" data-metric="stage-status" data-warnings="1"/,
      );
      assert.match(html, /<tr data-stage="ingest">\s*<td><b>ingest<\/b><\/td>\s*<td><span class="badge stage-(ran|cached)" data-metric="stage-status">/);
    }
    // `prolearn report` rebuilds a run from the catalog: the warnings come back from there.
    const catalog = new Catalog(workdir);
    try {
      const rebuilt = runResultFromCatalog(catalog, catalog.getRun(second.result.runId)!);
      assert.deepEqual(
        rebuilt.stages.find((s) => s.name === "prototypes")!.warnings.map((w) => w.code),
        ["prototypes-not-useful"],
      );
    } finally {
      catalog.close();
    }
  });

  test("an unreadable output shows as an error in its section; the rest of the report stands", async () => {
    const { file } = demoProject(["ingest", "filter"]);
    const { pipeline, result } = await runDemo(file);
    const broken = structuredClone(result);
    const filtered = path.join(path.dirname(result.report!), "not-parquet.parquet");
    writeFileSync(filtered, "this is not parquet");
    broken.stages[1]!.outputs["filtered.parquet"] = filtered;
    const model = await gatherReport({ pipeline, result: broken });
    assert.equal(model.sections.filtering.state, "error");
    if (model.sections.filtering.state === "error") assert.match(model.sections.filtering.message, /not-parquet\.parquet: cannot read Parquet file/);
    assert.equal(model.sections.dataset.state, "ok");
  });

  test("a run's report is rebuilt from the catalog when its file is gone", async () => {
    const { file, workdir } = demoProject(["ingest"]);
    const { pipeline, result } = await runDemo(file);
    rmSync(result.report!);
    const catalog = new Catalog(workdir);
    try {
      const rebuilt = runResultFromCatalog(catalog, catalog.getRun(result.runId)!);
      assert.deepEqual(
        rebuilt.stages.map((s) => [s.name, s.status, s.cacheKey, Object.keys(s.outputs).sort()]),
        result.stages.map((s) => [s.name, s.status, s.cacheKey, Object.keys(s.outputs).sort()]),
      );
      const again = await ensureRunReport(pipeline, catalog, result.runId);
      assert.equal(again, result.report);
      assert.match(readFileSync(again, "utf8"), /data-metric="samples-total">60</);
    } finally {
      catalog.close();
    }
  });
});

describe("report command", () => {
  // The CLI reads pipelines through the project's registry; the demo runs were made with the
  // demo registry under the same pipeline name, so the file lists no stages.
  function cliProject() {
    const project = demoProject(["ingest"]);
    const cliFile = path.join(project.dir, "cli.yaml");
    writeFileSync(cliFile, "name: report-demo\nworkdir: .prolearn\ndataset:\n  kind: qata-cov19\n  root: data\nstages: {}\n");
    return { ...project, cliFile };
  }

  test("prints the latest run's report, or the one --run names; unknown runs exit 2", async () => {
    const { file, cliFile } = cliProject();
    const first = await runDemo(file);
    const second = await runDemo(file);
    const latest = await cli(["report", cliFile]);
    assert.equal(latest.code, 0, latest.stderr);
    assert.equal(latest.stdout.trim(), second.result.report);
    const named = await cli(["report", cliFile, "--run", first.result.runId]);
    assert.equal(named.stdout.trim(), first.result.report);
    const unknown = await cli(["report", cliFile, "--run", "nope"]);
    assert.equal(unknown.code, 2);
    assert.match(unknown.stderr, /no run nope/);
    assert.match(unknown.stderr, new RegExp(second.result.runId));
  });

  test("a pipeline that never ran exits 2 with a hint", async () => {
    const { cliFile } = cliProject();
    const { code, stderr } = await cli(["report", cliFile]);
    assert.equal(code, 2);
    assert.match(stderr, /no runs yet/);
    assert.match(stderr, /prolearn run/);
  });

  test("--open starts xdg-open with the report, or says that none is available", async () => {
    const { dir, file, cliFile } = cliProject();
    const { result } = await runDemo(file);
    const bin = path.join(dir, "bin");
    mkdirSync(bin);
    const log = path.join(dir, "opened.txt");
    writeFileSync(path.join(bin, "xdg-open"), `#!/bin/sh\necho "$1" > "${log}"\n`);
    chmodSync(path.join(bin, "xdg-open"), 0o755);
    const savedPath = process.env.PATH;
    try {
      process.env.PATH = bin;
      const opened = await cli(["report", cliFile, "--open"]);
      assert.equal(opened.code, 0, opened.stderr);
      assert.match(opened.stderr, /opened with xdg-open/);
      for (let i = 0; i < 50 && !existsSync(log); i++) await new Promise((r) => setTimeout(r, 50));
      assert.equal(readFileSync(log, "utf8").trim(), result.report);
      process.env.PATH = path.join(dir, "data");
      const none = await cli(["report", cliFile, "--open"]);
      assert.equal(none.code, 0);
      assert.equal(none.stdout.trim(), result.report);
      assert.match(none.stderr, /neither xdg-open nor open is on PATH; open .* in a browser/);
    } finally {
      process.env.PATH = savedPath;
    }
  });
});
