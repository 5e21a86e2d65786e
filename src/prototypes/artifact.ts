import { existsSync, readFileSync } from "node:fs";
import { writeFile } from "node:fs/promises";
import path from "node:path";
import { Table, Utf8, makeVector, vectorFromArray } from "apache-arrow";
import { ArtifactError } from "../errors.js";
import { embeddingVector, readTable } from "../io/tables.js";
import { PROTOTYPES_TABLE } from "./tables.js";
import { canonicalJson, hashJson, sha256File } from "../util/hash.js";
import type { Assignment, Prototypes } from "./build.js";

/**
 * The prototype-space artifact: a folder of `prototypes.parquet`, `assignments.parquet` and
 * `manifest.json`. The manifest lists each data file's SHA-256 and the lineage; the artifact's
 * digest is the hash of the canonical JSON of {format, files, lineage}. The manifest holds no
 * time: it is content-addressed, so the same content must give the same bytes (a rerun, or a
 * republish after a tampered copy was moved away, matches the registered copy byte for byte).
 * When a version was registered lives in the catalog (`artifact_versions.created`).
 */
export const ARTIFACT_FORMAT = "prolearn.prototypes/1";
export const ARTIFACT_DATA_FILES = ["prototypes.parquet", "assignments.parquet"] as const;

export interface Lineage {
  pipeline: string;
  datasetFingerprint: string | null;
  upstream: Record<string, string>;
  encoder: { id: string | null; dim: number; digest: string | null };
  params: Record<string, unknown>;
  seed: number;
  packageVersion: string;
  counts: Record<string, number>;
}

export interface ArtifactManifest {
  format: string;
  digest: string;
  files: Record<string, string>;
  lineage: Lineage;
  /** Only in manifests written by older versions; never part of the digest, no longer written. */
  created?: string;
}

export function manifestDigest(manifest: Pick<ArtifactManifest, "format" | "files" | "lineage">): string {
  return hashJson({ format: manifest.format, files: manifest.files, lineage: manifest.lineage });
}

export async function writeArtifactManifest(dir: string, lineage: Lineage): Promise<ArtifactManifest> {
  const files: Record<string, string> = {};
  for (const name of ARTIFACT_DATA_FILES) files[name] = await sha256File(path.join(dir, name));
  const body = { format: ARTIFACT_FORMAT, files, lineage };
  const manifest: ArtifactManifest = { ...body, digest: manifestDigest(body) };
  await writeFile(path.join(dir, "manifest.json"), JSON.stringify(JSON.parse(canonicalJson(manifest)), null, 2) + "\n");
  return manifest;
}

export function readArtifactManifest(dir: string): ArtifactManifest {
  const file = path.join(dir, "manifest.json");
  if (!existsSync(file))
    throw new ArtifactError(`no manifest.json in ${dir}`, { location: { file }, hint: "point at a prototype-space artifact folder (prolearn artifacts list)" });
  let manifest: ArtifactManifest;
  try {
    manifest = JSON.parse(readFileSync(file, "utf8")) as ArtifactManifest;
  } catch (error) {
    throw new ArtifactError(`manifest.json is not valid JSON: ${(error as Error).message}`, { location: { file } });
  }
  if (manifest.format !== ARTIFACT_FORMAT || typeof manifest.digest !== "string" || typeof manifest.files !== "object") {
    throw new ArtifactError(`manifest.json is not a ${ARTIFACT_FORMAT} manifest`, { location: { file } });
  }
  return manifest;
}

export interface VerifyReport {
  dir: string;
  ok: boolean;
  digest: string | null;
  problems: string[];
}

/** Recomputes every file digest and the manifest digest; lists each mismatch instead of stopping at the first. */
export async function verifyArtifactDir(dir: string, expectedDigest?: string): Promise<VerifyReport> {
  const problems: string[] = [];
  let manifest: ArtifactManifest;
  try {
    manifest = readArtifactManifest(dir);
  } catch (error) {
    return { dir, ok: false, digest: null, problems: [(error as Error).message] };
  }
  for (const name of ARTIFACT_DATA_FILES) {
    const file = path.join(dir, name);
    const recorded = manifest.files[name];
    if (!recorded) problems.push(`${name}: not listed in manifest.json`);
    else if (!existsSync(file)) problems.push(`${name}: missing`);
    else {
      const actual = await sha256File(file);
      if (actual !== recorded) problems.push(`${name}: sha256 ${actual.slice(0, 12)}... does not match the recorded ${recorded.slice(0, 12)}...`);
    }
  }
  const recomputed = manifestDigest(manifest);
  if (recomputed !== manifest.digest)
    problems.push(
      `manifest.json: content digest ${recomputed.slice(0, 12)}... does not match its recorded digest ${manifest.digest.slice(0, 12)}... (manifest edited)`,
    );
  if (expectedDigest && manifest.digest !== expectedDigest)
    problems.push(`manifest.json: digest ${manifest.digest.slice(0, 12)}... is not the registered ${expectedDigest.slice(0, 12)}...`);
  return { dir, ok: problems.length === 0, digest: manifest.digest, problems };
}

export async function assertArtifactIntact(dir: string, expectedDigest?: string): Promise<ArtifactManifest> {
  const report = await verifyArtifactDir(dir, expectedDigest);
  if (!report.ok) {
    throw new ArtifactError(`artifact ${dir} failed verification: ${report.problems.join("; ")}`, {
      location: { file: dir },
      hint: "the published files were changed after publishing; rerun the prototypes stage (artifacts are never repaired in place)",
    });
  }
  return readArtifactManifest(dir);
}

export function prototypesTable(p: Prototypes, sampleIds: (string | null)[]): Table {
  return new Table({
    prototype_id: makeVector(Int32Array.from({ length: p.cluster.length }, (_, i) => i)),
    cluster: makeVector(p.cluster),
    subcluster: makeVector(p.subcluster),
    sample_id: vectorFromArray(
      Array.from(p.sampleIndex, (i) => (i >= 0 ? sampleIds[i]! : null)),
      new Utf8(),
    ),
    size: makeVector(p.size),
    query: embeddingVector(p.queries, p.dim, undefined, false),
    response: embeddingVector(p.responses, p.dim, undefined, false),
  });
}

export function assignmentsTable(assignments: Assignment[], sampleIds: string[]): Table {
  return new Table({
    id: vectorFromArray(
      assignments.map((a) => sampleIds[a.sample]!),
      new Utf8(),
    ),
    cluster: makeVector(Int32Array.from(assignments, (a) => a.cluster)),
    probability: makeVector(Float32Array.from(assignments, (a) => a.probability)),
    subcluster: makeVector(Int32Array.from(assignments, (a) => a.subcluster)),
  });
}

/** Reads the query and response halves of prototypes.parquet (and each prototype's cluster). */
export async function readPrototypesFile(
  file: string,
): Promise<{ queries: Float32Array; responses: Float32Array; dim: number; count: number; cluster: Int32Array }> {
  const table = await readTable(PROTOTYPES_TABLE, file, ["query", "response", "cluster"]);
  const { query, response } = table;
  if (query.dim !== response.dim) throw new ArtifactError(`query vectors are ${query.dim}-d, response vectors ${response.dim}-d`, { location: { file } });
  return { queries: query.values, responses: response.values, dim: query.dim, count: table.numRows, cluster: table.cluster };
}
