/** The encoders `createEncoder` builds; light (no ONNX Runtime, no sharp) so the embed stage's params can name them. */
export const ENCODER_KINDS = ["builtin", "biomedclip"] as const;
export type EncoderKind = (typeof ENCODER_KINDS)[number];
