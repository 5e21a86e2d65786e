import { copyFileSync, existsSync, mkdirSync, renameSync, rmSync } from "node:fs";
import path from "node:path";
import { randomBytes } from "node:crypto";
import Database from "better-sqlite3";
import { Catalog, CATALOG_FILE } from "./catalog.js";

/** Tables copied from a damaged catalog, parents first; file_stats is a cache and is rebuilt by hashing. */
const SALVAGED_TABLES = ["runs", "stage_runs", "outputs", "artifact_versions", "artifact_aliases", "artifact_alias_history"] as const;

export interface SalvageReport {
  /** Where the old catalog (and its -wal / -shm files) now lies; null when there was none. */
  keptAs: string | null;
  /** Table -> rows copied into the new catalog. */
  salvaged: Record<string, number>;
  /** Table -> why it could not be read (wholly or in part). */
  unreadable: Record<string, string>;
}

/**
 * Step one of `prolearn catalog rebuild`: moves `<workdir>/catalog.sqlite` (with its -wal and
 * -shm files) aside as `catalog.sqlite.damaged-<time>`, creates a fresh catalog, and copies into it
 * every row that can still be read from the old one, table by table and row by row (a damaged
 * page loses the rows on it, not the table). Never deletes the old file. Returns the new catalog,
 * open; the caller rebuilds the artifact registry from the manifests next (ArtifactRegistry).
 */
export function salvageCatalog(workdir: string): { catalog: Catalog; report: SalvageReport } {
  const file = path.join(workdir, CATALOG_FILE);
  const stamp = new Date().toISOString().replace(/[-:.]/g, "");
  const keptAs = `${file}.damaged-${stamp}`;
  let moved = false;
  for (const suffix of ["", "-wal", "-shm"]) {
    if (existsSync(file + suffix)) {
      renameSync(file + suffix, keptAs + suffix);
      moved = true;
    }
  }
  const catalog = new Catalog(workdir, { recovering: true });
  const report: SalvageReport = { keptAs: moved ? keptAs : null, salvaged: {}, unreadable: {} };
  if (!moved) return { catalog, report };
  // Read a copy, so the kept file stays exactly as it was found (opening it could checkpoint its WAL).
  const scratch = path.join(workdir, "tmp", `salvage-${randomBytes(4).toString("hex")}`);
  mkdirSync(scratch, { recursive: true });
  const copy = path.join(scratch, CATALOG_FILE);
  let old: Database.Database | undefined;
  try {
    try {
      for (const suffix of ["", "-wal"]) if (existsSync(keptAs + suffix)) copyFileSync(keptAs + suffix, copy + suffix);
      old = new Database(copy, { fileMustExist: true });
    } catch (error) {
      for (const table of SALVAGED_TABLES) report.unreadable[table] = (error as Error).message;
      return { catalog, report };
    }
    for (const table of SALVAGED_TABLES) {
      let copied = 0;
      try {
        const columns = (catalog.db.prepare(`PRAGMA table_info(${table})`).all() as { name: string }[]).map((c) => c.name);
        const oldColumns = new Set((old.prepare(`PRAGMA table_info(${table})`).all() as { name: string }[]).map((c) => c.name));
        const shared = columns.filter((c) => oldColumns.has(c));
        if (!shared.length) throw new Error("no such table");
        const insert = catalog.db.prepare(`INSERT OR IGNORE INTO ${table} (${shared.join(", ")}) VALUES (${shared.map(() => "?").join(", ")})`);
        // Rows are read until the first unreadable page; those read are kept.
        const rows: unknown[][] = [];
        try {
          for (const row of old
            .prepare(`SELECT ${shared.join(", ")} FROM ${table}`)
            .raw()
            .iterate() as IterableIterator<unknown[]>)
            rows.push(row);
        } catch (error) {
          report.unreadable[table] = `${(error as Error).message} (after ${rows.length} rows)`;
        }
        catalog.db.transaction(() => {
          for (const row of rows) {
            try {
              copied += insert.run(...row).changes;
            } catch {
              // A row that breaks a constraint (its parent run was on a lost page): left out.
            }
          }
        })();
      } catch (error) {
        report.unreadable[table] = (error as Error).message;
      }
      report.salvaged[table] = copied;
    }
  } finally {
    old?.close();
    rmSync(scratch, { recursive: true, force: true });
  }
  return { catalog, report };
}
