import path from "node:path";
import { defineCommand } from "../command.js";
import { writeParquetFile } from "../../io/parquet.js";
import { embedImageFolders } from "../../embed/embed-files.js";
import { ProgressRenderer } from "../render.js";
import { encoderOptions, readEncoderOptions } from "./embed-texts.js";

export default defineCommand({
  name: "embed images",
  summary: "Embed every PNG/JPEG image under one or more folders into a Parquet file",
  details:
    "Writes one row per image, folders in the order given and files sorted by path within each: `path`, `sha256` of the file, `embedding` (FixedSizeList<float32>[dim]).",
  positionals: [{ name: "folder", description: "folders searched recursively for .png/.jpg/.jpeg", required: true, variadic: true }],
  options: { ...encoderOptions },
  async run(args, io) {
    const options = readEncoderOptions(args);
    const renderer = new ProgressRenderer(io);
    const result = await embedImageFolders(args.positionals, {
      ...options,
      onProgress: (done, total) => renderer.handle({ kind: "progress", stage: "embed", task: "images", done, total, unit: "images" }),
    });
    await writeParquetFile(path.resolve(options.out), result.table);
    io.stderr.write(`embedded ${result.table.numRows} images with ${result.encoder.id} (dim ${result.encoder.dim}) -> ${options.out}\n`);
    io.stdout.write(`${JSON.stringify({ out: path.resolve(options.out), rows: result.table.numRows, encoder: result.encoder })}\n`);
    return 0;
  },
});
