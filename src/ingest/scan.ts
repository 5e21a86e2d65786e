import { readFile, realpath } from "node:fs/promises";
import path from "node:path";
import type { ResolvedPipeline } from "../pipeline/spec.js";
import { sha256File } from "../util/hash.js";
import { notARegularFile } from "./file-kind.js";
import { listFiles, resolveLayout, type FoundFile, type LayoutPaths } from "./layouts.js";
import { quarantineEntry, type QuarantineEntry } from "./reasons.js";
import { UNSAFE_NAME_CHARACTER, visibleName, readReportSources, readTextReports, type ReportEntry, type ReportSet, type Split } from "./reports.js";
import { availableSubset, seededSplit, seededValidation } from "./split.js";

export const SUPPORTED_IMAGE_EXTENSIONS = new Set([".png", ".jpg", ".jpeg", ".tif", ".tiff", ".webp"]);
export const SPLITS: readonly Split[] = ["train", "val", "test"];

/** One image to decode: everything a shard worker needs, small enough to travel as JSON. */
export interface SampleDescriptor {
  id: string;
  split: Split;
  /** Paths relative to the dataset root. */
  image: string;
  mask: string;
  report: string | null;
  available: boolean;
  /** The report counts within the text budget: a model choice may read it (docs/training.md, "The text budget"). */
  inBudget: boolean;
}

export interface OrphanReport {
  report_key: string;
  report_file: string;
  row: number;
  split: string | null;
  report: string;
}

export interface DatasetPlan {
  layout: LayoutPaths;
  /** Absolute dataset root as configured. */
  root: string;
  samples: SampleDescriptor[];
  /** Problems found before decoding (missing masks, duplicates, bad report files...). */
  quarantine: QuarantineEntry[];
  orphans: OrphanReport[];
  /** Image files found (distinct; byte-identical case-variant copies counted once). */
  found: number;
  /** Images that no report row names (ingested without a report). */
  imageOnly: number;
  /** Byte-identical copies of an image or mask under another letter case (SGSeg), kept once. */
  identicalCopies: string[];
  /** File-manager files (.DS_Store, Thumbs.db) skipped. */
  ignoredFiles: string[];
  /** Report rows naming an image that an earlier row already named. */
  duplicateReports: { kept: string; dropped: string; sameText: boolean }[];
  /** Report rows read from the report files (before matching them to images). */
  reportRows: number;
  splitRule: string;
  reportFiles: string[];
  /** Report files (or a named reports path) found but not read: links out of the root, not regular files, missing. */
  reportFilesSetAside: string[];
  /** Absolute files the plan read, besides images and masks (report tables, split.json, bboxes). */
  metaFiles: string[];
}

/** Matching key of an image or a report row: file name, lower case, no extension, no `mask_` prefix. */
export function matchKey(name: string): string {
  const base = path.basename(name.replace(/\\/g, "/")).toLowerCase();
  const stem = base.replace(/\.[a-z0-9]+$/, "");
  return stem.startsWith("mask_") ? stem.slice(5) : stem;
}

function sampleId(name: string, lowerCase: boolean): string {
  const stem = name.replace(/\.[A-Za-z0-9]+$/, "");
  return lowerCase ? stem.toLowerCase() : stem;
}

function relativeToRoot(root: string, file: string): string {
  return path.relative(root, file).split(path.sep).join("/");
}

interface Candidate {
  id: string;
  key: string;
  file: FoundFile;
  mask?: FoundFile;
  folderSplit?: Split;
  folderIndex: number;
}

/** What the scan collects on the way, in the order it finds it (the quarantine order is part of the output). */
interface ScanFindings {
  quarantine: QuarantineEntry[];
  identicalCopies: string[];
  ignoredFiles: string[];
  metaFiles: string[];
  /** Image files found (distinct). */
  found: number;
}

type Log = (message: string, level?: "info" | "warn") => void;

/** Scans the dataset: layout, images paired with masks, reports matched, splits and text availability assigned. */
export async function planDataset(dataset: ResolvedPipeline["dataset"], log: Log = () => {}): Promise<DatasetPlan> {
  const root = dataset.root;
  const layout = await resolveLayout(root, dataset.layout, dataset.kind);
  log(layout.reason);
  const findings: ScanFindings = { quarantine: [], identicalCopies: [], ignoredFiles: [], metaFiles: [], found: 0 };
  const realRoot = await realpath(root);
  const candidates = await pairImagesWithMasks(layout, { root, realRoot }, dataset.kind === "qata-cov19", findings);
  const reports = await readDatasetReports(dataset, layout, { root, realRoot }, findings, log);
  const { byKey, duplicateReports } = indexReportsByImage(reports, root, findings, log);
  const orphans = orphanReports(byKey, candidates, root, findings);
  const { splitOf, splitRule } = await assignSplits(dataset, layout, candidates, byKey, reports, findings);
  const samples = describeSamples(candidates, splitOf, byKey, dataset);
  const imageOnly = samples.filter((s) => s.report === null).length;
  if (layout.bboxFile && !notARegularFile(layout.bboxFile) && `${await realpath(layout.bboxFile).catch(() => "")}${path.sep}`.startsWith(realRoot + path.sep))
    findings.metaFiles.push(layout.bboxFile);
  const { quarantine, identicalCopies, ignoredFiles, metaFiles, found } = findings;
  for (const q of quarantine) q.source = q.source.split(path.sep).join("/");
  return {
    layout,
    root,
    samples,
    quarantine,
    orphans,
    found,
    imageOnly,
    identicalCopies,
    ignoredFiles,
    duplicateReports,
    splitRule,
    reportFiles: reports.files,
    reportFilesSetAside: reports.setAside,
    reportRows: reports.entries.length,
    metaFiles,
  };
}

/** Every folder's images paired with their masks; what cannot be paired is quarantined. */
async function pairImagesWithMasks(
  layout: LayoutPaths,
  { root, realRoot }: { root: string; realRoot: string },
  lowerCaseIds: boolean,
  findings: ScanFindings,
): Promise<Candidate[]> {
  const candidates: Candidate[] = [];
  const seenIds = new Map<string, Candidate>();
  for (const [folderIndex, folder] of layout.folders.entries()) {
    const images = await listFiles(folder.images, root, realRoot);
    const masks = await listFiles(folder.masks, root, realRoot);
    findings.ignoredFiles.push(...images.ignored, ...masks.ignored);
    const folderCandidates = await pairFolder(
      images.files,
      masks.files,
      { index: folderIndex, split: folder.split, masksDir: relativeToRoot(root, folder.masks) },
      lowerCaseIds,
      seenIds,
      findings,
    );
    candidates.push(...folderCandidates);
    await accountForUnpairedMasks(masks.files, folderCandidates, relativeToRoot(root, folder.images), findings);
  }
  return candidates;
}

/** One folder's images, each with its mask (mask_<name> or <name>); byte-identical case-variant copies count once. */
async function pairFolder(
  images: FoundFile[],
  masks: FoundFile[],
  folder: { index: number; split?: Split; masksDir: string },
  lowerCaseIds: boolean,
  seenIds: Map<string, Candidate>,
  findings: ScanFindings,
): Promise<Candidate[]> {
  const { quarantine } = findings;
  const masksByName = new Map<string, FoundFile[]>();
  const masksByStem = new Map<string, FoundFile[]>();
  for (const m of masks) {
    masksByName.set(m.name.toLowerCase(), [...(masksByName.get(m.name.toLowerCase()) ?? []), m]);
    masksByStem.set(matchKey(m.name), [...(masksByStem.get(matchKey(m.name)) ?? []), m]);
  }
  // Prefer the spelling that equals the id (lower case for QaTa) when case-variant copies exist.
  const rank = new Map(images.map((f) => [f, sampleId(f.name, lowerCaseIds) === sampleId(f.name, false) ? 0 : 1]));
  const ordered = [...images].sort((a, b) => rank.get(a)! - rank.get(b)! || (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  const paired: Candidate[] = [];
  for (const file of ordered) {
    const ext = path.extname(file.name).toLowerCase();
    const id = sampleId(file.name, lowerCaseIds);
    const previous = seenIds.get(id);
    if (
      previous &&
      !file.notRegular &&
      !file.escapesTo &&
      previous.folderIndex === folder.index &&
      previous.file.name !== file.name &&
      previous.file.name.toLowerCase() === file.name.toLowerCase()
    ) {
      if ((await sha256File(previous.file.abs)) === (await sha256File(file.abs))) {
        findings.identicalCopies.push(file.rel);
        continue;
      }
    }
    findings.found++;
    if (UNSAFE_NAME_CHARACTER.test(file.name)) {
      quarantine.push(
        quarantineEntry({
          source: file.rel,
          id,
          reason: "invalid-id",
          detail: `file name ${visibleName(file.name)} holds a control or invisible character`,
          scope: "image",
        }),
      );
      continue;
    }
    if (file.escapesTo) {
      quarantine.push(
        quarantineEntry({
          source: file.rel,
          id,
          reason: "path-escapes-root",
          detail: `symbolic link to ${file.escapesTo}, outside the dataset root`,
          scope: "image",
        }),
      );
      continue;
    }
    if (file.notRegular) {
      quarantine.push(quarantineEntry({ source: file.rel, id, reason: "unreadable-image", detail: `${file.name} is ${file.notRegular}`, scope: "image" }));
      continue;
    }
    if (!SUPPORTED_IMAGE_EXTENSIONS.has(ext)) {
      quarantine.push(
        quarantineEntry({
          source: file.rel,
          id,
          reason: "unsupported-format",
          detail: `extension ${ext || "(none)"} is not one of ${[...SUPPORTED_IMAGE_EXTENSIONS].join(" ")}`,
          scope: "image",
        }),
      );
      continue;
    }
    if (previous) {
      quarantine.push(
        quarantineEntry({ source: file.rel, id, reason: "duplicate-id", detail: `id ${id} is already taken by ${previous.file.rel}`, scope: "image" }),
      );
      continue;
    }
    const lower = file.name.toLowerCase();
    const maskOptions = [...(masksByName.get(`mask_${lower}`) ?? []), ...(masksByName.get(lower) ?? []), ...(masksByStem.get(matchKey(file.name)) ?? [])];
    const mask = maskOptions.find((m) => m.name === `mask_${file.name}` || m.name === file.name) ?? maskOptions[0];
    const candidate: Candidate = { id, key: matchKey(file.name), file, mask, folderSplit: folder.split, folderIndex: folder.index };
    seenIds.set(id, candidate);
    if (!mask) {
      quarantine.push(
        quarantineEntry({ source: file.rel, id, reason: "missing-mask", detail: `no mask_${file.name} or ${file.name} in ${folder.masksDir}`, scope: "image" }),
      );
      continue;
    }
    if (mask.escapesTo) {
      quarantine.push(
        quarantineEntry({
          source: mask.rel,
          id,
          reason: "path-escapes-root",
          detail: `mask is a symbolic link to ${mask.escapesTo}, outside the dataset root`,
          scope: "image",
        }),
      );
      continue;
    }
    if (mask.notRegular) {
      quarantine.push(quarantineEntry({ source: mask.rel, id, reason: "unreadable-mask", detail: `mask ${mask.name} is ${mask.notRegular}`, scope: "image" }));
      continue;
    }
    paired.push(candidate);
  }
  return paired;
}

/** Masks no image of the folder took: byte-identical case-variant copies, or mask-without-image. */
async function accountForUnpairedMasks(masks: FoundFile[], paired: Candidate[], imagesDir: string, findings: ScanFindings): Promise<void> {
  const usedMasks = new Set(paired.map((c) => c.mask!.abs));
  const usedMaskNames = new Set(paired.map((c) => c.mask!.name.toLowerCase()));
  for (const m of masks) {
    if (usedMasks.has(m.abs)) continue;
    if (usedMaskNames.has(m.name.toLowerCase()) && !m.notRegular && !m.escapesTo) {
      const twin = paired.find((c) => c.mask!.name.toLowerCase() === m.name.toLowerCase())!;
      if ((await sha256File(twin.mask!.abs)) === (await sha256File(m.abs))) {
        findings.identicalCopies.push(m.rel);
        continue;
      }
    }
    // A mask of a quarantined image is accounted for by that image's entry.
    if (findings.quarantine.some((q) => q.scope === "image" && q.id !== null && matchKey(q.source) === matchKey(m.name))) continue;
    findings.quarantine.push(
      quarantineEntry({ source: m.rel, reason: "mask-without-image", detail: `no image in ${imagesDir} pairs with this mask`, scope: "mask" }),
    );
  }
}

/** The report rows: the user's source replaces the layout's own. */
async function readDatasetReports(
  dataset: ResolvedPipeline["dataset"],
  layout: LayoutPaths,
  bounds: { root: string; realRoot: string },
  findings: ScanFindings,
  log: Log,
): Promise<ReportSet> {
  const root = dataset.root;
  let reports: ReportSet;
  if (dataset.reports) reports = await readReportSources([dataset.reports], dataset.reportKey, bounds);
  else if (layout.textReportFolder) reports = await readTextReports(layout.textReportFolder, bounds);
  else reports = await readReportSources(layout.reports, dataset.reportKey, bounds);
  for (const warning of reports.warnings) log(warning, "warn");
  for (const p of reports.problems) p.source = relativeToRoot(root, p.source);
  findings.quarantine.push(...reports.problems);
  findings.metaFiles.push(...reports.files);
  const sourceText = dataset.reports
    ? relativeToRoot(root, dataset.reports)
    : layout.textReportFolder
      ? relativeToRoot(root, layout.textReportFolder)
      : layout.reports.map((r) => relativeToRoot(root, r)).join(", ");
  log(
    `reports: ${reports.entries.length} rows from ${reports.files.length} file${reports.files.length === 1 ? "" : "s"}${sourceText ? ` (${sourceText})` : " (none found: every image is image-only)"}`,
  );
  return reports;
}

/** The first report row for each image key; rows naming paths outside the root are quarantined, later duplicates dropped. */
function indexReportsByImage(
  reports: ReportSet,
  root: string,
  findings: ScanFindings,
  log: Log,
): { byKey: Map<string, ReportEntry>; duplicateReports: DatasetPlan["duplicateReports"] } {
  const byKey = new Map<string, ReportEntry>();
  const duplicateReports: DatasetPlan["duplicateReports"] = [];
  for (const entry of reports.entries) {
    if (/[\\/]/.test(entry.key)) {
      const resolved = path.resolve(root, entry.key);
      if (resolved !== root && !resolved.startsWith(root + path.sep)) {
        findings.quarantine.push(
          quarantineEntry({
            source: relativeToRoot(root, entry.file),
            row: entry.row,
            reason: "path-escapes-root",
            detail: `report names ${entry.key}, outside the dataset root`,
            scope: "report",
          }),
        );
        continue;
      }
    }
    const key = matchKey(entry.key);
    const first = byKey.get(key);
    if (first) {
      duplicateReports.push({
        kept: `${relativeToRoot(root, first.file)}:${first.row}`,
        dropped: `${relativeToRoot(root, entry.file)}:${entry.row}`,
        sameText: first.text === entry.text,
      });
      continue;
    }
    byKey.set(key, entry);
  }
  const conflicting = duplicateReports.filter((d) => !d.sameText);
  if (conflicting.length)
    log(
      `${conflicting.length} report rows name an image an earlier row already named, with different text; the first row is used (e.g. ${conflicting[0]!.dropped} vs ${conflicting[0]!.kept})`,
      "warn",
    );
  return { byKey, duplicateReports };
}

/** Report rows whose image is absent (neither ingested nor quarantined). */
function orphanReports(byKey: Map<string, ReportEntry>, candidates: Candidate[], root: string, findings: ScanFindings): OrphanReport[] {
  const candidateKeys = new Set(candidates.map((c) => c.key));
  for (const q of findings.quarantine) if (q.scope === "image") candidateKeys.add(matchKey(q.source));
  const orphans: OrphanReport[] = [];
  for (const [key, entry] of byKey) {
    if (candidateKeys.has(key)) continue;
    orphans.push({ report_key: entry.key, report_file: relativeToRoot(root, entry.file), row: entry.row, split: entry.split ?? null, report: entry.text });
  }
  return orphans;
}

/** Each sample's split by the layout's rule (official where it defines one, else seeded), and the rule in words. */
async function assignSplits(
  dataset: ResolvedPipeline["dataset"],
  layout: LayoutPaths,
  candidates: Candidate[],
  byKey: Map<string, ReportEntry>,
  reports: ReportSet,
  findings: ScanFindings,
): Promise<{ splitOf: Map<string, Split>; splitRule: string }> {
  const root = dataset.root;
  const splitOf = new Map<string, Split>();
  if (layout.layout === "prolearn" && layout.splitFile) {
    const parsed = await readSplitFile(layout.splitFile, await realpath(root));
    if (parsed.read) findings.metaFiles.push(layout.splitFile);
    if (parsed.problem)
      findings.quarantine.push(
        quarantineEntry({
          source: relativeToRoot(root, layout.splitFile),
          reason: parsed.escapes ? "path-escapes-root" : "malformed-report-file",
          detail: parsed.problem,
          scope: "report",
        }),
      );
    for (const [id, split] of parsed.splits) splitOf.set(dataset.kind === "qata-cov19" ? id.toLowerCase() : id, split);
    const missing = candidates.filter((c) => !splitOf.has(c.id)).map((c) => c.id);
    for (const [id, split] of seededSplit(missing, dataset.seed, { train: 0.8, val: 0.1 })) splitOf.set(id, split);
    return { splitOf, splitRule: `split.json${missing.length ? `; ${missing.length} ids it does not list: seeded 8:1:1` : ""}` };
  }
  if (layout.layout === "kvasir") {
    const fromReports = candidates.filter((c) => byKey.get(c.key)?.split);
    for (const c of fromReports) splitOf.set(c.id, byKey.get(c.key)!.split!);
    const rest = candidates.filter((c) => !splitOf.has(c.id)).map((c) => c.id);
    for (const [id, split] of seededSplit(rest, dataset.seed, { train: 0.8, val: 0.1 })) splitOf.set(id, split);
    return {
      splitOf,
      splitRule: fromReports.length
        ? `the report files' own split (train/val/test.json) for ${fromReports.length} images${rest.length ? `, seeded 8:1:1 for ${rest.length}` : ""}`
        : "seeded 8:1:1",
    };
  }
  for (const c of candidates) if (c.folderSplit) splitOf.set(c.id, c.folderSplit);
  if (layout.layout === "kaggle") {
    const val = seededValidation(
      candidates.filter((c) => c.folderSplit === "train").map((c) => c.id),
      dataset.seed,
      0.2,
    );
    for (const id of val) splitOf.set(id, "val");
    return { splitOf, splitRule: "Train Set / Test Set folders; val = seeded 20% of Train Set" };
  }
  if (layout.layout === "guideseg") {
    const trainRows = reports.entries.filter((e) => e.split === "train");
    const nVal = Math.round(0.2 * trainRows.length);
    const valKeys = new Set(trainRows.slice(trainRows.length - nVal).map((e) => matchKey(e.key)));
    for (const c of candidates) if (c.folderSplit === "train" && valKeys.has(c.key)) splitOf.set(c.id, "val");
    return { splitOf, splitRule: "Train / Test folders; val = images of the last 20% of train.csv rows" };
  }
  return { splitOf, splitRule: `folders (${layout.folders.map((f) => `${path.basename(path.dirname(f.images))}=${f.split}`).join(", ")})` };
}

/**
 * The samples to decode, in split then id order. Text availability: nested seeded subsets of the
 * training samples that have a report; val/test reports are available wherever they exist. The
 * text budget (docs/training.md): the available training reports and the same share of the
 * validation reports; never a test report.
 */
function describeSamples(
  candidates: Candidate[],
  splitOf: Map<string, Split>,
  byKey: Map<string, ReportEntry>,
  dataset: ResolvedPipeline["dataset"],
): SampleDescriptor[] {
  const trainWithReport = candidates.filter((c) => splitOf.get(c.id) === "train" && byKey.has(c.key)).map((c) => c.id);
  const available = availableSubset(trainWithReport, dataset.seed, dataset.textAvailability);
  // The budget on validation: the same share r of the validation samples that have a report
  // (nested in r as on train). Model choices (early stopping, the filter's threshold and trust)
  // read only these; the other validation reports stay readable for diagnostics.
  const valWithReport = candidates.filter((c) => splitOf.get(c.id) === "val" && byKey.has(c.key)).map((c) => c.id);
  const valInBudget = availableSubset(valWithReport, dataset.seed, dataset.textAvailability);

  const samples: SampleDescriptor[] = candidates.map((c) => {
    const split = splitOf.get(c.id)!;
    const entry = byKey.get(c.key);
    return {
      id: c.id,
      split,
      image: c.file.rel.split(path.sep).join("/"),
      mask: c.mask!.rel.split(path.sep).join("/"),
      report: entry ? entry.text : null,
      available: entry ? (split === "train" ? available.has(c.id) : true) : false,
      inBudget: entry ? (split === "train" ? available.has(c.id) : split === "val" ? valInBudget.has(c.id) : false) : false,
    };
  });
  return samples.sort((a, b) => SPLITS.indexOf(a.split) - SPLITS.indexOf(b.split) || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
}

async function readSplitFile(file: string, realRoot: string): Promise<{ splits: Map<string, Split>; problem?: string; escapes?: boolean; read?: boolean }> {
  const splits = new Map<string, Split>();
  const real = await realpath(file).catch(() => file);
  if (real !== realRoot && !real.startsWith(realRoot + path.sep))
    return {
      splits,
      escapes: true,
      problem: `split.json is a symbolic link to ${real}, outside the dataset root; it is not read (every id gets a seeded 8:1:1 split)`,
    };
  const odd = notARegularFile(file);
  if (odd) return { splits, problem: `split.json is ${odd}; every id gets a seeded 8:1:1 split` };
  let data: unknown;
  try {
    data = JSON.parse(await readFile(file, "utf8"));
  } catch (error) {
    return { splits, read: true, problem: `invalid JSON: ${(error as Error).message}` };
  }
  if (!data || typeof data !== "object" || Array.isArray(data)) return { splits, read: true, problem: "expected {train: [...], val: [...], test: [...]}" };
  for (const [name, ids] of Object.entries(data as Record<string, unknown>)) {
    const split: Split | undefined = name === "train" ? "train" : name === "val" || name === "valid" ? "val" : name === "test" ? "test" : undefined;
    if (!split || !Array.isArray(ids)) return { splits, read: true, problem: `unexpected key ${name}: expected train, val and test id lists` };
    for (const id of ids) if (typeof id === "string") splits.set(id.replace(/\.[A-Za-z0-9]+$/, ""), split);
  }
  return { splits, read: true };
}
