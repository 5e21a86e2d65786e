import { createHash } from "node:crypto";
import { EMBEDDINGS_TABLE } from "../embed/tables.js";
import { FILTERED_TABLE } from "../filter/tables.js";
import { SAMPLES_TABLE } from "../ingest/tables.js";
import { TableReader, readTable, withTable } from "../io/tables.js";
import { ASSIGNMENTS_TABLE, PROTOTYPES_TABLE } from "../prototypes/tables.js";
import type { Part, PrototypesPart, ProjectionPart, ReportOptions } from "./model.js";
import { type StageOutputs, guarded } from "./outputs.js";
import { fitPca2, project } from "./pca.js";
import { TRUTH_COLOR, thumbnailDataUri } from "./thumbnails.js";

interface PrototypeRow {
  prototypeId: number;
  cluster: number;
  subcluster: number;
  sampleId: string | null;
  size: number;
  response: Float32Array;
}

/** The prototype-space section: clusters and their members, a projection, a gallery of prototypes. */
export async function gatherPrototypes(outputs: StageOutputs, opts: ReportOptions): Promise<Part<PrototypesPart>> {
  const why = outputs.missing("prototypes");
  if (why) return { state: "absent", message: `${why} There is no prototype space to show.` };
  const prototypes = await readPrototypeRows(outputs.file("prototypes", "prototypes.parquet"));
  const assignment = new Map<string, number>();
  await withTable(ASSIGNMENTS_TABLE, outputs.file("prototypes", "assignments.parquet"), async (reader) => {
    for await (const { rows } of reader.slices(["id", "cluster"])) {
      for (let i = 0; i < rows.numRows; i++) assignment.set(rows.id[i]!, rows.cluster[i]!);
    }
  });
  const members = new Map<number, number>();
  for (const cluster of assignment.values()) members.set(cluster, (members.get(cluster) ?? 0) + 1);
  const protoCount = new Map<number, number>();
  for (const p of prototypes) protoCount.set(p.cluster, (protoCount.get(p.cluster) ?? 0) + 1);
  const clusterIds = [...new Set([...members.keys(), ...protoCount.keys()])].filter((c) => c >= 0).sort((a, b) => a - b);
  return {
    state: "ok",
    data: {
      prototypes: prototypes.length,
      clusters: clusterIds.map((cluster) => ({ cluster, members: members.get(cluster) ?? 0, prototypes: protoCount.get(cluster) ?? 0 })),
      ...noiseCounts(outputs.result.stages.find((s) => s.name === "prototypes")?.summary ?? {}, members.get(-1) ?? 0),
      assigned: assignment.size,
      projection: await guarded(() => gatherProjection(outputs, opts, assignment, prototypes)),
      gallery: await guarded(() => gatherGallery(outputs, opts, prototypes)),
    },
  };
}

/** The stage's own noise count (HDBSCAN's); noise given the nearest label is not -1 in assignments.parquet. */
function noiseCounts(summary: Record<string, unknown>, unassigned: number): { noise: number; noiseReassigned: number } {
  const counted = typeof summary.noise === "number" ? summary.noise : undefined;
  if (counted === undefined || counted < unassigned) return { noise: unassigned, noiseReassigned: 0 };
  // Dropped noise stays -1 in assignments.parquet; the rest was given the nearest label.
  return { noise: counted, noiseReassigned: counted - unassigned };
}

async function readPrototypeRows(file: string): Promise<PrototypeRow[]> {
  const table = await readTable(PROTOTYPES_TABLE, file, ["prototype_id", "cluster", "subcluster", "sample_id", "size", "response"]);
  const { dim, values } = table.response;
  return Array.from({ length: table.numRows }, (_, i) => ({
    prototypeId: table.prototype_id[i]!,
    cluster: table.cluster[i]!,
    subcluster: table.subcluster[i]!,
    sampleId: table.sample_id[i] ?? null,
    size: table.size[i]!,
    response: values.slice(i * dim, (i + 1) * dim),
  }));
}

/** Clustered reports' text embeddings (a sample of at most maxPoints) and the prototypes, on their first two principal components. */
async function gatherProjection(
  outputs: StageOutputs,
  opts: ReportOptions,
  assignment: Map<string, number>,
  prototypes: PrototypeRow[],
): Promise<Part<ProjectionPart>> {
  const why = outputs.missing("embed");
  if (why) return { state: "absent", message: `${why} The projection needs the text embeddings.` };
  return withTable(EMBEDDINGS_TABLE, outputs.file("embed", "embeddings.parquet"), async (reader) => {
    // Identical reports embed identically and would hide under one dot: one point per distinct
    // (embedding, label), counting the reports it stands for; sampling, if any, is over those points.
    const distinct = new Map<string, { id: string; cluster: number; row: Float32Array; count: number }>();
    let population = 0;
    for await (const { rows } of reader.slices(["id", "text_embedding"], 1024)) {
      const { values, dim, valid } = rows.text_embedding;
      for (let i = 0; i < rows.numRows; i++) {
        const id = rows.id[i]!;
        if (!valid[i] || !assignment.has(id)) continue;
        population++;
        const row = values.slice(i * dim, (i + 1) * dim);
        const cluster = assignment.get(id)!;
        const key = `${cluster}:${createHash("sha1").update(new Uint8Array(row.buffer)).digest("base64")}`;
        const seen = distinct.get(key);
        if (seen) seen.count++;
        else distinct.set(key, { id, cluster, row, count: 1 });
      }
    }
    const all = [...distinct.values()];
    const stride = Math.max(1, Math.ceil(all.length / opts.maxPoints));
    const kept = all.filter((_, i) => i % stride === 0);
    if (population < 2)
      return {
        state: "absent",
        message: `Only ${population} clustered report${population === 1 ? " has" : "s have"} a text embedding; a projection needs at least 2.`,
      };
    if (kept.length < 2) return { state: "absent", message: `All ${population} clustered reports have the same text embedding; there is nothing to project.` };
    const vectors = kept.map((k) => k.row);
    const pca = fitPca2(vectors, vectors[0]!.length);
    const points = kept.map((k) => {
      const [x, y] = project(pca, k.row);
      return { x, y, cluster: k.cluster, id: k.id, count: k.count };
    });
    const projected = prototypes
      .filter((p) => p.response.length === pca.dim)
      .map((p) => {
        const [x, y] = project(pca, p.response);
        return { x, y, cluster: p.cluster, id: p.prototypeId };
      });
    return { state: "ok", data: { points, prototypes: projected, explained: pca.explained, population } };
  });
}

/** One card per prototype (round-robin over clusters): its sample's thumbnail and report. */
async function gatherGallery(outputs: StageOutputs, opts: ReportOptions, prototypes: PrototypeRow[]): Promise<PrototypesPart["gallery"]> {
  const ordered = roundRobin(prototypes, opts.maxGallery).sort((a, b) => a.cluster - b.cluster || a.subcluster - b.subcluster || a.prototypeId - b.prototypeId);
  const wanted = new Set(ordered.map((p) => p.sampleId).filter((id): id is string => id !== null));
  const filtered = await filteredReports(outputs, wanted);
  const samples = outputs.missing("ingest") ? undefined : await TableReader.open(SAMPLES_TABLE, outputs.file("ingest", "samples.parquet"));
  try {
    const rowOf = new Map<string, number>();
    if (samples) {
      for await (const { offset, rows } of samples.slices(["id"])) {
        rows.id.forEach((id, i) => {
          if (wanted.has(id)) rowOf.set(id, offset + i);
        });
      }
    }
    const cards: Extract<PrototypesPart["gallery"], { state: "ok" }>["data"]["cards"] = [];
    for (const p of ordered) {
      let thumbnail = null;
      let report: string | null = p.sampleId ? (filtered.get(p.sampleId) ?? null) : null;
      const row = p.sampleId ? rowOf.get(p.sampleId) : undefined;
      if (samples && row !== undefined) {
        const one = await samples.read(["image", "mask", "report_normalized", "report_available"], { offset: row, limit: 1 });
        thumbnail = await thumbnailDataUri(one.image[0]!, [{ mask: one.mask[0]!, color: TRUTH_COLOR }], opts.thumbnailSize);
        // Only a report the run was allowed to use is shown (report_available); others stay hidden.
        if (report === null && one.report_available[0]) report = one.report_normalized[0] ?? null;
      }
      cards.push({ prototypeId: p.prototypeId, cluster: p.cluster, subcluster: p.subcluster, size: p.size, sampleId: p.sampleId, thumbnail, report });
    }
    return { state: "ok", data: { total: prototypes.length, cards } };
  } finally {
    samples?.close();
  }
}

/** The filtered report of each wanted sample, when the pipeline ran a filter stage. */
async function filteredReports(outputs: StageOutputs, wanted: Set<string>): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  const file = outputs.missing("filter") ? undefined : outputs.optionalFile("filter", "filtered.parquet");
  if (!file) return out;
  await withTable(FILTERED_TABLE, file, async (reader) => {
    for await (const { rows } of reader.slices(["id", "filtered_report"])) {
      rows.id.forEach((id, i) => {
        if (wanted.has(id)) out.set(id, rows.filtered_report[i]!);
      });
    }
  });
  return out;
}

/** Up to `limit` items taking one per cluster in turn, so every cluster shows in the gallery. */
function roundRobin<T extends { cluster: number; subcluster: number }>(items: readonly T[], limit: number): T[] {
  const byCluster = new Map<number, T[]>();
  for (const item of [...items].sort((a, b) => a.subcluster - b.subcluster)) {
    let list = byCluster.get(item.cluster);
    if (!list) byCluster.set(item.cluster, (list = []));
    list.push(item);
  }
  const queues = [...byCluster.entries()].sort((a, b) => a[0] - b[0]).map(([, list]) => list);
  const out: T[] = [];
  for (let round = 0; out.length < limit && queues.some((q) => q.length > round); round++) {
    for (const q of queues) if (q[round] && out.length < limit) out.push(q[round]!);
  }
  return out;
}
