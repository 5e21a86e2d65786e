import { closeSync, existsSync, fsyncSync, mkdirSync, openSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from "node:fs";
import path from "node:path";
import { randomBytes } from "node:crypto";
import { canonicalJson, sha256, sha256File } from "../util/hash.js";
import { FileDigester } from "./file-digest.js";
import type { RowCache, StageSummary } from "./stage.js";

export const MANIFEST_FILE = "_manifest.json";

export interface OutputManifest {
  stage: string;
  cacheKey: string;
  /** File name -> sha256 and size of its bytes. */
  files: Record<string, { sha256: string; size: number }>;
  summary: StageSummary;
}

export interface PublishedOutput {
  dir: string;
  digest: string;
  files: Record<string, string>;
  manifest: OutputManifest;
}

/** What the store holds under one key: nothing, an intact output, or a damaged one (and why). */
export type StoreEntry = { state: "absent" } | { state: "intact"; output: PublishedOutput } | { state: "damaged"; dir: string; problems: string[] };

/** Where damaged store entries are moved, kept for inspection: `<workdir>/damaged/store/<stage>/`. */
export const DAMAGED_DIR = "damaged";

/**
 * Content-addressed store of stage outputs under `<workdir>/store/<stage>/<cacheKey>/`.
 * Publication is atomic: files are written in a private temp folder, fsynced, and the folder is
 * renamed into place; the catalog record comes after. A folder that exists in the store is
 * therefore complete, and a crash leaves at worst an orphan temp folder that is never trusted.
 * The interface is small on purpose so an object store can stand behind it later.
 */
export class OutputStore {
  /**
   * `digester`: the run's stat-cached file digester (the catalog behind it), used by `check` and
   * told each published file's hash; without one, checks hash every file.
   */
  constructor(
    readonly workdir: string,
    private readonly digester: FileDigester = new FileDigester(),
  ) {}

  outputDir(stage: string, cacheKey: string): string {
    return path.join(this.workdir, "store", stage, cacheKey);
  }

  /** A fresh private folder for one execution: `out` (the outputs) and `scratch`. */
  makeStaging(runId: string, stage: string): { root: string; outDir: string; tmpDir: string } {
    const root = path.join(this.workdir, "tmp", `${runId}-${stage}-${randomBytes(4).toString("hex")}`);
    const outDir = path.join(root, "out");
    const tmpDir = path.join(root, "scratch");
    mkdirSync(outDir, { recursive: true });
    mkdirSync(tmpDir, { recursive: true });
    return { root, outDir, tmpDir };
  }

  /** Returns the published output if its folder and manifest are complete, else undefined. */
  read(stage: string, cacheKey: string): PublishedOutput | undefined {
    const dir = this.outputDir(stage, cacheKey);
    const manifestPath = path.join(dir, MANIFEST_FILE);
    if (!existsSync(manifestPath)) return undefined;
    let manifest: OutputManifest;
    try {
      manifest = JSON.parse(readFileSync(manifestPath, "utf8")) as OutputManifest;
    } catch {
      return undefined;
    }
    const files: Record<string, string> = {};
    for (const [name, meta] of Object.entries(manifest.files)) {
      const file = path.join(dir, name);
      try {
        if (statSync(file).size !== meta.size) return undefined;
      } catch {
        return undefined;
      }
      files[name] = file;
    }
    return { dir, digest: manifestDigest(manifest), files, manifest };
  }

  /**
   * The check every run makes before reusing an output: the manifest parses, every listed file is
   * there with its recorded size, and its sha256 is the recorded one. The hash comes from the
   * file-stat cache while the file's size and mtime are those recorded when it was published (a
   * stat, no read); a file whose mtime moved is re-hashed. With `full`, every file is re-hashed
   * (`prolearn verify`): that also finds a same-size change made with the mtime put back.
   */
  async check(stage: string, cacheKey: string, options: { full?: boolean } = {}): Promise<StoreEntry> {
    const dir = this.outputDir(stage, cacheKey);
    if (!existsSync(dir)) return { state: "absent" };
    const manifestPath = path.join(dir, MANIFEST_FILE);
    let manifest: OutputManifest;
    try {
      manifest = JSON.parse(readFileSync(manifestPath, "utf8")) as OutputManifest;
      if (!manifest || typeof manifest.files !== "object" || manifest.files === null) throw new Error("no files listed");
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      return { state: "damaged", dir, problems: [`${MANIFEST_FILE}: ${code === "ENOENT" ? "missing" : `unreadable (${(error as Error).message})`}`] };
    }
    const problems: string[] = [];
    const files: Record<string, string> = {};
    for (const [name, meta] of Object.entries(manifest.files)) {
      const file = path.join(dir, name);
      // A manifest edited to list a file outside its folder would hand that file to downstream stages.
      if (path.isAbsolute(name) || path.relative(dir, file).split(path.sep).includes("..")) {
        problems.push(`${MANIFEST_FILE}: lists ${JSON.stringify(name)}, outside its folder`);
        continue;
      }
      if (!meta || typeof meta.size !== "number" || typeof meta.sha256 !== "string") {
        problems.push(`${MANIFEST_FILE}: the entry for ${name} has no size or sha256`);
        continue;
      }
      files[name] = file;
      let size: number;
      try {
        size = statSync(file).size;
      } catch {
        problems.push(`${name}: missing`);
        continue;
      }
      if (size !== meta.size) {
        problems.push(`${name}: ${size} bytes, published with ${meta.size}`);
        continue;
      }
      const actual = options.full ? await sha256File(file) : await this.digester.digestFile(file);
      if (actual !== meta.sha256) problems.push(`${name}: sha256 ${actual.slice(0, 12)}... is not the published ${meta.sha256.slice(0, 12)}...`);
    }
    if (problems.length) return { state: "damaged", dir, problems };
    return { state: "intact", output: { dir, digest: manifestDigest(manifest), files, manifest } };
  }

  /** Full re-hash of a published output; false when any byte changed. */
  async verify(stage: string, cacheKey: string): Promise<boolean> {
    return (await this.check(stage, cacheKey, { full: true })).state === "intact";
  }

  /**
   * Moves a damaged entry out of the store, to `<workdir>/damaged/store/<stage>/<key>-<time>`,
   * so a fresh output can be published under its key. Never deletes: what was there is kept
   * for inspection. Returns where it went (undefined when nothing was there).
   */
  setAside(stage: string, cacheKey: string): string | undefined {
    const dir = this.outputDir(stage, cacheKey);
    if (!existsSync(dir)) return undefined;
    const target = path.join(
      this.workdir,
      DAMAGED_DIR,
      "store",
      stage,
      `${cacheKey}-${new Date().toISOString().replace(/[-:.]/g, "")}-${randomBytes(3).toString("hex")}`,
    );
    mkdirSync(path.dirname(target), { recursive: true });
    try {
      renameSync(dir, target);
    } catch (error) {
      // Another process set it aside (or replaced it) first.
      if ((error as NodeJS.ErrnoException).code === "ENOENT") return undefined;
      throw error;
    }
    return target;
  }

  /**
   * Moves a finished staging `out` folder into the store. Every declared output must exist.
   * If another process published the same key first, its copy wins (same key = same content).
   */
  async publish(stage: string, cacheKey: string, outDir: string, declared: readonly string[], summary: StageSummary): Promise<PublishedOutput> {
    const present = new Set(listFiles(outDir));
    const missing = declared.filter((name) => !present.has(name));
    if (missing.length)
      throw new Error(`stage ${stage} did not write its declared output${missing.length > 1 ? "s" : ""} ${missing.join(", ")} (in ${outDir})`);
    const files: OutputManifest["files"] = {};
    for (const name of [...present].sort()) {
      const file = path.join(outDir, name);
      fsyncFile(file);
      files[name] = { sha256: await sha256File(file), size: statSync(file).size };
    }
    const manifest: OutputManifest = { stage, cacheKey, files, summary };
    const manifestPath = path.join(outDir, MANIFEST_FILE);
    writeFileSync(manifestPath, JSON.stringify(manifest, null, 2));
    fsyncFile(manifestPath);
    fsyncDir(outDir);
    const target = this.outputDir(stage, cacheKey);
    mkdirSync(path.dirname(target), { recursive: true });
    for (let attempt = 0; ; attempt++) {
      try {
        renameSync(outDir, target);
        break;
      } catch (error) {
        const code = (error as NodeJS.ErrnoException).code;
        if (code !== "ENOTEMPTY" && code !== "EEXIST") throw error;
        const existing = await this.check(stage, cacheKey);
        if (existing.state === "intact") {
          // Another process published the same key first: same key, same content.
          rmSync(outDir, { recursive: true, force: true });
          return existing.output;
        }
        // A damaged entry (a file deleted or truncated by hand) must not wedge every later run:
        // it is moved aside and this output takes its place.
        if (attempt >= 2) throw error;
        this.setAside(stage, cacheKey);
      }
    }
    fsyncDir(path.dirname(target));
    const published = this.read(stage, cacheKey)!;
    // Size and mtime as published, with the hashes just computed: the next run's check is a stat.
    this.digester.remember(Object.entries(published.manifest.files).map(([name, meta]) => ({ path: published.files[name]!, sha256: meta.sha256 })));
    return published;
  }

  /** Removes staging folders left by processes that no longer run (after kill -9). */
  sweepStaging(isLive: (runIdPrefix: string) => boolean): number {
    const tmpRoot = path.join(this.workdir, "tmp");
    if (!existsSync(tmpRoot)) return 0;
    let removed = 0;
    for (const entry of readdirSync(tmpRoot)) {
      const runId = entry.split("-").slice(0, 2).join("-");
      if (!isLive(runId)) {
        rmSync(path.join(tmpRoot, entry), { recursive: true, force: true });
        removed++;
      }
    }
    return removed;
  }

  rowCache(namespace: string): RowCache {
    const root = path.join(this.workdir, "rows", namespace.replace(/[^A-Za-z0-9._-]/g, "_"));
    const fileOf = (key: string) => {
      const safe = sha256(key);
      return path.join(root, safe.slice(0, 2), safe);
    };
    return {
      get(key) {
        try {
          return readFileSync(fileOf(key));
        } catch {
          return undefined;
        }
      },
      put(key, value) {
        const file = fileOf(key);
        mkdirSync(path.dirname(file), { recursive: true });
        const temp = `${file}.${process.pid}.${randomBytes(3).toString("hex")}.tmp`;
        writeFileSync(temp, value);
        renameSync(temp, file);
      },
    };
  }
}

export function manifestDigest(manifest: Pick<OutputManifest, "files">): string {
  const files: Record<string, string> = {};
  for (const [name, meta] of Object.entries(manifest.files)) files[name] = meta.sha256;
  return sha256(canonicalJson(files));
}

function listFiles(dir: string, prefix = ""): string[] {
  const out: string[] = [];
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const rel = prefix ? `${prefix}/${entry.name}` : entry.name;
    if (entry.isDirectory()) out.push(...listFiles(path.join(dir, entry.name), rel));
    else if (entry.name !== MANIFEST_FILE) out.push(rel);
  }
  return out;
}

function fsyncFile(file: string): void {
  const fd = openSync(file, "r");
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

function fsyncDir(dir: string): void {
  try {
    fsyncFile(dir);
  } catch {
    // Some filesystems refuse fsync on directories; the rename itself is still atomic there.
  }
}
