import { chmodSync, cpSync, existsSync, mkdirSync, readFileSync, readdirSync, renameSync, rmSync, statSync, writeFileSync } from "node:fs";
import path from "node:path";
import type Database from "better-sqlite3";
import { ArtifactError, UsageError } from "../errors.js";
import { asCatalogError, CATALOG_FILE, markCatalog, openCatalogDatabase } from "../pipeline/catalog.js";
import {
  ARTIFACT_DATA_FILES,
  assertArtifactIntact,
  readArtifactManifest,
  readPrototypesFile,
  verifyArtifactDir,
  type ArtifactManifest,
  type VerifyReport,
} from "./artifact.js";

/**
 * The artifact registry: versions of published prototype spaces per pipeline name, kept in the
 * workdir catalog (SQLite). Folders are content-addressed under
 * `<workdir>/artifacts/prototypes/<digest>/`, written once and made read-only; the registry row
 * keeps the manifest text so tampering with any file, the manifest included, is detectable.
 */
export interface ArtifactVersion {
  name: string;
  version: number;
  digest: string;
  path: string;
  manifest: ArtifactManifest;
  created: string;
  aliases: string[];
}

export interface AliasEvent {
  name: string;
  alias: string;
  version: number;
  previousVersion: number | null;
  changed: string;
}

export interface PublishResult extends ArtifactVersion {
  /** False when identical content was already registered under this name (no new version). */
  isNew: boolean;
}

type Db = Database.Database;

const SCHEMA = `
CREATE TABLE IF NOT EXISTS artifact_versions (
  name TEXT NOT NULL,
  version INTEGER NOT NULL,
  digest TEXT NOT NULL,
  path TEXT NOT NULL,
  manifest TEXT NOT NULL,
  created TEXT NOT NULL,
  PRIMARY KEY (name, version),
  UNIQUE (name, digest)
);
CREATE TABLE IF NOT EXISTS artifact_aliases (
  name TEXT NOT NULL,
  alias TEXT NOT NULL,
  version INTEGER NOT NULL,
  updated TEXT NOT NULL,
  PRIMARY KEY (name, alias)
);
CREATE TABLE IF NOT EXISTS artifact_alias_history (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  name TEXT NOT NULL,
  alias TEXT NOT NULL,
  version INTEGER NOT NULL,
  previous_version INTEGER,
  changed TEXT NOT NULL
);
`;

interface VersionRow {
  name: string;
  version: number;
  digest: string;
  path: string;
  manifest: string;
  created: string;
}

export { CATALOG_FILE };

export class ArtifactRegistry {
  readonly db: Db;
  readonly workdir: string;
  private readonly ownsDb: boolean;

  /** Uses an open catalog database (e.g. the pipeline Catalog's `.db`), creating the registry tables if needed. */
  constructor(db: Db, workdir: string, options: { ownsDb?: boolean } = {}) {
    this.db = db;
    this.workdir = path.resolve(workdir);
    this.ownsDb = options.ownsDb ?? false;
    db.exec(SCHEMA);
  }

  /** Opens (or creates) `<workdir>/catalog.sqlite` in WAL mode. */
  static open(workdir: string): ArtifactRegistry {
    // Lost or damaged catalogs are refused here as in Catalog (CatalogError, naming the recovery).
    const db = openCatalogDatabase(workdir);
    try {
      const registry = new ArtifactRegistry(db, workdir, { ownsDb: true });
      markCatalog(workdir);
      return registry;
    } catch (error) {
      db.close();
      throw asCatalogError(error, path.join(workdir, CATALOG_FILE)) ?? error;
    }
  }

  close(): void {
    if (this.ownsDb) this.db.close();
  }

  get artifactsRoot(): string {
    return path.join(this.workdir, "artifacts", "prototypes");
  }

  /**
   * Copies a verified artifact folder into the content-addressed store (once) and registers it
   * as the next version of `name`, unless this name already has that digest.
   */
  async publish(name: string, sourceDir: string): Promise<PublishResult> {
    const manifest = await assertArtifactIntact(sourceDir);
    const digest = manifest.digest;
    const target = path.join(this.artifactsRoot, digest);
    if (existsSync(target)) {
      const report = await verifyArtifactDir(target, digest);
      if (!report.ok) {
        throw new ArtifactError(`the published copy of ${digest.slice(0, 12)} was tampered with: ${report.problems.join("; ")}`, {
          location: { file: target },
          hint: `it is never overwritten in place: move ${target} away (keep it for inspection) and run again to republish`,
        });
      }
    } else {
      mkdirSync(this.artifactsRoot, { recursive: true });
      const staging = path.join(this.artifactsRoot, `.staging-${digest}-${process.pid}-${Date.now()}`);
      mkdirSync(staging);
      for (const file of [...ARTIFACT_DATA_FILES, "manifest.json"]) {
        cpSync(path.join(sourceDir, file), path.join(staging, file));
        chmodSync(path.join(staging, file), 0o444);
      }
      chmodSync(staging, 0o555);
      try {
        renameSync(staging, target);
      } catch (error) {
        // Another publisher won the race with the same content: theirs is identical by digest.
        chmodSync(staging, 0o755);
        rmSync(staging, { recursive: true, force: true });
        if (!existsSync(target)) throw error;
      }
    }
    const manifestText = readFileSync(path.join(target, "manifest.json"), "utf8");
    const storedManifest = JSON.parse(manifestText) as ArtifactManifest;
    const insert = this.db.transaction((): { version: number; isNew: boolean; created: string } => {
      const existing = this.db.prepare("SELECT version, created FROM artifact_versions WHERE name = ? AND digest = ?").get(name, digest) as
        | { version: number; created: string }
        | undefined;
      if (existing) return { version: existing.version, isNew: false, created: existing.created };
      const last = this.db.prepare("SELECT MAX(version) AS v FROM artifact_versions WHERE name = ?").get(name) as { v: number | null };
      const version = (last.v ?? 0) + 1;
      const created = new Date().toISOString();
      this.db
        .prepare("INSERT INTO artifact_versions (name, version, digest, path, manifest, created) VALUES (?, ?, ?, ?, ?, ?)")
        .run(name, version, digest, path.relative(this.workdir, target), manifestText, created);
      return { version, isNew: true, created };
    });
    const { version, isNew, created } = insert.immediate();
    return { name, version, digest, path: target, manifest: storedManifest, created, aliases: this.aliasesOf(name, version), isNew };
  }

  /**
   * Registers again every artifact folder under `artifacts/prototypes/` that the registry does not
   * list (after `prolearn catalog rebuild`): each folder is verified against its manifest and its
   * own name (the digest) first; its pipeline name comes from the manifest's lineage. Versions are
   * numbered after those already registered, oldest folder first. Aliases cannot be recovered
   * this way. Tampered folders are listed, not registered.
   */
  async registerFromManifests(): Promise<{ registered: { name: string; version: number; digest: string }[]; skipped: { dir: string; problems: string[] }[] }> {
    const registered: { name: string; version: number; digest: string }[] = [];
    const skipped: { dir: string; problems: string[] }[] = [];
    if (!existsSync(this.artifactsRoot)) return { registered, skipped };
    const folders = readdirSync(this.artifactsRoot)
      .filter((entry) => !entry.startsWith("."))
      .map((entry) => ({ dir: path.join(this.artifactsRoot, entry), digest: entry, mtimeMs: statSync(path.join(this.artifactsRoot, entry)).mtimeMs }))
      .sort((a, b) => a.mtimeMs - b.mtimeMs || a.digest.localeCompare(b.digest));
    for (const folder of folders) {
      const report = await verifyArtifactDir(folder.dir, folder.digest);
      if (!report.ok) {
        skipped.push({ dir: folder.dir, problems: report.problems });
        continue;
      }
      const manifestText = readFileSync(path.join(folder.dir, "manifest.json"), "utf8");
      const manifest = JSON.parse(manifestText) as ArtifactManifest;
      const name = manifest.lineage?.pipeline;
      if (typeof name !== "string" || !name) {
        skipped.push({ dir: folder.dir, problems: ["manifest.json: lineage.pipeline (the name to register it under) is missing"] });
        continue;
      }
      const insert = this.db.transaction((): number | undefined => {
        if (this.db.prepare("SELECT 1 FROM artifact_versions WHERE name = ? AND digest = ?").get(name, folder.digest)) return undefined;
        const last = this.db.prepare("SELECT MAX(version) AS v FROM artifact_versions WHERE name = ?").get(name) as { v: number | null };
        const version = (last.v ?? 0) + 1;
        const created = manifest.created ?? new Date(folder.mtimeMs).toISOString();
        this.db
          .prepare("INSERT INTO artifact_versions (name, version, digest, path, manifest, created) VALUES (?, ?, ?, ?, ?, ?)")
          .run(name, version, folder.digest, path.relative(this.workdir, folder.dir), manifestText, created);
        return version;
      });
      const version = insert.immediate();
      if (version !== undefined) registered.push({ name, version, digest: folder.digest });
    }
    return { registered, skipped };
  }

  list(name?: string): ArtifactVersion[] {
    const rows = (
      name
        ? this.db.prepare("SELECT * FROM artifact_versions WHERE name = ? ORDER BY version").all(name)
        : this.db.prepare("SELECT * FROM artifact_versions ORDER BY name, version").all()
    ) as VersionRow[];
    return rows.map((r) => this.toVersion(r));
  }

  /**
   * `NAME` (latest), `NAME@VERSION`, `NAME@ALIAS`, or a digest (or a unique prefix of at least
   * 8 characters).
   */
  resolve(ref: string): ArtifactVersion {
    const at = ref.lastIndexOf("@");
    if (at < 0) {
      const latest = this.db.prepare("SELECT * FROM artifact_versions WHERE name = ? ORDER BY version DESC LIMIT 1").get(ref) as VersionRow | undefined;
      if (latest) return this.toVersion(latest);
      if (/^[0-9a-f]{8,64}$/.test(ref)) {
        const byDigest = this.db.prepare("SELECT * FROM artifact_versions WHERE digest LIKE ? ORDER BY name, version").all(`${ref}%`) as VersionRow[];
        const digests = new Set(byDigest.map((r) => r.digest));
        if (digests.size === 1) return this.toVersion(byDigest[0]!);
        if (digests.size > 1) throw new UsageError(`digest prefix ${ref} is ambiguous (${digests.size} artifacts)`, { hint: "give more characters" });
      }
      throw this.notFound(ref);
    }
    const name = ref.slice(0, at);
    const selector = ref.slice(at + 1);
    let version: number | undefined;
    if (/^\d+$/.test(selector)) version = Number(selector);
    else if (selector === "latest")
      version = (this.db.prepare("SELECT MAX(version) AS v FROM artifact_versions WHERE name = ?").get(name) as { v: number | null }).v ?? undefined;
    else
      version = (this.db.prepare("SELECT version FROM artifact_aliases WHERE name = ? AND alias = ?").get(name, selector) as { version: number } | undefined)
        ?.version;
    const row =
      version === undefined
        ? undefined
        : (this.db.prepare("SELECT * FROM artifact_versions WHERE name = ? AND version = ?").get(name, version) as VersionRow | undefined);
    if (!row) throw this.notFound(ref);
    return this.toVersion(row);
  }

  /** Points `alias` at NAME@VERSION (moving it if it exists) and records the move. */
  promote(ref: string, alias: string): AliasEvent {
    if (!/^[A-Za-z][A-Za-z0-9._-]*$/.test(alias) || alias === "latest") {
      throw new UsageError(`alias "${alias}" is not allowed`, { hint: "start with a letter; use letters, digits, '.', '_' or '-'; 'latest' is reserved" });
    }
    const target = this.resolve(ref);
    const changed = new Date().toISOString();
    const run = this.db.transaction((): AliasEvent => {
      const previous = this.db.prepare("SELECT version FROM artifact_aliases WHERE name = ? AND alias = ?").get(target.name, alias) as
        | { version: number }
        | undefined;
      this.db
        .prepare(
          "INSERT INTO artifact_aliases (name, alias, version, updated) VALUES (?, ?, ?, ?) ON CONFLICT(name, alias) DO UPDATE SET version = excluded.version, updated = excluded.updated",
        )
        .run(target.name, alias, target.version, changed);
      this.db
        .prepare("INSERT INTO artifact_alias_history (name, alias, version, previous_version, changed) VALUES (?, ?, ?, ?, ?)")
        .run(target.name, alias, target.version, previous?.version ?? null, changed);
      return { name: target.name, alias, version: target.version, previousVersion: previous?.version ?? null, changed };
    });
    return run.immediate();
  }

  aliasHistory(name: string, alias?: string): AliasEvent[] {
    const rows = (
      alias
        ? this.db.prepare("SELECT * FROM artifact_alias_history WHERE name = ? AND alias = ? ORDER BY seq").all(name, alias)
        : this.db.prepare("SELECT * FROM artifact_alias_history WHERE name = ? ORDER BY seq").all(name)
    ) as { name: string; alias: string; version: number; previous_version: number | null; changed: string }[];
    return rows.map((r) => ({ name: r.name, alias: r.alias, version: r.version, previousVersion: r.previous_version, changed: r.changed }));
  }

  /** Recomputes the digests of one version (or of every registered version). */
  async verify(ref?: string): Promise<(VerifyReport & { name: string; version: number })[]> {
    const targets = ref ? [this.resolve(ref)] : this.list();
    const reports = [];
    for (const v of targets) {
      const report = await verifyArtifactDir(v.path, v.digest);
      const manifestFile = path.join(v.path, "manifest.json");
      if (existsSync(manifestFile)) {
        const stored = (this.db.prepare("SELECT manifest FROM artifact_versions WHERE name = ? AND version = ?").get(v.name, v.version) as { manifest: string })
          .manifest;
        if (readFileSync(manifestFile, "utf8") !== stored) report.problems.push("manifest.json: bytes differ from the copy registered in the catalog");
      }
      if (existsSync(v.path)) {
        const extra = readdirSync(v.path).filter((f) => ![...ARTIFACT_DATA_FILES, "manifest.json"].includes(f as never));
        for (const f of extra) report.problems.push(`${f}: unexpected file in the artifact folder`);
      } else report.problems.push(`folder ${v.path} is missing`);
      report.ok = report.problems.length === 0;
      reports.push({ ...report, name: v.name, version: v.version });
    }
    return reports;
  }

  /** Verified path of a version, for loaders (PrototypeSpace.load also re-verifies). */
  async pathOf(ref: string): Promise<ArtifactVersion> {
    const v = this.resolve(ref);
    const [report] = await this.verify(`${v.name}@${v.version}`);
    if (!report!.ok)
      throw new ArtifactError(`${v.name}@${v.version} failed verification: ${report!.problems.join("; ")}`, {
        location: { file: v.path },
        hint: "rerun the prototypes stage to publish a fresh copy",
      });
    return v;
  }

  /**
   * Writes a folder another program can load without prolearn: Q.npy and R.npy (float32, P x dim,
   * NumPy format 1.0), prototypes.parquet and manifest.json.
   */
  async export(ref: string, outDir: string): Promise<{ dir: string; files: string[]; version: ArtifactVersion }> {
    // Checked before the artifact is resolved and verified, so the message names the path at fault.
    for (let at = outDir; ; at = path.dirname(at)) {
      if (existsSync(at)) {
        if (!statSync(at).isDirectory())
          throw new UsageError(`export folder ${outDir}: ${at === outDir ? "it" : at} is a file, not a folder`, {
            hint: "choose a new folder; exports never overwrite",
          });
        break;
      }
      if (path.dirname(at) === at) break;
    }
    const v = await this.pathOf(ref);
    if (existsSync(outDir) && readdirSync(outDir).length > 0)
      throw new UsageError(`export folder ${outDir} is not empty`, { hint: "choose a new folder; exports never overwrite" });
    try {
      mkdirSync(outDir, { recursive: true });
    } catch (error) {
      throw new UsageError(`cannot create the export folder ${outDir}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`, {
        hint: "choose a folder whose parents are folders you can write to",
      });
    }
    const { queries, responses, dim, count } = await readPrototypesFile(path.join(v.path, "prototypes.parquet"));
    writeFileSync(path.join(outDir, "Q.npy"), encodeNpy(queries, [count, dim]));
    writeFileSync(path.join(outDir, "R.npy"), encodeNpy(responses, [count, dim]));
    cpSync(path.join(v.path, "prototypes.parquet"), path.join(outDir, "prototypes.parquet"));
    cpSync(path.join(v.path, "manifest.json"), path.join(outDir, "manifest.json"));
    for (const f of readdirSync(outDir)) chmodSync(path.join(outDir, f), statSync(path.join(outDir, f)).mode | 0o200);
    return { dir: outDir, files: ["Q.npy", "R.npy", "prototypes.parquet", "manifest.json"], version: v };
  }

  private aliasesOf(name: string, version: number): string[] {
    return (this.db.prepare("SELECT alias FROM artifact_aliases WHERE name = ? AND version = ? ORDER BY alias").all(name, version) as { alias: string }[]).map(
      (r) => r.alias,
    );
  }

  private toVersion(row: VersionRow): ArtifactVersion {
    return {
      name: row.name,
      version: row.version,
      digest: row.digest,
      path: path.resolve(this.workdir, row.path),
      manifest: JSON.parse(row.manifest) as ArtifactManifest,
      created: row.created,
      aliases: this.aliasesOf(row.name, row.version),
    };
  }

  private notFound(ref: string): ArtifactError {
    const names = (this.db.prepare("SELECT DISTINCT name FROM artifact_versions ORDER BY name").all() as { name: string }[]).map((r) => r.name);
    return new ArtifactError(`no artifact ${ref} in ${path.join(this.workdir, CATALOG_FILE)}`, {
      hint: names.length
        ? `registered: ${names.join(", ")} (use NAME, NAME@VERSION or NAME@ALIAS)`
        : "no artifact is registered yet: run a pipeline with a prototypes stage",
    });
  }
}

/** NumPy .npy version 1.0, little-endian float32, C order. */
export function encodeNpy(values: Float32Array, shape: number[]): Buffer {
  const shapeText = shape.length === 1 ? `(${shape[0]},)` : `(${shape.join(", ")})`;
  let header = `{'descr': '<f4', 'fortran_order': False, 'shape': ${shapeText}, }`;
  const preamble = 10;
  const padding = 64 - ((preamble + header.length + 1) % 64);
  header = header + " ".repeat(padding % 64) + "\n";
  const out = Buffer.alloc(preamble + header.length + values.byteLength);
  out.write("\x93NUMPY", 0, "latin1");
  out[6] = 1;
  out[7] = 0;
  out.writeUInt16LE(header.length, 8);
  out.write(header, preamble, "latin1");
  const data = Buffer.from(values.buffer, values.byteOffset, values.byteLength);
  if (new Uint8Array(new Uint16Array([1]).buffer)[0] !== 1) throw new ArtifactError("big-endian hosts are not supported for .npy export");
  data.copy(out, preamble + header.length);
  return out;
}

/** Reads a float32 .npy written by encodeNpy (or NumPy) back: for round-trip tests and consumers in JS. */
export function decodeNpy(bytes: Uint8Array): { values: Float32Array; shape: number[] } {
  const buf = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (buf.toString("latin1", 0, 6) !== "\x93NUMPY") throw new ArtifactError("not a .npy file (bad magic)");
  const major = buf[6]!;
  const headerLength = major === 1 ? buf.readUInt16LE(8) : buf.readUInt32LE(8);
  const start = major === 1 ? 10 : 12;
  const header = buf.toString("latin1", start, start + headerLength);
  if (!header.includes("'descr': '<f4'") || header.includes("'fortran_order': True")) throw new ArtifactError(`unsupported .npy header ${header.trim()}`);
  const shape = (/'shape': \(([^)]*)\)/.exec(header)?.[1] ?? "")
    .split(",")
    .map((s) => s.trim())
    .filter(Boolean)
    .map(Number);
  const offset = start + headerLength;
  const values = new Float32Array(buf.buffer.slice(buf.byteOffset + offset, buf.byteOffset + buf.byteLength));
  return { values, shape };
}

/** The loaded manifest of an artifact folder given as a path (for CLI commands that accept either). */
export function isArtifactFolder(candidate: string): boolean {
  return existsSync(path.join(candidate, "manifest.json")) && existsSync(path.join(candidate, "prototypes.parquet"));
}

export { readArtifactManifest };
