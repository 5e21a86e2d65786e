import { readFile, stat } from "node:fs/promises";
import path from "node:path";
import { z } from "zod";
import { ModelError } from "../errors.js";
import { FileDigester } from "../pipeline/file-digest.js";
import { hashJson } from "../util/hash.js";
import { BIOMEDCLIP_IMAGE_PREPROCESSING } from "./preprocessing-spec.js";

// The model folder's contract and digest, without ONNX Runtime, sharp or the tokenizer: the embed
// and guide stages compute the digest at plan time (StageDefinition.resources), and ./biomedclip.ts
// loads the models.

/**
 * The export contract shared with tools/export_biomedclip.py: file names, tensor names, opset.
 * The script writes these same literals into manifest.json; the loader checks the ONNX files
 * against the manifest.
 */
export const BIOMEDCLIP_EXPORT = {
  format: "prolearn-biomedclip-onnx/1",
  source: "hf-hub:microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224",
  opset: 17,
  files: { manifest: "manifest.json", image: "image.onnx", text: "text.onnx", textHidden: "text_hidden.onnx", tokenizer: "tokenizer.json" },
  tensors: { pixelValues: "pixel_values", imageEmbeds: "image_embeds", inputIds: "input_ids", textEmbeds: "text_embeds", lastHiddenState: "last_hidden_state" },
  embedDim: 512,
  imageSize: 224,
  contextLength: 256,
  hiddenSize: 768,
} as const;

const E = BIOMEDCLIP_EXPORT;
const triple = z.tuple([z.number(), z.number(), z.number()]);

export const biomedclipManifestSchema = z.object({
  format: z.literal(E.format),
  source: z.string().default(E.source),
  opset: z.number().int().default(E.opset),
  embedDim: z.number().int().positive().default(E.embedDim),
  image: z.object({
    file: z.string().default(E.files.image),
    input: z.string().default(E.tensors.pixelValues),
    output: z.string().default(E.tensors.imageEmbeds),
    size: z.number().int().positive().default(E.imageSize),
    mean: triple.default(BIOMEDCLIP_IMAGE_PREPROCESSING.mean),
    std: triple.default(BIOMEDCLIP_IMAGE_PREPROCESSING.std),
  }),
  text: z.object({
    file: z.string().default(E.files.text),
    input: z.string().default(E.tensors.inputIds),
    output: z.string().default(E.tensors.textEmbeds),
    contextLength: z.number().int().min(2).default(E.contextLength),
    vocabSize: z.number().int().positive().optional(),
  }),
  textHidden: z
    .object({
      file: z.string().default(E.files.textHidden),
      input: z.string().default(E.tensors.inputIds),
      output: z.string().default(E.tensors.lastHiddenState),
      hiddenSize: z.number().int().positive().default(E.hiddenSize),
    })
    .nullable()
    .default(null),
  tokenizer: z.object({ file: z.string().default(E.files.tokenizer), lowercase: z.boolean().default(true) }),
});
export type BiomedclipManifest = z.output<typeof biomedclipManifestSchema>;

export async function readBiomedclipManifest(dir: string): Promise<BiomedclipManifest> {
  const file = path.join(dir, E.files.manifest);
  let raw: unknown;
  try {
    raw = JSON.parse(await readFile(file, "utf8"));
  } catch (error) {
    const missing = (error as NodeJS.ErrnoException).code === "ENOENT";
    throw new ModelError(missing ? `model folder has no ${E.files.manifest}` : `cannot read ${E.files.manifest}: ${(error as Error).message}`, {
      location: { file },
      hint: "create the folder with tools/export_biomedclip.py (docs/embed.md)",
      cause: error,
    });
  }
  const parsed = biomedclipManifestSchema.safeParse(raw);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    throw new ModelError(`invalid manifest: ${issue.message}`, { location: { file, keyPath: issue.path.join(".") } });
  }
  return parsed.data;
}

function manifestFiles(manifest: BiomedclipManifest): string[] {
  return [manifest.image.file, manifest.text.file, ...(manifest.textHidden ? [manifest.textHidden.file] : []), manifest.tokenizer.file];
}

/**
 * Content digest of a model folder (manifest + every file it names), for the stage's cache key.
 * Hashing 400 MB of weights takes seconds, so file digests go through the engine's stat cache
 * (re-hashed only when a file's size or mtime changed, across runs and processes).
 */
export async function biomedclipFolderDigest(dir: string, digester: FileDigester = new FileDigester()): Promise<string> {
  const manifest = await readBiomedclipManifest(dir);
  const digests: Record<string, string> = {};
  for (const file of manifestFiles(manifest).map((f) => path.join(dir, f))) {
    try {
      await stat(file);
    } catch {
      throw new ModelError("model file is missing", { location: { file }, hint: `the manifest in ${dir} names it` });
    }
    digests[path.basename(file)] = await digester.digestFile(file);
  }
  return hashJson({ manifest, files: digests });
}
