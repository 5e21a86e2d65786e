import path from "node:path";
import { defineCommand, numberOption, stringOption, type ParsedArgs } from "../command.js";
import { UsageError } from "../../errors.js";
import { writeParquetFile } from "../../io/parquet.js";
import { embedTextFile, type EmbedFilesOptions } from "../../embed/embed-files.js";
import { ENCODER_KINDS, type EncoderKind } from "../../embed/encoder-kinds.js";
import { ProgressRenderer } from "../render.js";

export const encoderOptions = {
  encoder: {
    type: "string",
    choices: ENCODER_KINDS,
    description: "builtin (offline stand-in) or biomedclip (exported ONNX folder)",
    default: "builtin",
    valueName: "KIND",
  },
  model: { type: "string", description: "BiomedCLIP folder from tools/export_biomedclip.py (with --encoder biomedclip)", valueName: "DIR" },
  dim: { type: "number", description: "embedding width of the builtin encoder (default 512)", valueName: "N" },
  "batch-size": { type: "number", description: "rows per encoder call", default: "64", valueName: "N" },
  concurrency: { type: "number", description: "encoder calls in flight", default: "2", valueName: "N" },
  out: { type: "string", description: "output Parquet file", valueName: "FILE" },
} as const;

export function readEncoderOptions(args: ParsedArgs): EmbedFilesOptions & { out: string } {
  const encoder = stringOption(args, "encoder") ?? "builtin";
  if (!(ENCODER_KINDS as readonly string[]).includes(encoder)) throw new UsageError(`--encoder must be one of ${ENCODER_KINDS.join(", ")}, got "${encoder}"`);
  const positiveInt = (name: string, fallback?: number) => {
    const value = numberOption(args, name, fallback);
    if (value !== undefined && (!Number.isInteger(value) || value < 1)) throw new UsageError(`--${name} expects a positive integer, got ${value}`);
    return value;
  };
  return {
    encoder: encoder as EncoderKind,
    model: stringOption(args, "model"),
    dim: positiveInt("dim"),
    batchSize: positiveInt("batch-size", 64)!,
    concurrency: positiveInt("concurrency", 2)!,
    out: stringOption(args, "out", true),
  };
}

export default defineCommand({
  name: "embed texts",
  summary: "Embed the texts of a CSV, JSON (e.g. SGSeg annotation.json) or Parquet file into a Parquet file",
  details:
    "Writes one row per input row, in order: `text` and `embedding` (FixedSizeList<float32>[dim], null where the text is missing or blank), plus `split` when the input names splits (annotation.json: every split). The builtin encoder fits its TF-IDF statistics on the training split when the input names one, else on every text.",
  positionals: [{ name: "input", description: "a .csv, .json or .parquet file", required: true }],
  options: {
    column: {
      type: "string",
      description: "column (or dotted JSON key, e.g. prompts.p6) holding the text; default: Description/caption/text/report",
      valueName: "NAME",
    },
    ...encoderOptions,
  },
  async run(args, io) {
    const options = readEncoderOptions(args);
    const input = args.positionals[0]!;
    const renderer = new ProgressRenderer(io);
    const result = await embedTextFile(input, {
      ...options,
      column: stringOption(args, "column"),
      onProgress: (done, total) => renderer.handle({ kind: "progress", stage: "embed", task: "texts", done, total, unit: "rows" }),
    });
    await writeParquetFile(path.resolve(options.out), result.table);
    const fitted = result.encoder.fittedOn !== undefined ? `, TF-IDF fitted on ${result.encoder.fittedOn} texts` : "";
    io.stderr.write(
      `embedded ${result.rows.texts.length} rows of column ${result.rows.column} with ${result.encoder.id} (dim ${result.encoder.dim}${fitted}) -> ${options.out}\n`,
    );
    io.stdout.write(
      `${JSON.stringify({ out: path.resolve(options.out), rows: result.rows.texts.length, column: result.rows.column, encoder: result.encoder })}\n`,
    );
    return 0;
  },
});
