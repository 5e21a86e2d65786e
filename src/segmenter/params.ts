import { z } from "zod";
import type { ResolvedPipeline } from "../pipeline/spec.js";
import { TRAINING_BACKENDS } from "../tfjs/names.js";

/*
 * Params fields shared by the training stages' definitions. Light on purpose: the stage
 * registry (and so `prolearn plan`) imports this module, never TensorFlow.js.
 */

/** Network fields shared by the guide, train and evaluate stages. */
export const networkFields = {
  imageSize: z.number().int().min(16).max(1024).default(224).describe("Square input size the images and masks are resized to (the paper: 224)."),
  channels: z
    .union([z.literal(1), z.literal(3), z.literal("auto")])
    .default("auto")
    .describe("Input channels: 1 (grey) or 3 (RGB); `auto` = 3 for kvasir-seg, 1 for the X-ray/CT datasets."),
  baseChannels: z.number().int().min(2).max(256).default(32).describe("Channels of the first encoder stage; stage i has baseChannels * 2^i."),
  depth: z.number().int().min(2).max(6).default(4).describe("Encoder stages (the decoder has depth - 1 guided stages)."),
  heads: z.number().int().min(1).max(16).default(4).describe("Cross-attention heads in each guided decoder stage."),
};

/** Optimisation fields shared by every stage that trains. */
export const trainingFields = {
  epochs: z.number().int().min(1).default(100).describe("Maximum training epochs (early stopping may end sooner)."),
  batchSize: z.number().int().min(1).default(32).describe("Images per optimisation step (the reference code: 32)."),
  learningRate: z.number().positive().default(1e-4).describe("AdamW peak learning rate, annealed by a cosine schedule."),
  minLearningRate: z.number().min(0).default(1e-6).describe("Learning rate at the end of the cosine schedule (eta_min)."),
  weightDecay: z.number().min(0).default(0.01).describe("AdamW decoupled weight decay (not applied to biases)."),
  patience: z.number().int().min(0).default(10).describe("Stop after this many epochs without a better validation Dice (0 = train every epoch)."),
  seed: z.number().int().min(0).optional().describe("Seed for initialisation and shuffling (default: dataset.seed)."),
  backend: z
    .enum(TRAINING_BACKENDS)
    .default("auto")
    .describe("TensorFlow.js backend: `auto` picks libtensorflow or a real GPU when present, else the cpu backend with fast kernels."),
};

const budgetSchema = z.object({ ...networkFields, ...trainingFields });
/** A segmenter's network and training budget: the network and training fields of the train stage. */
export type SegmenterBudget = Omit<z.output<typeof budgetSchema>, "backend">;

/**
 * The train stage's network and training budget in this pipeline (its defaults where the pipeline
 * has no train stage): what the image-only baseline trains with, so it is compared like for like.
 * The backend is left out: it decides where the work runs, and the baseline names its own.
 */
export function trainBudget(pipeline: ResolvedPipeline): SegmenterBudget {
  const { backend: _backend, ...budget } = budgetSchema.parse(pipeline.stages.train ?? {});
  return budget;
}
