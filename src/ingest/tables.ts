import { defineTable } from "../io/columns.js";
import { QUARANTINE_REASONS } from "./reasons.js";

// The one description of ingest's tables: the Arrow schema (./schema.ts), the JSON Schema
// (schemas/samples.schema.json), the publish check and the readers derive from it.

export const SAMPLES_TABLE = defineTable("ingest", "samples.parquet", "One ingested image with its binarised mask and report (output of the ingest stage).", [
  {
    name: "id",
    type: "utf8",
    nullable: false,
    description: "Stable sample id: the image file stem (lower case for QaTa-COV19, whose layouts differ in case).",
  },
  { name: "dataset", type: "utf8", nullable: false, description: "Dataset kind.", enum: ["qata-cov19", "mosmeddata-plus", "kvasir-seg"] },
  { name: "split", type: "utf8", nullable: false, description: "Split: official where the layout defines one, else seeded.", enum: ["train", "val", "test"] },
  { name: "image", type: "binary", nullable: false, description: "The image file's bytes as found (PNG/JPEG/TIFF/WebP)." },
  { name: "mask", type: "binary", nullable: false, description: "Binarised mask: PNG, 8-bit grey, values 0/1, same size as the image." },
  { name: "width", type: "int32", nullable: false, description: "Image width in pixels." },
  { name: "height", type: "int32", nullable: false, description: "Image height in pixels." },
  { name: "image_format", type: "utf8", nullable: false, description: "Decoded format of the image bytes (png, jpeg, tiff, webp)." },
  {
    name: "report",
    type: "utf8",
    nullable: true,
    description: "Report text verbatim; null when no report names the image. Kept for evaluation even when report_available is false.",
  },
  {
    name: "report_normalized",
    type: "utf8",
    nullable: true,
    description: "Report with padding markers (EOF XXX) removed, whitespace folded, '..' reduced to '.'.",
  },
  {
    name: "report_available",
    type: "bool",
    nullable: false,
    description: "Later stages may read the report: the textAvailability subset of train; val/test wherever a report exists.",
  },
  {
    name: "report_in_budget",
    type: "bool",
    nullable: false,
    description:
      "The report counts within the text budget, so a model choice (early stopping, the filter's threshold) may read it: train as report_available; val: the same seeded share textAvailability of the validation reports; test: never. Val reports outside it feed diagnostics only.",
  },
  { name: "image_sha256", type: "utf8", nullable: false, description: "SHA-256 of the source image file." },
  { name: "mask_sha256", type: "utf8", nullable: false, description: "SHA-256 of the source mask file (before binarisation)." },
  { name: "source_image", type: "utf8", nullable: false, description: "Image path relative to the dataset root, '/'-separated." },
  { name: "source_mask", type: "utf8", nullable: false, description: "Mask path relative to the dataset root, '/'-separated." },
  { name: "mask_empty", type: "bool", nullable: false, description: "The mask has no foreground (kept, and listed in quarantine.parquet with kept = true)." },
  { name: "mask_coverage", type: "float64", nullable: false, description: "Fraction of foreground pixels in the mask." },
] as const);

export const IMAGES_TABLE = defineTable(
  "ingest",
  "images.parquet",
  "One ingested image as an image-only model sees it: the id, split and digests of the image and stored mask bytes of samples.parquet, in the same order, and no text. Its bytes do not change with textAvailability, so a stage that learns from images only (baseline) keys on it.",
  [
    { name: "id", type: "utf8", nullable: false, description: "Sample id, as in samples.parquet." },
    { name: "split", type: "utf8", nullable: false, description: "Split, as in samples.parquet.", enum: ["train", "val", "test"] },
    { name: "image_sha256", type: "utf8", nullable: false, description: "SHA-256 of the image bytes in samples.parquet (the source file as found)." },
    { name: "mask_png_sha256", type: "utf8", nullable: false, description: "SHA-256 of the binarised mask PNG stored in samples.parquet." },
  ] as const,
);

export const QUARANTINE_TABLE = defineTable("ingest", "quarantine.parquet", "One problem found while ingesting.", [
  { name: "source", type: "utf8", nullable: false, description: "Path of the problem file, relative to the dataset root." },
  { name: "reason", type: "utf8", nullable: false, description: "Stable reason code.", enum: Object.keys(QUARANTINE_REASONS) as readonly string[] },
  { name: "detail", type: "utf8", nullable: false, description: "What exactly is wrong." },
  {
    name: "scope",
    type: "utf8",
    nullable: false,
    description: "image (a sample), mask (a stray mask) or report (a report file or row).",
    enum: ["image", "mask", "report"],
  },
  { name: "id", type: "utf8", nullable: true, description: "Sample id, where the entry concerns an image." },
  { name: "row", type: "int32", nullable: true, description: "1-based data row of a report table." },
  { name: "kept", type: "bool", nullable: false, description: "True when the sample is still ingested (empty-mask)." },
] as const);

export const ORPHANS_TABLE = defineTable("ingest", "orphans.parquet", "One report row whose image is absent.", [
  { name: "report_key", type: "utf8", nullable: false, description: "The image/mask name as the report source writes it." },
  { name: "report_file", type: "utf8", nullable: false, description: "Report file, relative to the dataset root." },
  { name: "row", type: "int32", nullable: false, description: "1-based data row (JSON: record index)." },
  { name: "split", type: "utf8", nullable: true, description: "Split the report source assigns, if any." },
  { name: "report", type: "utf8", nullable: false, description: "Report text verbatim." },
] as const);
