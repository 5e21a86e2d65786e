import { mkdir, rm, symlink, writeFile } from "node:fs/promises";
import path from "node:path";
import sharp from "sharp";
import { EnvironmentError, UsageError } from "../errors.js";
import type { DatasetKind, DatasetLayout } from "../pipeline/spec.js";
import type { QuarantineReason } from "../ingest/reasons.js";
import type { Split } from "../ingest/reports.js";
import { makeRng } from "./draw.js";
import { synthesizeSample, type SyntheticSample } from "./generate.js";

export type FixtureLayout = Exclude<DatasetLayout, "auto">;

export interface FixtureOptions {
  kind: DatasetKind;
  layout: FixtureLayout;
  /** Folder to write into (created; must be empty or absent). */
  out: string;
  /** Number of image/mask pairs (default 24). */
  n?: number;
  seed?: number;
  /** Image side in pixels (default 64). */
  size?: number;
  /** Add one input for each quarantine problem (layouts lvit, lvit-csv, guideseg, kvasir). */
  bad?: boolean;
  /**
   * Chest kinds: draw, besides the real lesions, a decoy lesion of the same appearance in a lung
   * zone the report does not name; it is not in the mask. Only the report then says which lesion
   * to segment (a test bed for language guidance). Default off; without it the bytes are unchanged.
   */
  decoys?: boolean;
}

export interface FixtureResult {
  kind: DatasetKind;
  layout: FixtureLayout;
  /** What to set as dataset.root. */
  root: string;
  /** What to set as dataset.reports, for layouts whose reports live apart (kaggle). */
  reports?: string;
  samples: number;
  /** The split the generator intended per sample (the layout's own rule may move some, e.g. GuideSeg val). */
  splits: Record<Split, number>;
  /** Quarantine reasons ingest must report (the --bad inputs, and empty-mask flags for lesion-free samples), sorted. */
  expectedQuarantine: QuarantineReason[];
}

/** Layouts where a --bad fixture can place broken report files beside the real ones. */
export const BAD_FIXTURE_LAYOUTS: readonly FixtureLayout[] = ["lvit", "lvit-csv", "guideseg", "kvasir"];

interface Named extends SyntheticSample {
  index: number;
  /** File stem as the layout spells it. */
  name: string;
  split: Split;
}

function sampleNames(kind: DatasetKind, n: number, seed: number): string[] {
  const rng = makeRng(seed ^ 0x5eed);
  const names: string[] = [];
  for (let i = 0; i < n; i++) {
    if (kind === "qata-cov19")
      names.push(i % 3 === 2 ? `sub-S${String(8000 + i).padStart(5, "0")}_ses-E${16000 + i * 7}_run-1_bp-chest_vp-ap_dx` : `covid_${i + 1}`);
    else if (kind === "mosmeddata-plus") names.push([`bjorke_${i + 1}`, `Jun_coronacases_case1_${100 + i}`, `Morozov_study_0255_${40 + i}`][i % 3]!);
    else {
      let id = "cju";
      for (let k = 0; k < 22; k++) id += "0123456789abcdefghijklmnopqrstuvwxyz"[Math.floor(rng() * 36)];
      names.push(id);
    }
  }
  return names;
}

function intendedSplit(seed: number, index: number): Split {
  const r = makeRng((seed * 31 + index * 104729 + 3) >>> 0)();
  return r < 0.7 ? "train" : r < 0.8 ? "val" : "test";
}

async function encodeImage(sample: SyntheticSample, format: "png" | "jpeg"): Promise<Buffer> {
  const raw = sharp(sample.pixels, { raw: { width: sample.width, height: sample.height, channels: sample.channels } });
  const image = sample.channels === 1 ? raw.toColourspace("b-w") : raw;
  return format === "png" ? image.png().toBuffer() : image.jpeg({ quality: 92 }).toBuffer();
}

async function encodeMask(sample: SyntheticSample, format: "png" | "jpeg"): Promise<Buffer> {
  const image = sharp(sample.mask, { raw: { width: sample.width, height: sample.height, channels: 1 } }).toColourspace("b-w");
  return format === "png" ? image.png().toBuffer() : image.jpeg({ quality: 95 }).toBuffer();
}

async function writeXlsx(file: string, header: string[], rows: string[][]): Promise<void> {
  // Only the LViT fixtures write workbooks, and exceljs is ~190 packages that no reader needs (the
  // readers use read-excel-file), so it is a development dependency: an installed package that
  // lacks it says how to get an LViT-style fixture anyway.
  let ExcelJS: typeof import("exceljs");
  try {
    ExcelJS = (await import("exceljs")).default as unknown as typeof import("exceljs");
  } catch (error) {
    throw new EnvironmentError(`writing ${file} needs the development dependency exceljs, which is not installed`, {
      hint: "use --layout lvit-csv (the same reports as a CSV), or `npm install exceljs` beside prolearn",
      cause: error,
    });
  }
  const workbook = new ExcelJS.Workbook();
  const sheet = workbook.addWorksheet("Sheet1");
  if (header.length) sheet.addRow(header);
  for (const row of rows) sheet.addRow(row);
  await workbook.xlsx.writeFile(file);
}

function csvField(value: string, delimiter: string): string {
  return value.includes(delimiter) || value.includes('"') || value.includes("\n") ? `"${value.replace(/"/g, '""')}"` : value;
}

function csvText(header: string[], rows: string[][], delimiter: string): string {
  return [header, ...rows].map((r) => r.map((c) => csvField(c, delimiter)).join(delimiter)).join("\n") + "\n";
}

/** LViT pads short reports with " EOF XXX"; some fixtures carry it so normalisation is exercised. */
function lvitText(sample: Named): string {
  return sample.index % 4 === 1 ? `${sample.report} EOF XXX` : sample.report;
}

interface Placement {
  imageDir: string;
  maskDir: string;
  imageFile: string;
  maskFile: string;
}

/**
 * Writes a synthetic dataset in exactly the on-disk layout of a public release (METHOD.md §6):
 * lesion images whose masks vary in shape, and reports generated from the masks (lung zones for
 * the chest datasets, size and position for polyps), in the layout's own report format.
 */
export async function writeFixtureDataset(options: FixtureOptions): Promise<FixtureResult> {
  const n = options.n ?? 24;
  const seed = options.seed ?? 42;
  const size = options.size ?? 64;
  const { kind, layout } = options;
  const out = path.resolve(options.out);
  checkFixtureOptions(options, n, size);
  await mkdir(out, { recursive: true });
  const names = sampleNames(kind, n, seed);
  const lower = layout === "sgseg";
  const samples: Named[] = names.map((name, index) => ({
    ...synthesizeSample(kind, seed, index, size, { decoys: options.decoys === true }),
    index,
    name: lower ? name.toLowerCase() : name,
    split: intendedSplit(seed, index),
  }));
  const splits: Record<Split, number> = { train: 0, val: 0, test: 0 };
  for (const s of samples) splits[s.split]++;
  const files = new FixtureFiles(kind, layout, out, samples);
  const written = await LAYOUT_WRITERS[layout](files);
  const root = written.root ?? out;

  // Generated samples without a lesion (MosMedData+ has slices without infection) are flagged, not dropped.
  const expectedQuarantine: QuarantineReason[] = samples.filter((s) => !s.mask.some((v) => v > 0)).map(() => "empty-mask" as const);
  if (options.bad) {
    const { ext, maskPrefix, imageFormat } = files;
    expectedQuarantine.push(
      ...(await addBadInputs({
        kind,
        layout,
        out: root,
        placement: files.firstPlacement!,
        reportFolder: written.reportFolder!,
        ext,
        maskPrefix,
        samples,
        imageFormat,
      })),
    );
  }
  expectedQuarantine.sort();
  return { kind, layout, root, reports: written.reports, samples: n, splits, expectedQuarantine };
}

function checkFixtureOptions(options: FixtureOptions, n: number, size: number): void {
  if (!Number.isInteger(n) || n < 1) throw new UsageError(`--n must be a positive integer, got ${n}`);
  if (!Number.isInteger(size) || size < 16) throw new UsageError(`--size must be an integer of at least 16, got ${size}`);
  if (options.bad && !BAD_FIXTURE_LAYOUTS.includes(options.layout)) {
    throw new UsageError(`--bad is available for the layouts ${BAD_FIXTURE_LAYOUTS.join(", ")}`, {
      hint: "their report sources are folders, where broken report files can sit beside the real ones",
    });
  }
  if (options.decoys && options.kind === "kvasir-seg") {
    throw new UsageError("--decoys is available for the chest kinds (qata-cov19, mosmeddata-plus)", {
      hint: "decoys are placed in lung zones that the report does not name; polyp prompts have no zones",
    });
  }
}

/** Writes samples' images and masks into a layout's folders, named as that release names them. */
class FixtureFiles {
  readonly imageFormat: "png" | "jpeg";
  readonly ext: string;
  /** Chest layouts name masks mask_<image>; MosMedData+ (LViT) and Kvasir use the image's own name. */
  readonly maskPrefix: string;
  firstPlacement: Placement | undefined;

  constructor(
    readonly kind: DatasetKind,
    layout: FixtureLayout,
    readonly out: string,
    readonly samples: Named[],
  ) {
    this.imageFormat = layout === "kvasir" ? "jpeg" : "png";
    this.ext = this.imageFormat === "jpeg" ? ".jpg" : ".png";
    this.maskPrefix = kind === "qata-cov19" ? "mask_" : "";
  }

  async place(sample: Named, imageDir: string, maskDir: string): Promise<Placement> {
    await mkdir(imageDir, { recursive: true });
    await mkdir(maskDir, { recursive: true });
    const imageFile = path.join(imageDir, `${sample.name}${this.ext}`);
    const maskFile = path.join(maskDir, this.maskName(sample));
    await writeFile(imageFile, await encodeImage(sample, this.imageFormat));
    await writeFile(maskFile, await encodeMask(sample, this.imageFormat));
    const placement = { imageDir, maskDir, imageFile, maskFile };
    this.firstPlacement ??= placement;
    return placement;
  }

  maskName(sample: Named): string {
    return `${this.maskPrefix}${sample.name}${this.ext}`;
  }

  bySplit(split: Split): Named[] {
    return this.samples.filter((s) => s.split === split);
  }
}

/** Where a layout writer put the dataset root (when not `out`), a separate report file, and the report folder. */
interface WrittenLayout {
  root?: string;
  reports?: string;
  reportFolder?: string;
}

const LAYOUT_WRITERS: Record<FixtureLayout, (files: FixtureFiles) => Promise<WrittenLayout>> = {
  async kaggle(files) {
    const root = path.join(files.out, "QaTa-COV19-v2");
    for (const s of files.samples) {
      const set = s.split === "test" ? "Test Set" : "Train Set";
      await files.place(s, path.join(root, set, "Images"), path.join(root, set, "Ground-truths"));
    }
    // The Kaggle release has no text; reports come from a separate CSV (LViT's Image,Description).
    const reports = path.join(files.out, "reports.csv");
    await writeFile(
      reports,
      csvText(
        ["Image", "Description"],
        files.samples.map((s) => [files.maskName(s), lvitText(s)]),
        ",",
      ),
    );
    return { root, reports };
  },
  lvit: (files) => writeLvit(files, "xlsx"),
  "lvit-csv": (files) => writeLvit(files, "csv"),
  async guideseg(files) {
    const { out } = files;
    const reportFolder = path.join(out, "prompt");
    await mkdir(reportFolder, { recursive: true });
    const train = [...files.bySplit("train"), ...files.bySplit("val")];
    const test = files.bySplit("test");
    for (const s of train) await files.place(s, path.join(out, "Train", "Images"), path.join(out, "Train", "GTs"));
    for (const s of test) await files.place(s, path.join(out, "Test", "Images"), path.join(out, "Test", "GTs"));
    await writeFile(
      path.join(reportFolder, "train.csv"),
      csvText(
        ["Image", "Description"],
        train.map((s) => [files.maskName(s), s.report]),
        ",",
      ),
    );
    if (test.length)
      await writeFile(
        path.join(reportFolder, "test.csv"),
        csvText(
          ["Image", "Description"],
          test.map((s) => [files.maskName(s), s.report]),
          ",",
        ),
      );
    return { reportFolder };
  },
  async sgseg(files) {
    const { out } = files;
    const folder: Record<Split, string> = { train: "train", val: "valid", test: "test" };
    const annotation: Record<string, unknown[]> = { train: [], valid: [], test: [] };
    for (const s of files.samples) {
      await files.place(s, path.join(out, "images", folder[s.split], "images"), path.join(out, "images", folder[s.split], "masks"));
      const zones = s.zones ?? [0, 0, 0, 0, 0, 0];
      const lungs = [zones.slice(0, 3).some(Boolean), zones.slice(3).some(Boolean)].filter(Boolean).length;
      annotation[folder[s.split]]!.push({
        image_path: files.maskName(s),
        caption: s.report.toLowerCase(),
        pulmonary_infection: lungs,
        infected_area: zones.reduce((a, b) => a + b, 0),
        pseudo_label: zones,
      });
    }
    await mkdir(path.join(out, "prompts"), { recursive: true });
    await writeFile(path.join(out, "prompts", "annotation.json"), JSON.stringify(annotation));
    return {};
  },
  async prolearn(files) {
    const { out } = files;
    await mkdir(path.join(out, "reports"), { recursive: true });
    for (const s of files.samples) {
      await files.place(s, path.join(out, "images"), path.join(out, "masks"));
      await writeFile(path.join(out, "reports", `${s.name}.txt`), `${s.report}\n`);
    }
    const names = (split: Split) => files.bySplit(split).map((s) => s.name);
    await writeFile(path.join(out, "split.json"), JSON.stringify({ train: names("train"), val: names("val"), test: names("test") }, null, 2));
    return {};
  },
  async kvasir(files) {
    const { out } = files;
    const bboxes: Record<string, unknown> = {};
    for (const s of files.samples) {
      await files.place(s, path.join(out, "images"), path.join(out, "masks"));
      const [xmin, ymin, xmax, ymax] = s.bbox ?? [0, 0, 0, 0];
      bboxes[s.name] = { height: s.height, width: s.width, bbox: [{ label: "polyp", xmin, ymin, xmax, ymax }] };
    }
    await writeFile(path.join(out, "kavsir_bboxes.json"), JSON.stringify(bboxes));
    const reportFolder = path.join(out, "reports-medvlsm");
    await mkdir(reportFolder, { recursive: true });
    for (const split of ["train", "val", "test"] as const) {
      if (!files.bySplit(split).length) continue;
      const records = files.bySplit(split).map((s) => ({
        bbox: s.bbox,
        cat: 0,
        segment_id: s.name,
        img_name: `${s.name}.jpg`,
        mask_name: `${s.name}.jpg`,
        sentences: [{ idx: 0, sent_id: s.index, sent: "" }],
        prompts: s.prompts,
      }));
      await writeFile(path.join(reportFolder, `${split}.json`), JSON.stringify(records));
    }
    return { reportFolder };
  },
};

/** LViT's release: Train/Val/Test_Folder with img/ and labelcol/, text as one workbook (or `;` CSV) per split. */
async function writeLvit(files: FixtureFiles, text: "xlsx" | "csv"): Promise<WrittenLayout> {
  const { out } = files;
  const folders: Record<Split, string> = { train: "Train_Folder", val: "Val_Folder", test: "Test_Folder" };
  const textName: Record<Split, string> =
    files.kind === "mosmeddata-plus"
      ? { train: "Train_text_MosMedData+ 1", val: "Val_text_MosMedData+ 1", test: "Test_text_MosMedData+ 1" }
      : { train: "Train_text", val: "Val_text", test: "Test_text" };
  const reportFolder = text === "csv" ? path.join(out, "text") : out;
  await mkdir(reportFolder, { recursive: true });
  for (const split of ["train", "val", "test"] as const) {
    const samples = files.bySplit(split);
    if (!samples.length) continue;
    for (const s of samples) await files.place(s, path.join(out, folders[split], "img"), path.join(out, folders[split], "labelcol"));
    const rows = samples.map((s) => [files.maskName(s), lvitText(s)]);
    if (text === "xlsx") await writeXlsx(path.join(out, `${textName[split]}.xlsx`), ["Image", "Description"], rows);
    else await writeFile(path.join(reportFolder, `${textName[split]}(in).csv`), csvText(["Image", "text"], rows, ";"));
  }
  return { reportFolder };
}

/** Adds one input per quarantine problem next to the good ones; returns the reasons they must produce. */
async function addBadInputs(args: {
  kind: DatasetKind;
  layout: FixtureLayout;
  out: string;
  placement: Placement;
  reportFolder: string;
  ext: string;
  maskPrefix: string;
  samples: Named[];
  imageFormat: "png" | "jpeg";
}): Promise<QuarantineReason[]> {
  const { placement, ext, maskPrefix, samples, imageFormat } = args;
  const good = samples[0]!;
  const img = (name: string) => path.join(placement.imageDir, `${name}${ext}`);
  const msk = (name: string) => path.join(placement.maskDir, `${maskPrefix}${name}${ext}`);
  const goodImage = await encodeImage(good, imageFormat);
  const goodMask = await encodeMask(good, imageFormat);
  const reasons: QuarantineReason[] = [];

  await writeFile(img("bad_garbage"), Buffer.from("this is not an image at all, just text bytes"));
  await writeFile(msk("bad_garbage"), goodMask);
  reasons.push("unreadable-image");

  await writeFile(img("bad_truncated"), goodImage.subarray(0, Math.floor(goodImage.length * 0.6)));
  await writeFile(msk("bad_truncated"), goodMask);
  reasons.push("truncated-image");

  await writeFile(path.join(placement.imageDir, "bad_format.bmp"), Buffer.concat([Buffer.from("BM"), Buffer.alloc(60)]));
  reasons.push("unsupported-format");

  await writeFile(img("bad_nomask"), goodImage);
  reasons.push("missing-mask");

  await writeFile(img("bad_size"), goodImage);
  const small = sharp(good.mask, { raw: { width: good.width, height: good.height, channels: 1 } }).resize(
    Math.max(8, good.width >> 1),
    Math.max(8, good.height >> 1),
    { kernel: "nearest" },
  );
  await writeFile(msk("bad_size"), imageFormat === "png" ? await small.png().toBuffer() : await small.jpeg().toBuffer());
  reasons.push("mask-size-mismatch");

  await writeFile(img("bad_grey"), goodImage);
  const ramp = new Uint8Array(good.width * good.height);
  for (let i = 0; i < ramp.length; i++) ramp[i] = Math.floor(((i % good.width) / good.width) * 256);
  const rampImage = sharp(ramp, { raw: { width: good.width, height: good.height, channels: 1 } });
  await writeFile(msk("bad_grey"), imageFormat === "png" ? await rampImage.png().toBuffer() : await rampImage.jpeg().toBuffer());
  reasons.push("mask-not-binary");

  await writeFile(img("bad_empty"), goodImage);
  const blank = sharp(new Uint8Array(good.width * good.height), { raw: { width: good.width, height: good.height, channels: 1 } });
  await writeFile(msk("bad_empty"), imageFormat === "png" ? await blank.png().toBuffer() : await blank.jpeg().toBuffer());
  reasons.push("empty-mask");

  // Same id as the first sample (the id is the file stem), different bytes.
  const otherExt = ext === ".png" ? ".jpg" : ".png";
  const dup = sharp(good.pixels, { raw: { width: good.width, height: good.height, channels: good.channels } });
  await writeFile(path.join(placement.imageDir, `${good.name}${otherExt}`), otherExt === ".png" ? await dup.png().toBuffer() : await dup.jpeg().toBuffer());
  reasons.push("duplicate-id");

  // A symbolic link leaving the dataset root.
  const outside = path.join(path.dirname(args.out), `${path.basename(args.out)}-outside${ext}`);
  await writeFile(outside, goodImage);
  await rm(img("bad_link"), { force: true });
  await symlink(outside, img("bad_link"));
  await writeFile(msk("bad_link"), goodMask);
  reasons.push("path-escapes-root");

  // Broken report files beside the real ones, and a report row naming a path outside the root.
  const escapeName = `../../outside${ext}`;
  if (args.layout === "kvasir") {
    await writeFile(path.join(args.reportFolder, "extra_empty.json"), "");
    await writeFile(path.join(args.reportFolder, "extra_broken.json"), '{"train": [ {"img_name": ');
    await writeFile(
      path.join(args.reportFolder, "extra_escape.json"),
      JSON.stringify([{ img_name: escapeName, mask_name: escapeName, prompts: { p6: "one small pink round polyp, located in left of the image" } }]),
    );
  } else if (args.layout === "lvit") {
    await writeXlsx(path.join(args.reportFolder, "Extra_empty_text.xlsx"), [], []);
    await writeFile(path.join(args.reportFolder, "Extra_broken_text.xlsx"), Buffer.from("PK\u0003\u0004 this is not a real workbook"));
    await writeXlsx(
      path.join(args.reportFolder, "Extra_escape_text.xlsx"),
      ["Image", "Description"],
      [[escapeName, "Unilateral pulmonary infection, one infected area, lower left lung."]],
    );
  } else {
    const header = args.layout === "lvit-csv" ? ["Image", "text"] : ["Image", "Description"];
    const delimiter = args.layout === "lvit-csv" ? ";" : ",";
    await writeFile(path.join(args.reportFolder, "extra_empty.csv"), "");
    await writeFile(path.join(args.reportFolder, "extra_broken.csv"), `Name${delimiter}Words\nx${delimiter}y\n`);
    await writeFile(
      path.join(args.reportFolder, "extra_escape.csv"),
      csvText(header, [[escapeName, "Unilateral pulmonary infection, one infected area, lower left lung."]], delimiter),
    );
  }
  reasons.push("empty-report-file", "malformed-report-file", "path-escapes-root");
  return reasons.sort();
}
