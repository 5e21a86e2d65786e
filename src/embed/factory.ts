import { BiomedclipEncoder } from "./biomedclip.js";
import { BuiltinEncoder } from "./builtin.js";
import type { Encoder } from "./encoder.js";

export { ENCODER_KINDS, type EncoderKind } from "./encoder-kinds.js";

export type EncoderConfig =
  | { encoder: "builtin"; dim?: number /** training reports the text side is fitted on */; fitTexts: readonly string[] }
  | { encoder: "biomedclip" /** exported model folder (absolute, or relative to the cwd) */; model: string; threads?: number };

/** The one place that turns a config into an Encoder; callers only see the interface. */
export async function createEncoder(config: EncoderConfig): Promise<Encoder> {
  if (config.encoder === "builtin") return new BuiltinEncoder({ dim: config.dim, fitTexts: config.fitTexts });
  return BiomedclipEncoder.load(config.model, { threads: config.threads });
}
