// The guide model's text side: how reports become guidance tokens, for the guide stage that
// trains it and the filter stage that reads its attention back.
import path from "node:path";
import { ModelError } from "../errors.js";
import type { DecodedSample } from "./data.js";
import type { BatchGuidance } from "./guidance.js";
import type { ModelConfig } from "./model.js";
import { buildVocabulary, encodeReport, vocabularyIndex } from "./text.js";

/** What the text side needs of the guide stage's params. */
export interface TextSideParams {
  encoder: "builtin" | "biomedclip";
  model?: string | undefined;
  minWordCount: number;
  tokenDim: number;
  maxTokens: number;
}

export interface GuideTextSide {
  guidance: ModelConfig["guidance"];
  /** Guidance of the given samples (same order as `samples`). */
  encode(samples: readonly DecodedSample[]): Promise<{ batch: (indices: number[]) => BatchGuidance; tokens: string[][] }>;
  /** Releases the encoder (ONNX sessions) once every encode call is done. */
  close(): Promise<void>;
}

/** The text side of the guide model: word vocabulary (builtin) or encoder hidden states (biomedclip). */
export async function guideTextSide(
  params: TextSideParams,
  baseDir: string,
  pairedReports: readonly string[],
  existing?: ModelConfig["guidance"],
): Promise<GuideTextSide> {
  if (params.encoder === "builtin") {
    const guidance =
      existing && existing.kind === "vocab"
        ? existing
        : {
            kind: "vocab" as const,
            vocab: buildVocabulary(pairedReports, { minCount: params.minWordCount }),
            tokenDim: params.tokenDim,
            maxTokens: params.maxTokens,
          };
    if (guidance.kind !== "vocab") throw new ModelError("guide model kind mismatch");
    const index = vocabularyIndex(guidance.vocab);
    return {
      guidance,
      close: async () => {},
      async encode(samples) {
        const encoded = samples.map((s) => encodeReport(s.report ?? "", index, guidance.maxTokens));
        const batch = (indices: number[]): BatchGuidance => {
          const ids = new Int32Array(indices.length * guidance.maxTokens);
          indices.forEach((i, b) => ids.set(encoded[i]!.ids, b * guidance.maxTokens));
          return { kind: "vocab", ids };
        };
        return { batch, tokens: encoded.map((e) => e.words) };
      },
    };
  }
  if (!params.model)
    throw new ModelError("guide encoder biomedclip needs `model` (the exported BiomedCLIP folder)", { location: { keyPath: "stages.guide.model" } });
  const { createEncoder } = await import("../embed/factory.js");
  const encoder = await createEncoder({ encoder: "biomedclip", model: path.resolve(baseDir, params.model) });
  if (!encoder.tokenFeatures) {
    await encoder.close();
    throw new ModelError(`encoder ${encoder.id} exposes no token features`, {
      hint: "export the text hidden states with tools/export_biomedclip.py, or use encoder: builtin",
    });
  }
  const probe = await encoder.tokenFeatures(["probe"]);
  const guidance = { kind: "features" as const, featureDim: probe.width, maxTokens: Math.min(params.maxTokens, probe.length), encoder: encoder.id };
  return {
    guidance,
    close: () => encoder.close(),
    async encode(samples) {
      const features = await encoder.tokenFeatures!(samples.map((s) => s.report ?? ""));
      const { length, width } = features;
      const L = guidance.maxTokens;
      const batch = (indices: number[]): BatchGuidance => {
        const values = new Float32Array(indices.length * L * width);
        const mask = new Float32Array(indices.length * L);
        indices.forEach((i, b) => {
          values.set(features.features.subarray(i * length * width, i * length * width + L * width), b * L * width);
          for (let t = 0; t < L; t++) mask[b * L + t] = features.mask[i * length + t]!;
        });
        return { kind: "features", values, mask };
      };
      return { batch, tokens: features.tokens.map((t) => t.slice(0, L)) };
    },
  };
}
