import path from "node:path";
import { Field, Float32, Int32, List, Table, Utf8, type makeVector, vectorFromArray } from "apache-arrow";
import { defineCommand, numberOption, stringOption } from "../command.js";
import { DataError, UsageError } from "../../errors.js";
import { writeParquetFile } from "../../io/parquet.js";
import { embeddingVector, readEmbeddingFile } from "../../io/tables.js";
import { PrototypeSpace } from "../../prototypes/psa.js";
import { ArtifactRegistry, isArtifactFolder } from "../../prototypes/registry.js";

export default defineCommand({
  name: "prototypes query",
  summary: "Approximate text embeddings for image embeddings with a prototype space (PSA)",
  details:
    "ARTIFACT is an artifact folder, or NAME / NAME@VERSION / NAME@ALIAS in the registry of --workdir. The output Parquet has id (when the input has one), text_embedding (approximated), prototype_ids and weights.",
  positionals: [
    { name: "artifact", description: "artifact folder or registry reference", required: true },
    { name: "embeddings", description: "Parquet with an image-embedding column", required: true },
  ],
  options: {
    column: { type: "string", valueName: "NAME", description: "image-embedding column", default: "image_embedding" },
    "top-k": { type: "number", valueName: "K", description: "prototypes mixed per query", default: "3" },
    temperature: { type: "number", valueName: "T", description: "softmax temperature", default: "1" },
    workdir: { type: "string", valueName: "DIR", description: "workdir whose registry resolves NAME@VERSION", default: ".prolearn" },
    out: { type: "string", valueName: "FILE", description: "output Parquet" },
    json: { type: "boolean", description: "print a JSON summary on stdout", default: false },
  },
  async run(args, io) {
    const [artifact, input] = args.positionals as [string, string];
    const out = stringOption(args, "out");
    if (!out) throw new UsageError("missing --out FILE.parquet");
    let dir = artifact;
    let expectedDigest: string | undefined;
    if (!isArtifactFolder(artifact)) {
      const registry = ArtifactRegistry.open(path.resolve(stringOption(args, "workdir")!));
      try {
        const v = registry.resolve(artifact);
        dir = v.path;
        expectedDigest = v.digest;
      } finally {
        registry.close();
      }
    }
    const space = await PrototypeSpace.load(dir, { expectedDigest });
    const column = stringOption(args, "column")!;
    const { embeddings, ids, numRows: n } = await readEmbeddingFile(input, column);
    const { values, dim, valid } = embeddings;
    if (dim !== space.dim)
      throw new DataError(`${column} has vectors of length ${dim}, expected ${space.dim} (the prototype space's width)`, {
        location: { file: input },
        hint: "embed with the encoder recorded in the artifact's manifest",
      });
    const missing = valid.indexOf(0);
    if (missing >= 0) throw new DataError(`${column} is null in row ${missing}`, { location: { file: input, row: missing } });
    const topK = numberOption(args, "top-k")!;
    const started = performance.now();
    const result = await space.queryAsync(values, { topK, temperature: numberOption(args, "temperature") });
    const seconds = (performance.now() - started) / 1000;
    const k = Math.min(topK, space.size);
    const listOf = <T extends Int32 | Float32>(type: T, flat: Int32Array | Float32Array) =>
      vectorFromArray(
        Array.from({ length: n }, (_, i) => Array.from(flat.subarray(i * k, (i + 1) * k))),
        new List(new Field("item", type, true)),
      );
    const columns: Record<string, ReturnType<typeof makeVector>> = {};
    if (ids) columns.id = vectorFromArray(ids, new Utf8());
    columns.text_embedding = embeddingVector(result.embeddings, dim, undefined, false);
    columns.prototype_ids = listOf(new Int32(), result.ids);
    columns.weights = listOf(new Float32(), result.weights);
    await writeParquetFile(out, new Table(columns));
    const summary = { artifact: dir, digest: space.manifest?.digest, rows: n, prototypes: space.size, topK: k, seconds: Number(seconds.toFixed(4)), out };
    if (args.options.json) io.stdout.write(JSON.stringify(summary) + "\n");
    else io.stderr.write(`${n} queries against ${space.size} prototypes in ${(seconds * 1000).toFixed(1)} ms -> ${out}\n`);
    return 0;
  },
});
