/** Distances between text embeddings; light (no ONNX Runtime) so the stage definition can name them. */
export const METRICS = ["euclidean", "cosine"] as const;
export type Metric = (typeof METRICS)[number];
