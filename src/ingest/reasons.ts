/**
 * Stable reason codes for quarantined inputs. They are part of the output contract
 * (quarantine.parquet `reason`), so codes are only ever added, never renamed.
 */
export const QUARANTINE_REASONS = {
  "unreadable-image": "the image file cannot be decoded (not an image, or corrupt header)",
  "truncated-image": "the image header is valid but its pixel data ends early",
  "unsupported-format": "the file is not a PNG, JPEG, TIFF or WebP image",
  "missing-mask": "no mask file pairs with the image",
  "unreadable-mask": "the mask file cannot be decoded",
  "mask-size-mismatch": "the mask's width/height differ from the image's",
  "mask-not-binary": "too many mask pixels lie between background and foreground (see the binarisation rule)",
  "empty-mask": "the mask has no foreground pixel (the sample is kept and flagged)",
  "duplicate-id": "another image already has this sample id (different bytes)",
  "path-escapes-root": "a path (report entry or symbolic link) points outside the dataset root",
  "mask-without-image": "a mask file that no image pairs with",
  "empty-report-file": "a report table (xlsx/csv/json) holds no rows",
  "malformed-report-file": "a report table cannot be parsed or lacks the expected columns",
  "malformed-report-row": "a report row lacks its image name or text, cannot be parsed (unbalanced quote), or has more cells than its header",
  "invalid-text-encoding":
    "a report holds bytes that are not UTF-8 or UTF-16 with a byte-order mark (they would have become U+FFFD), or a control character such as NUL; re-save the file as UTF-8",
  "invalid-id": "an image name or report key holds a control or invisible character (newline, tab, bidi override, zero-width space, ...)",
} as const;

export type QuarantineReason = keyof typeof QUARANTINE_REASONS;

/** Reasons whose sample stays in samples.parquet, flagged (every other reason sets its input aside). */
export const KEPT_REASONS: ReadonlySet<QuarantineReason> = new Set(["empty-mask"]);

/** What a quarantine entry is about: an image sample, or a report file/row, or a stray file. */
export type QuarantineScope = "image" | "mask" | "report";

export interface QuarantineEntry {
  /** Path relative to the dataset root (or absolute when outside it, e.g. a reports file). */
  source: string;
  reason: QuarantineReason;
  detail: string;
  scope: QuarantineScope;
  /** Sample id where the entry concerns an image. */
  id: string | null;
  /** 1-based row in a report table, where the entry concerns one. */
  row: number | null;
  /** True for flagged-but-kept samples (empty-mask). */
  kept: boolean;
}

export function quarantineEntry(
  partial: Omit<QuarantineEntry, "id" | "row" | "kept"> & Partial<Pick<QuarantineEntry, "id" | "row" | "kept">>,
): QuarantineEntry {
  return { id: null, row: null, kept: KEPT_REASONS.has(partial.reason), ...partial };
}
