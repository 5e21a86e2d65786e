import { readdir, realpath, stat } from "node:fs/promises";
import path from "node:path";
import type { DatasetKind, DatasetLayout } from "../pipeline/spec.js";
import { DataError } from "../errors.js";
import type { Split } from "./reports.js";
import { describeSpecial, notARegularFile } from "./file-kind.js";

export type ConcreteLayout = Exclude<DatasetLayout, "auto">;

/** One folder of images with its mask folder and the split the folder names (if any). */
export interface ImageFolder {
  images: string;
  masks: string;
  split?: Split;
}

/** Where a layout keeps its images, masks and reports, resolved against a dataset root. */
export interface LayoutPaths {
  layout: ConcreteLayout;
  /** Folder the layout was found in (the dataset root, or its single child folder). */
  root: string;
  folders: ImageFolder[];
  /** Report files or folders the layout itself provides. */
  reports: string[];
  /** ProLearn `reports/` folder of `<id>.txt` files. */
  textReportFolder?: string;
  /** ProLearn `split.json`. */
  splitFile?: string;
  /** Kvasir `kavsir_bboxes.json` (read for validation of names and sizes). */
  bboxFile?: string;
  /** Why this layout was chosen (printed). */
  reason: string;
}

interface Child {
  name: string;
  isDir: boolean;
  isLink: boolean;
  /** Why the entry is not a regular file when it is not a folder either (a FIFO, a link to nothing). */
  notRegular?: string;
}

async function childrenOf(dir: string): Promise<Child[]> {
  try {
    const entries = await readdir(dir, { withFileTypes: true });
    const out: Child[] = [];
    for (const e of entries) {
      const isLink = e.isSymbolicLink();
      if (isLink) {
        const target = await stat(path.join(dir, e.name)).catch(() => undefined);
        const isDir = target?.isDirectory() ?? false;
        out.push({ name: e.name, isDir, isLink, notRegular: isDir || target?.isFile() ? undefined : notARegularFile(path.join(dir, e.name)) });
      } else out.push({ name: e.name, isDir: e.isDirectory(), isLink, notRegular: e.isDirectory() || e.isFile() ? undefined : describeSpecial(e) });
    }
    return out.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  } catch {
    return [];
  }
}

/** Child folder by case-insensitive name, first candidate that exists. */
async function findDir(dir: string, candidates: string[]): Promise<string | undefined> {
  const children = await childrenOf(dir);
  for (const candidate of candidates) {
    const hit = children.find((c) => c.isDir && c.name.toLowerCase() === candidate.toLowerCase());
    if (hit) return path.join(dir, hit.name);
  }
  return undefined;
}

async function findFile(dir: string, candidates: string[]): Promise<string | undefined> {
  const children = await childrenOf(dir);
  for (const candidate of candidates) {
    const hit = children.find((c) => !c.isDir && c.name.toLowerCase() === candidate.toLowerCase());
    if (hit) return path.join(dir, hit.name);
  }
  return undefined;
}

async function filesWithExtension(dir: string, ext: string): Promise<string[]> {
  return (await childrenOf(dir))
    .filter((c) => !c.isDir && !c.name.startsWith("~$") && !c.name.startsWith(".") && c.name.toLowerCase().endsWith(ext))
    .map((c) => path.join(dir, c.name));
}

async function kaggle(root: string): Promise<LayoutPaths | undefined> {
  const train = await findDir(root, ["Train Set", "Train_Set", "TrainSet"]);
  const test = await findDir(root, ["Test Set", "Test_Set", "TestSet"]);
  if (!train && !test) return undefined;
  const folders: ImageFolder[] = [];
  for (const [dir, split] of [
    [train, "train"],
    [test, "test"],
  ] as const) {
    if (!dir) continue;
    const images = await findDir(dir, ["Images"]);
    const masks = await findDir(dir, ["Ground-truths", "Ground_truths", "GroundTruths", "Masks"]);
    if (!images || !masks) return undefined;
    folders.push({ images, masks, split });
  }
  return {
    layout: "kaggle",
    root,
    folders,
    reports: [],
    reason: `found ${folders.map((f) => path.relative(root, path.dirname(f.images))).join(" and ")} with Images/ and Ground-truths/ (QaTa-COV19 Kaggle original)`,
  };
}

async function lvitFolders(root: string): Promise<ImageFolder[] | undefined> {
  const folders: ImageFolder[] = [];
  for (const [name, split] of [
    ["Train_Folder", "train"],
    ["Val_Folder", "val"],
    ["Test_Folder", "test"],
  ] as const) {
    const dir = await findDir(root, [name]);
    if (!dir) continue;
    const images = await findDir(dir, ["img"]);
    const masks = await findDir(dir, ["labelcol"]);
    if (!images || !masks) return undefined;
    folders.push({ images, masks, split });
  }
  return folders.length ? folders : undefined;
}

async function lvit(root: string, wantCsv: boolean | undefined): Promise<LayoutPaths | undefined> {
  const folders = await lvitFolders(root);
  if (!folders) return undefined;
  const xlsx = await filesWithExtension(root, ".xlsx");
  const csvHere = await filesWithExtension(root, ".csv");
  const textDir = await findDir(root, ["text"]);
  const csv = csvHere.length ? csvHere : textDir ? await filesWithExtension(textDir, ".csv") : [];
  const useCsv = wantCsv ?? (xlsx.length === 0 && csv.length > 0);
  const reports = useCsv ? csv : xlsx;
  const where = folders.map((f) => path.relative(root, path.dirname(f.images))).join(", ");
  return {
    layout: useCsv ? "lvit-csv" : "lvit",
    root,
    folders,
    reports,
    reason: `found ${where} with img/ and labelcol/ (LViT) and ${reports.length} ${useCsv ? "CSV" : "xlsx"} text file${reports.length === 1 ? "" : "s"}`,
  };
}

async function guideseg(root: string): Promise<LayoutPaths | undefined> {
  const folders: ImageFolder[] = [];
  for (const [name, split] of [
    ["Train", "train"],
    ["Test", "test"],
  ] as const) {
    const dir = await findDir(root, [name]);
    if (!dir) continue;
    const images = await findDir(dir, ["Images"]);
    const masks = await findDir(dir, ["GTs"]);
    if (!images || !masks) return undefined;
    folders.push({ images, masks, split });
  }
  if (!folders.length) return undefined;
  const prompt = await findDir(root, ["prompt", "prompts"]);
  return {
    layout: "guideseg",
    root,
    folders,
    reports: prompt ? [prompt] : [],
    reason: `found Train/ and Test/ with Images/ and GTs/${prompt ? " and prompt/*.csv" : ""} (GuideSeg)`,
  };
}

async function sgseg(root: string): Promise<LayoutPaths | undefined> {
  const imagesRoot = await findDir(root, ["images"]);
  if (!imagesRoot) return undefined;
  const folders: ImageFolder[] = [];
  for (const [name, split] of [
    ["train", "train"],
    ["valid", "val"],
    ["val", "val"],
    ["test", "test"],
  ] as const) {
    const dir = await findDir(imagesRoot, [name]);
    if (!dir || (await childrenOf(dir)).length === 0) continue;
    const images = await findDir(dir, ["images"]);
    const masks = await findDir(dir, ["masks"]);
    if (!images || !masks) return undefined;
    folders.push({ images, masks, split });
  }
  if (!folders.length) return undefined;
  const prompts = await findDir(root, ["prompts"]);
  const annotation = prompts ? await findFile(prompts, ["annotation.json"]) : undefined;
  return {
    layout: "sgseg",
    root,
    folders,
    reports: annotation ? [annotation] : [],
    reason: `found images/{${folders.map((f) => path.basename(path.dirname(f.images))).join(",")}}/{images,masks}${annotation ? " and prompts/annotation.json" : ""} (SGSeg)`,
  };
}

async function prolearn(root: string): Promise<LayoutPaths | undefined> {
  const splitFile = await findFile(root, ["split.json"]);
  const images = await findDir(root, ["images"]);
  const masks = await findDir(root, ["masks"]);
  if (!splitFile || !images || !masks) return undefined;
  const reports = await findDir(root, ["reports"]);
  return {
    layout: "prolearn",
    root,
    folders: [{ images, masks }],
    reports: [],
    textReportFolder: reports,
    splitFile,
    reason: "found images/, masks/ and split.json (ProLearn)",
  };
}

async function kvasir(root: string): Promise<LayoutPaths | undefined> {
  const images = await findDir(root, ["images"]);
  const masks = await findDir(root, ["masks"]);
  if (!images || !masks) return undefined;
  const bboxFile = await findFile(root, ["kavsir_bboxes.json", "kvasir_bboxes.json"]);
  // MedVLSM's annotation folder sits beside or inside the dataset folder in the usual downloads.
  const reportsDir = (await findDir(root, ["reports-medvlsm"])) ?? (await findDir(path.dirname(root), ["reports-medvlsm"]));
  return {
    layout: "kvasir",
    root,
    folders: [{ images, masks }],
    reports: reportsDir ? [reportsDir] : [],
    bboxFile,
    reason: `found images/ and masks/${bboxFile ? ` and ${path.basename(bboxFile)}` : ""} (Kvasir-SEG)${reportsDir ? `; reports from ${reportsDir}` : ""}`,
  };
}

async function tryLayout(layout: ConcreteLayout, root: string, detecting: boolean): Promise<LayoutPaths | undefined> {
  switch (layout) {
    case "kaggle":
      return kaggle(root);
    case "lvit":
      // Detection picks xlsx or CSV text by what is there; a named `lvit` layout means xlsx.
      return lvit(root, detecting ? undefined : false);
    case "lvit-csv":
      return lvit(root, true);
    case "guideseg":
      return guideseg(root);
    case "sgseg":
      return sgseg(root);
    case "prolearn":
      return prolearn(root);
    case "kvasir":
      return kvasir(root);
  }
}

/** Detection order: the most specific markers first (split.json, annotation folders), plain images/+masks/ last. */
const DETECTION_ORDER: ConcreteLayout[] = ["prolearn", "kaggle", "lvit", "guideseg", "sgseg", "kvasir"];

/**
 * Resolves the layout: the named one (checked), or the first that fits under `auto`. The dataset
 * root may also be the folder above the layout (e.g. `QaTa-COV19/` holding `QaTa-COV19-v2/`).
 */
export async function resolveLayout(root: string, layout: DatasetLayout, kind: DatasetKind): Promise<LayoutPaths> {
  const rootInfo = await stat(root).catch(() => undefined);
  if (!rootInfo?.isDirectory())
    throw new DataError(`dataset root ${root} is not a folder`, {
      location: { file: root, keyPath: "dataset.root" },
      hint: "set dataset.root to the folder that holds the images",
    });
  const candidates = [root];
  const children = (await childrenOf(root)).filter((c) => c.isDir && !c.name.startsWith("."));
  if (children.length === 1) candidates.push(path.join(root, children[0]!.name));
  const order =
    layout === "auto"
      ? kind === "kvasir-seg"
        ? (["prolearn", "kvasir", ...DETECTION_ORDER.filter((l) => l !== "kvasir" && l !== "prolearn")] as ConcreteLayout[])
        : DETECTION_ORDER
      : [layout];
  for (const dir of candidates) {
    for (const candidate of order) {
      const found = await tryLayout(candidate, dir, layout === "auto");
      if (found) {
        if (dir !== root) found.reason += ` in ${path.basename(dir)}/`;
        if (layout === "auto") found.reason = `auto-detected ${found.layout}: ${found.reason}`;
        return found;
      }
    }
  }
  const listing =
    children
      .map((c) => c.name)
      .slice(0, 12)
      .join(", ") || "(empty)";
  // A root one folder too high (several datasets side by side): name the child folders that fit.
  const fitting: string[] = [];
  if (children.length > 1) {
    for (const child of children.slice(0, 24)) {
      for (const candidate of order) {
        const found = await tryLayout(candidate, path.join(root, child.name), layout === "auto").catch(() => undefined);
        if (found) {
          fitting.push(`${path.join(root, child.name)} (${found.layout})`);
          break;
        }
      }
    }
  }
  const hint = fitting.length
    ? `set dataset.root to ${fitting.length === 1 ? "the child folder that is in a known layout" : "one of the child folders in a known layout"}: ${fitting.join(", ")}`
    : "see docs/ingest.md for the folder structure of each layout (kaggle, lvit, lvit-csv, guideseg, sgseg, prolearn, kvasir)";
  throw new DataError(
    layout === "auto" ? `cannot tell the layout of ${root} (it holds: ${listing})` : `${root} is not in the ${layout} layout (it holds: ${listing})`,
    { location: { file: root, keyPath: "dataset.layout" }, hint },
  );
}

export interface FoundFile {
  /** Absolute path. */
  abs: string;
  /** Path relative to the dataset root. */
  rel: string;
  name: string;
  /** Resolved target when the file is a symbolic link pointing outside the root. */
  escapesTo?: string;
  /** Why it cannot be read (a FIFO, a link to nothing, ...); such files are never opened. */
  notRegular?: string;
}

/** Files commonly left by file managers; counted but not treated as data. */
export const SYSTEM_FILES = new Set([".ds_store", "thumbs.db", "desktop.ini"]);

/** Lists the plain files of a folder (not recursive), sorted, marking links that leave the root. */
export async function listFiles(dir: string, datasetRoot: string, realRoot: string): Promise<{ files: FoundFile[]; ignored: string[] }> {
  const files: FoundFile[] = [];
  const ignored: string[] = [];
  // Only links need resolving one by one: any other entry lies where its folder really is.
  const realDir = await realpath(dir).catch(() => undefined);
  for (const child of await childrenOf(dir)) {
    if (child.isDir) continue;
    const abs = path.join(dir, child.name);
    const rel = path.relative(datasetRoot, abs);
    if (SYSTEM_FILES.has(child.name.toLowerCase()) || child.name.startsWith("._")) {
      ignored.push(rel);
      continue;
    }
    const real = child.isLink || !realDir ? await realpath(abs).catch(() => abs) : path.join(realDir, child.name);
    const inside = real === realRoot || real.startsWith(realRoot + path.sep);
    files.push({ abs, rel, name: child.name, escapesTo: inside ? undefined : real, notRegular: child.notRegular });
  }
  return { files, ignored };
}
