import { closeSync, existsSync, mkdirSync, openSync, readdirSync, readSync, statSync, writeFileSync } from "node:fs";
import path from "node:path";
import Database from "better-sqlite3";
import type { StageWarning } from "./stage.js";
import { CatalogError, UsageError } from "../errors.js";
import type { FileStatCache } from "./file-digest.js";

export const CATALOG_FILE = "catalog.sqlite";
/**
 * Sidecar written next to the catalog once it holds its schema: a catalog that is later missing
 * or empty (0 bytes) was lost, not never created, and is reported instead of silently restarted.
 */
export const CATALOG_MARKER = "catalog.json";
const SQLITE_HEADER = "SQLite format 3\0";

export type StageStatus = "ran" | "cached" | "failed" | "running" | "skipped";

export interface RunRecord {
  id: string;
  pipeline: string;
  pipelineFile: string | null;
  startedAt: string;
  finishedAt: string | null;
  status: "running" | "ok" | "failed" | "abandoned";
  trigger: string;
  executor: string;
  pid: number;
  report: string | null;
  /** Why a run failed when no stage did (refused before or between stages): the error's text. */
  error: string | null;
}

export interface StageRunRecord {
  runId: string;
  stage: string;
  status: StageStatus;
  cacheKey: string | null;
  reason: string;
  startedAt: string;
  seconds: number | null;
  error: string | null;
  outputDigest: string | null;
  keyParts: string | null;
  /** The typed reasons behind `reason` (JSON in the catalog); empty for rows written before they were kept. */
  reasons: unknown[];
  /** Checks that did not pass; for a cached stage, those of the execution that produced its output. */
  warnings: StageWarning[];
}

export interface OutputRecord {
  cacheKey: string;
  stage: string;
  pipeline: string;
  digest: string;
  dir: string;
  files: Record<string, string>;
  summary: Record<string, unknown>;
  createdAt: string;
}

const SCHEMA = `
CREATE TABLE IF NOT EXISTS runs (
  id TEXT PRIMARY KEY,
  pipeline TEXT NOT NULL,
  pipeline_file TEXT,
  started_at TEXT NOT NULL,
  finished_at TEXT,
  status TEXT NOT NULL,
  trigger TEXT NOT NULL DEFAULT 'cli',
  executor TEXT NOT NULL DEFAULT 'in-process',
  pid INTEGER NOT NULL,
  report TEXT
);
CREATE INDEX IF NOT EXISTS runs_by_pipeline ON runs (pipeline, started_at);
CREATE TABLE IF NOT EXISTS stage_runs (
  run_id TEXT NOT NULL REFERENCES runs(id),
  stage TEXT NOT NULL,
  status TEXT NOT NULL,
  cache_key TEXT,
  reason TEXT NOT NULL,
  started_at TEXT NOT NULL,
  seconds REAL,
  error TEXT,
  output_digest TEXT,
  key_parts TEXT,
  reasons TEXT,
  warnings TEXT,
  PRIMARY KEY (run_id, stage)
);
CREATE TABLE IF NOT EXISTS outputs (
  cache_key TEXT PRIMARY KEY,
  stage TEXT NOT NULL,
  pipeline TEXT NOT NULL,
  digest TEXT NOT NULL,
  dir TEXT NOT NULL,
  files TEXT NOT NULL,
  summary TEXT NOT NULL,
  created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS file_stats (
  path TEXT PRIMARY KEY,
  size INTEGER NOT NULL,
  mtime_ms REAL NOT NULL,
  sha256 TEXT NOT NULL
);
`;

/**
 * The workdir's catalog: runs, stage executions (with why each ran), published outputs and a
 * stat cache for file hashing. SQLite in WAL mode with a busy timeout, so several processes
 * (two CLI runs, queue workers) can share one workdir; every multi-row change is a transaction.
 */
export class Catalog {
  readonly db: Database.Database;
  readonly file: string;

  constructor(workdir: string, options: { recovering?: boolean } = {}) {
    this.file = path.join(workdir, CATALOG_FILE);
    this.db = openCatalogDatabase(workdir, { timeoutMs: 30_000, recovering: options.recovering });
    try {
      this.db.pragma("synchronous = NORMAL");
      this.db.pragma("foreign_keys = ON");
      this.db.exec(SCHEMA);
      this.migrate();
      markCatalog(workdir);
    } catch (error) {
      this.db.close();
      throw asCatalogError(error, this.file) ?? error;
    }
  }

  /**
   * Columns added since the first catalogs: a catalog written by an older version gains them
   * (NULL for its old rows, read as "none"), so old workdirs keep working.
   */
  private migrate(): void {
    const columns = new Set((this.db.prepare("PRAGMA table_info(stage_runs)").all() as { name: string }[]).map((c) => c.name));
    for (const [column, type] of [
      ["reasons", "TEXT"],
      ["warnings", "TEXT"],
    ] as const) {
      if (!columns.has(column)) {
        try {
          this.db.exec(`ALTER TABLE stage_runs ADD COLUMN ${column} ${type}`);
        } catch (error) {
          // Another process migrated it between our look and our change.
          if (!/duplicate column/i.test((error as Error).message)) throw error;
        }
      }
    }
    // Runs keep the error that stopped them when no stage failed (refused before or between stages).
    const runColumns = new Set((this.db.prepare("PRAGMA table_info(runs)").all() as { name: string }[]).map((c) => c.name));
    if (!runColumns.has("error")) {
      try {
        this.db.exec("ALTER TABLE runs ADD COLUMN error TEXT");
      } catch (error) {
        if (!/duplicate column/i.test((error as Error).message)) throw error;
      }
    }
  }

  close(): void {
    this.db.close();
  }

  startRun(run: { id: string; pipeline: string; pipelineFile?: string; trigger?: string; executor?: string }): void {
    this.db
      .prepare("INSERT INTO runs (id, pipeline, pipeline_file, started_at, status, trigger, executor, pid) VALUES (?, ?, ?, ?, 'running', ?, ?, ?)")
      .run(run.id, run.pipeline, run.pipelineFile ?? null, new Date().toISOString(), run.trigger ?? "cli", run.executor ?? "in-process", process.pid);
  }

  finishRun(id: string, status: "ok" | "failed", report?: string, error?: string): void {
    this.db
      .prepare("UPDATE runs SET finished_at = ?, status = ?, report = COALESCE(?, report), error = COALESCE(?, error) WHERE id = ?")
      .run(new Date().toISOString(), status, report ?? null, error ?? null, id);
  }

  setRunReport(id: string, report: string): void {
    this.db.prepare("UPDATE runs SET report = ? WHERE id = ?").run(report, id);
  }

  recordStage(record: StageRunRecord): void {
    this.db
      .prepare(
        `INSERT INTO stage_runs (run_id, stage, status, cache_key, reason, started_at, seconds, error, output_digest, key_parts, reasons, warnings)
         VALUES (@runId, @stage, @status, @cacheKey, @reason, @startedAt, @seconds, @error, @outputDigest, @keyParts, @reasons, @warnings)
         ON CONFLICT (run_id, stage) DO UPDATE SET status = excluded.status, cache_key = excluded.cache_key, reason = excluded.reason,
           seconds = excluded.seconds, error = excluded.error, output_digest = excluded.output_digest, key_parts = excluded.key_parts,
           reasons = excluded.reasons, warnings = excluded.warnings`,
      )
      .run({ ...record, reasons: JSON.stringify(record.reasons), warnings: record.warnings.length ? JSON.stringify(record.warnings) : null });
  }

  recordOutput(output: OutputRecord): void {
    this.db
      .prepare(
        `INSERT INTO outputs (cache_key, stage, pipeline, digest, dir, files, summary, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)
         ON CONFLICT (cache_key) DO UPDATE SET digest = excluded.digest, dir = excluded.dir, files = excluded.files, summary = excluded.summary`,
      )
      .run(
        output.cacheKey,
        output.stage,
        output.pipeline,
        output.digest,
        output.dir,
        JSON.stringify(output.files),
        JSON.stringify(output.summary),
        output.createdAt,
      );
  }

  getOutput(cacheKey: string): OutputRecord | undefined {
    const row = this.db.prepare("SELECT * FROM outputs WHERE cache_key = ?").get(cacheKey) as Record<string, string> | undefined;
    return row ? rowToOutput(row) : undefined;
  }

  forgetOutput(cacheKey: string): void {
    this.db.prepare("DELETE FROM outputs WHERE cache_key = ?").run(cacheKey);
  }

  /** The most recent successful or cached execution of a stage in a pipeline, for "why it runs". */
  lastStageRun(pipeline: string, stage: string): StageRunRecord | undefined {
    const row = this.db
      .prepare(
        `SELECT s.* FROM stage_runs s JOIN runs r ON r.id = s.run_id
         WHERE r.pipeline = ? AND s.stage = ? AND s.status IN ('ran', 'cached') ORDER BY s.started_at DESC LIMIT 1`,
      )
      .get(pipeline, stage) as Record<string, unknown> | undefined;
    return row ? rowToStageRun(row) : undefined;
  }

  /** The warnings of the execution that produced this output (what a cached rerun repeats). */
  producerWarnings(stage: string, cacheKey: string): StageWarning[] {
    const row = this.db
      .prepare("SELECT warnings FROM stage_runs WHERE stage = ? AND cache_key = ? AND status = 'ran' ORDER BY started_at DESC LIMIT 1")
      .get(stage, cacheKey) as { warnings: string | null } | undefined;
    return parseJsonArray(row?.warnings) as StageWarning[];
  }

  /** Latest published output of a stage for a pipeline (used by `inspect`, `report`). */
  latestOutput(pipeline: string, stage: string): OutputRecord | undefined {
    const row = this.db
      .prepare(
        `SELECT o.* FROM stage_runs s JOIN runs r ON r.id = s.run_id JOIN outputs o ON o.cache_key = s.cache_key
         WHERE r.pipeline = ? AND s.stage = ? AND s.status IN ('ran', 'cached') ORDER BY s.started_at DESC LIMIT 1`,
      )
      .get(pipeline, stage) as Record<string, string> | undefined;
    return row ? rowToOutput(row) : undefined;
  }

  /**
   * Per stage, its execution (ran or cached) in the latest successful run of the pipeline that
   * included it: the "current" outputs (`prolearn outputs`, the workdir's stable pointers, gc).
   */
  currentStageRuns(pipeline: string): StageRunRecord[] {
    const rows = this.db
      .prepare(
        `SELECT s.* FROM stage_runs s JOIN runs r ON r.id = s.run_id
         WHERE r.pipeline = ? AND r.status = 'ok' AND s.status IN ('ran', 'cached')
           AND r.started_at = (SELECT max(r2.started_at) FROM stage_runs s2 JOIN runs r2 ON r2.id = s2.run_id
                               WHERE r2.pipeline = r.pipeline AND r2.status = 'ok' AND s2.stage = s.stage AND s2.status IN ('ran', 'cached'))
         ORDER BY s.rowid`,
      )
      .all(pipeline) as Record<string, unknown>[];
    return rows.map(rowToStageRun);
  }

  /** Names of the pipelines with at least one run in this workdir. */
  pipelines(): string[] {
    return (this.db.prepare("SELECT DISTINCT pipeline FROM runs ORDER BY pipeline").all() as { pipeline: string }[]).map((r) => r.pipeline);
  }

  /** Which run used which stored output (ran or cached), for `gc`. */
  outputReferences(): { runId: string; pipeline: string; stage: string; cacheKey: string }[] {
    return this.db
      .prepare(
        `SELECT s.run_id AS runId, r.pipeline AS pipeline, s.stage AS stage, s.cache_key AS cacheKey FROM stage_runs s JOIN runs r ON r.id = s.run_id
         WHERE s.cache_key IS NOT NULL AND s.status IN ('ran', 'cached')`,
      )
      .all() as { runId: string; pipeline: string; stage: string; cacheKey: string }[];
  }

  /** Forgets a run's report file (removed by `gc`; `prolearn report` writes it anew on demand). */
  clearRunReport(id: string): void {
    this.db.prepare("UPDATE runs SET report = NULL WHERE id = ?").run(id);
  }

  /** Every published output the catalog knows, for `gc`. */
  allOutputs(): OutputRecord[] {
    return (this.db.prepare("SELECT * FROM outputs").all() as Record<string, string>[]).map(rowToOutput);
  }

  runs(options: { pipeline?: string; limit?: number } = {}): RunRecord[] {
    const rows = (
      options.pipeline
        ? this.db.prepare("SELECT * FROM runs WHERE pipeline = ? ORDER BY started_at DESC LIMIT ?").all(options.pipeline, options.limit ?? 10)
        : this.db.prepare("SELECT * FROM runs ORDER BY started_at DESC LIMIT ?").all(options.limit ?? 10)
    ) as Record<string, unknown>[];
    return rows.map(rowToRun);
  }

  getRun(id: string): RunRecord | undefined {
    const row = this.db.prepare("SELECT * FROM runs WHERE id = ?").get(id) as Record<string, unknown> | undefined;
    return row ? rowToRun(row) : undefined;
  }

  stageRuns(runId: string): StageRunRecord[] {
    return (this.db.prepare("SELECT * FROM stage_runs WHERE run_id = ? ORDER BY rowid").all(runId) as Record<string, unknown>[]).map(rowToStageRun);
  }

  fileStat(file: string): { size: number; mtimeMs: number; sha256: string } | undefined {
    const row = this.db.prepare("SELECT size, mtime_ms, sha256 FROM file_stats WHERE path = ?").get(file) as
      | { size: number; mtime_ms: number; sha256: string }
      | undefined;
    return row ? { size: row.size, mtimeMs: row.mtime_ms, sha256: row.sha256 } : undefined;
  }

  forgetFileStats(files: readonly string[]): void {
    const remove = this.db.prepare("DELETE FROM file_stats WHERE path = ?");
    this.db.transaction(() => {
      for (const file of files) remove.run(file);
    })();
  }

  /** This catalog as the persistent stat cache behind file digests (see file-digest.ts). */
  fileStatCache(): FileStatCache {
    return { get: (f) => this.fileStat(f), put: (e) => this.putFileStats(e), forget: (f) => this.forgetFileStats(f) };
  }

  putFileStats(entries: { path: string; size: number; mtimeMs: number; sha256: string }[]): void {
    const insert = this.db.prepare(
      "INSERT INTO file_stats (path, size, mtime_ms, sha256) VALUES (?, ?, ?, ?) ON CONFLICT (path) DO UPDATE SET size = excluded.size, mtime_ms = excluded.mtime_ms, sha256 = excluded.sha256",
    );
    this.db.transaction(() => {
      for (const e of entries) insert.run(e.path, e.size, e.mtimeMs, e.sha256);
    })();
  }
}

/** What the workdir says about its catalog, without opening it. */
export function catalogState(workdir: string): { state: "present" | "absent" } | { state: "lost"; why: string } {
  const file = path.join(workdir, CATALOG_FILE);
  const stat = existsSync(file) ? statSync(file) : undefined;
  // Something else under the catalog's name (a folder) is "present": opening it reports it damaged.
  if (stat && (!stat.isFile() || stat.size > 0)) return { state: "present" };
  const size = stat ? stat.size : -1;
  const evidence = existsSync(path.join(workdir, CATALOG_MARKER)) ? `${CATALOG_MARKER} records that one was created here` : workdirHasOutputs(workdir);
  if (!evidence) return { state: "absent" };
  return { state: "lost", why: `${CATALOG_FILE} is ${size < 0 ? "missing" : "empty (0 bytes)"}, but ${evidence}` };
}

/** For commands that read a catalog and must not create one: absent is a usage error, lost or damaged a CatalogError. */
export function requireCatalog(workdir: string): void {
  const state = catalogState(workdir);
  if (state.state === "lost") throw lostCatalog(workdir, state.why);
  if (state.state === "absent") {
    throw new UsageError(`no catalog in ${workdir} (${CATALOG_FILE} is missing)`, {
      hint: "run a pipeline first, or pass the workdir a pipeline ran in (--workdir DIR) or the pipeline file",
    });
  }
}

function workdirHasOutputs(workdir: string): string | undefined {
  const nonEmpty = (dir: string) => {
    try {
      return readdirSync(dir).some((entry) => !entry.startsWith("."));
    } catch {
      return false;
    }
  };
  if (nonEmpty(path.join(workdir, "artifacts", "prototypes"))) return "artifacts/prototypes/ holds published artifacts";
  const store = path.join(workdir, "store");
  try {
    if (readdirSync(store).some((stage) => nonEmpty(path.join(store, stage)))) return "store/ holds published outputs";
  } catch {
    // no store yet
  }
  return undefined;
}

function rebuildHint(workdir: string): string {
  return `run \`prolearn catalog rebuild --workdir ${workdir}\`: it keeps the damaged file aside, salvages the rows it can still read and registers the artifacts in artifacts/prototypes/ again from their manifests (published outputs in store/ are reused as they are)`;
}

function lostCatalog(workdir: string, why: string): CatalogError {
  return new CatalogError(`the catalog of ${workdir} was lost: ${why}; its run history and artifact registry are gone`, {
    location: { file: path.join(workdir, CATALOG_FILE) },
    hint: rebuildHint(workdir),
  });
}

/** A SQLite error that means the file is not a usable database, as a CatalogError; else undefined. */
export function asCatalogError(error: unknown, file: string): CatalogError | undefined {
  const code = (error as { code?: unknown })?.code;
  if (typeof code !== "string" || !/^SQLITE_(CORRUPT|NOTADB)/.test(code)) return undefined;
  const workdir = path.dirname(file);
  return new CatalogError(`the catalog ${file} is damaged (${code}: ${(error as Error).message})`, {
    location: { file },
    hint: rebuildHint(workdir),
    cause: error,
  });
}

/**
 * Opens `<workdir>/catalog.sqlite` (WAL mode), refusing a lost or damaged one with a CatalogError
 * that says what happened and how to recover: a missing or 0-byte file where the workdir shows a
 * catalog existed, a file that is not SQLite, or one that fails SQLite's quick_check. The check
 * reads the whole file once; a catalog is small (runs, stages, outputs, file stats).
 */
export function openCatalogDatabase(workdir: string, options: { timeoutMs?: number; recovering?: boolean } = {}): Database.Database {
  const file = path.join(workdir, CATALOG_FILE);
  try {
    mkdirSync(workdir, { recursive: true });
  } catch (error) {
    throw new UsageError(`cannot create the workdir ${workdir}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`, {
      hint: "workdir must be a folder (or a path where one can be created)",
    });
  }
  const state = catalogState(workdir);
  if (state.state === "lost" && !options.recovering) throw lostCatalog(workdir, state.why);
  if (state.state === "present") {
    if (!statSync(file).isFile()) {
      throw new CatalogError(`the catalog ${file} is damaged: it is not a file`, { location: { file }, hint: rebuildHint(workdir) });
    }
    const header = Buffer.alloc(16);
    const fd = openSync(file, "r");
    let read: number;
    try {
      read = readSync(fd, header, 0, 16, 0);
    } finally {
      closeSync(fd);
    }
    if (read < 16 || header.toString("latin1") !== SQLITE_HEADER) {
      throw new CatalogError(`the catalog ${file} is damaged: it is not a SQLite database (its first bytes are not the SQLite header)`, {
        location: { file },
        hint: rebuildHint(workdir),
      });
    }
  }
  let db: Database.Database | undefined;
  try {
    db = new Database(file, { timeout: options.timeoutMs ?? 5000 });
    db.pragma("journal_mode = WAL");
    if (state.state === "present") {
      const rows = db.pragma("quick_check") as { quick_check: string }[];
      const problems = rows.map((r) => r.quick_check).filter((r) => r !== "ok");
      if (problems.length) {
        throw new CatalogError(
          `the catalog ${file} is damaged: SQLite's quick_check found ${problems.length} problem${problems.length === 1 ? "" : "s"} (${problems.slice(0, 3).join("; ")})`,
          { location: { file }, hint: rebuildHint(workdir) },
        );
      }
    }
    return db;
  } catch (error) {
    db?.close();
    throw asCatalogError(error, file) ?? error;
  }
}

/** Writes the sidecar that records that this workdir has a catalog (once). */
export function markCatalog(workdir: string): void {
  const marker = path.join(workdir, CATALOG_MARKER);
  if (existsSync(marker)) return;
  writeFileSync(
    marker,
    JSON.stringify(
      {
        format: "prolearn.catalog/1",
        catalog: CATALOG_FILE,
        note: "this workdir has a catalog; if catalog.sqlite goes missing or empty, prolearn reports it lost (prolearn catalog rebuild)",
      },
      null,
      2,
    ) + "\n",
  );
}

export function processAlive(pid: number): boolean {
  if (!Number.isInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === "EPERM";
  }
}

function rowToRun(r: Record<string, unknown>): RunRecord {
  return {
    id: String(r.id),
    pipeline: String(r.pipeline),
    pipelineFile: (r.pipeline_file as string | null) ?? null,
    startedAt: String(r.started_at),
    finishedAt: (r.finished_at as string | null) ?? null,
    // A run still marked running whose process is gone was killed: say so.
    status: (r.status === "running" && !processAlive(Number(r.pid)) ? "abandoned" : r.status) as RunRecord["status"],
    trigger: String(r.trigger),
    executor: String(r.executor),
    pid: Number(r.pid),
    report: (r.report as string | null) ?? null,
    error: (r.error as string | null) ?? null,
  };
}

function rowToOutput(row: Record<string, string>): OutputRecord {
  return {
    cacheKey: row.cache_key!,
    stage: row.stage!,
    pipeline: row.pipeline!,
    digest: row.digest!,
    dir: row.dir!,
    files: JSON.parse(row.files!) as Record<string, string>,
    summary: JSON.parse(row.summary!) as Record<string, unknown>,
    createdAt: row.created_at!,
  };
}

function rowToStageRun(row: Record<string, unknown>): StageRunRecord {
  return {
    runId: String(row.run_id),
    stage: String(row.stage),
    status: row.status as StageStatus,
    cacheKey: (row.cache_key as string | null) ?? null,
    reason: String(row.reason),
    startedAt: String(row.started_at),
    seconds: (row.seconds as number | null) ?? null,
    error: (row.error as string | null) ?? null,
    outputDigest: (row.output_digest as string | null) ?? null,
    keyParts: (row.key_parts as string | null) ?? null,
    reasons: parseJsonArray(row.reasons),
    warnings: parseJsonArray(row.warnings) as StageWarning[],
  };
}

function parseJsonArray(text: unknown): unknown[] {
  if (typeof text !== "string" || !text) return [];
  try {
    const value = JSON.parse(text) as unknown;
    return Array.isArray(value) ? value : [];
  } catch {
    return [];
  }
}
