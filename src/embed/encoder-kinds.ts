/** The encoders `createEncoder` builds; light (no ONNX Runtime, no sharp) so the embed stage's params can name them. */
export const ENCODER_KINDS = ["builtin", "biomedclip"] as const;
export type EncoderKind = (typeof ENCODER_KINDS)[number];
/** What the embed stage's `encoder` param accepts: the above, or `learned` (an image encoder trained from the dataset, text from one of the above). */
export const EMBED_ENCODERS = [...ENCODER_KINDS, "learned"] as const;
export type EmbedEncoder = (typeof EMBED_ENCODERS)[number];
export const LEARNED_HEADS = ["ridge", "contrastive"] as const;
export type LearnedHead = (typeof LEARNED_HEADS)[number];
