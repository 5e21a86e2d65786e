import { statSync } from "node:fs";
import { sha256File, sha256, canonicalJson } from "../util/hash.js";

/**
 * Content digests of input files (a dataset folder, a model folder), cheap on reruns: a file's
 * sha256 is reused while its (size, mtime) are unchanged. The mtime only decides whether to
 * re-hash; it never enters a digest.
 */
export interface FileStatCache {
  get(file: string): { size: number; mtimeMs: number; sha256: string } | undefined;
  put(entries: { path: string; size: number; mtimeMs: number; sha256: string }[]): void;
  forget?(files: readonly string[]): void;
}

interface FileStat {
  size: number;
  mtimeMs: number;
  sha256: string;
}

/**
 * One digester per run (or plan), handed to the stages' `resources()`. The engine gives it the
 * catalog's persistent stat cache, so a second process (or a second run) re-hashes nothing that
 * did not change. It is an object, not a module setting: the scheduler runs several pipelines
 * in one process, each over its own catalog, and one run ending must not unplug another's cache.
 */
export class FileDigester {
  private readonly memo = new Map<string, FileStat>();

  constructor(private readonly persistent?: FileStatCache) {}

  async digestFile(file: string): Promise<string> {
    const stat = statSync(file);
    const known = this.known(file);
    if (known && known.size === stat.size && known.mtimeMs === stat.mtimeMs) {
      this.memo.set(file, known);
      return known.sha256;
    }
    const entry = { size: stat.size, mtimeMs: stat.mtimeMs, sha256: await sha256File(file) };
    this.memo.set(file, entry);
    this.persistent?.put([{ path: file, ...entry }]);
    return entry.sha256;
  }

  /**
   * One digest over many files, keyed by their names relative to `root` (so moving a dataset
   * folder keeps its digest), order-independent.
   */
  async digestFiles(files: readonly string[], root: string): Promise<string> {
    const entries: Record<string, string> = {};
    const pending: (FileStat & { path: string })[] = [];
    for (const file of files) {
      const stat = statSync(file);
      const known = this.known(file);
      let hash: string;
      if (known && known.size === stat.size && known.mtimeMs === stat.mtimeMs) hash = known.sha256;
      else {
        hash = await sha256File(file);
        pending.push({ path: file, size: stat.size, mtimeMs: stat.mtimeMs, sha256: hash });
      }
      this.memo.set(file, { size: stat.size, mtimeMs: stat.mtimeMs, sha256: hash });
      const relative = file.startsWith(root) ? file.slice(root.length).replace(/^[/\\]+/, "") : file;
      entries[relative] = hash;
    }
    if (pending.length) this.persistent?.put(pending);
    return sha256(canonicalJson(entries));
  }

  /**
   * Records digests computed elsewhere (the store hashes each file it publishes) with each file's
   * current size and mtime, so the next check of that file costs a stat, not a re-hash.
   */
  remember(entries: { path: string; sha256: string }[]): void {
    const stats = entries.map((e) => {
      const stat = statSync(e.path);
      const entry = { size: stat.size, mtimeMs: stat.mtimeMs, sha256: e.sha256 };
      this.memo.set(e.path, entry);
      return { path: e.path, ...entry };
    });
    if (stats.length) this.persistent?.put(stats);
  }

  /** Forgets what is known about these files, so the next digestFile re-hashes them. */
  forget(files: readonly string[]): void {
    for (const file of files) this.memo.delete(file);
    this.persistent?.forget?.(files);
  }

  private known(file: string): FileStat | undefined {
    return this.memo.get(file) ?? this.persistent?.get(file);
  }
}
