import { statSync } from "node:fs";
import { sha256File, sha256, canonicalJson } from "../util/hash.js";

/**
 * Content digests of input files (a dataset folder, a model folder), cheap on reruns: a file's
 * sha256 is reused while its (size, mtime) are unchanged. The mtime only decides whether to
 * re-hash; it never enters a digest. The engine plugs the catalog's persistent stat cache in,
 * so a second process (or a second run) re-hashes nothing that did not change.
 */
export interface FileStatCache {
  get(file: string): { size: number; mtimeMs: number; sha256: string } | undefined;
  put(entries: { path: string; size: number; mtimeMs: number; sha256: string }[]): void;
}

const memo = new Map<string, { size: number; mtimeMs: number; sha256: string }>();
let persistent: FileStatCache | undefined;

export function setFileStatCache(cache: FileStatCache | undefined): void {
  persistent = cache;
}

export async function digestFile(file: string): Promise<string> {
  const stat = statSync(file);
  const known = memo.get(file) ?? persistent?.get(file);
  if (known && known.size === stat.size && known.mtimeMs === stat.mtimeMs) {
    memo.set(file, known);
    return known.sha256;
  }
  const entry = { size: stat.size, mtimeMs: stat.mtimeMs, sha256: await sha256File(file) };
  memo.set(file, entry);
  persistent?.put([{ path: file, ...entry }]);
  return entry.sha256;
}

/**
 * One digest over many files, keyed by their names relative to `root` (so moving a dataset
 * folder keeps its digest), order-independent.
 */
export async function digestFiles(files: readonly string[], root: string): Promise<string> {
  const entries: Record<string, string> = {};
  const pending: { path: string; size: number; mtimeMs: number; sha256: string }[] = [];
  for (const file of files) {
    const stat = statSync(file);
    const known = memo.get(file) ?? persistent?.get(file);
    let hash: string;
    if (known && known.size === stat.size && known.mtimeMs === stat.mtimeMs) hash = known.sha256;
    else {
      hash = await sha256File(file);
      pending.push({ path: file, size: stat.size, mtimeMs: stat.mtimeMs, sha256: hash });
    }
    memo.set(file, { size: stat.size, mtimeMs: stat.mtimeMs, sha256: hash });
    const relative = file.startsWith(root) ? file.slice(root.length).replace(/^[/\\]+/, "") : file;
    entries[relative] = hash;
  }
  if (pending.length) persistent?.put(pending);
  return sha256(canonicalJson(entries));
}
