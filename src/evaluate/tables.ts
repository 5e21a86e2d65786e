import { defineTable } from "../io/columns.js";

/** The models evaluate scores (docs/training.md, evaluate: controls). */
const MODELS = ["prolearn", "unet", "shuffled-psa", "mean-text", "own-report"];

/** metrics.parquet: one row per model and seed scored on the test split. */
export const METRICS_TABLE = defineTable(
  "evaluate",
  "metrics.parquet",
  "One row per model (prolearn, unet and the controls shuffled-psa, mean-text, own-report) and seed, scored on the test split.",
  [
    { name: "model", type: "utf8", nullable: false, description: "Model scored.", enum: MODELS },
    { name: "seed", type: "int32", nullable: false, description: "Training seed of the model (shuffled-psa: of the ProLearn model it runs)." },
    { name: "dice", type: "float32", nullable: false, description: "Mean per-image Dice." },
    { name: "iou", type: "float32", nullable: false, description: "Mean per-image IoU." },
    { name: "dice_pooled", type: "float32", nullable: false, description: "Dice over all test pixels pooled." },
    { name: "iou_pooled", type: "float32", nullable: false, description: "IoU over all test pixels pooled." },
    { name: "images", type: "int32", nullable: false, description: "Test images scored." },
    { name: "text_availability", type: "float32", nullable: false, description: "The pipeline's dataset.textAvailability." },
  ] as const,
);

/** per_image.parquet: one row per test image, model and seed. */
export const PER_IMAGE_TABLE = defineTable("evaluate", "per_image.parquet", "One row per test image, model and seed (both masks empty: Dice = IoU = 1).", [
  { name: "id", type: "utf8", nullable: false, description: "Sample id." },
  { name: "model", type: "utf8", nullable: false, description: "Model scored.", enum: MODELS },
  { name: "seed", type: "int32", nullable: false, description: "Training seed of the model." },
  { name: "dice", type: "float32", nullable: false, description: "Dice of the prediction." },
  { name: "iou", type: "float32", nullable: false, description: "IoU of the prediction." },
  { name: "intersection", type: "int32", nullable: false, description: "Pixels both predicted and true." },
  { name: "predicted_pixels", type: "int32", nullable: false, description: "Pixels predicted foreground." },
  { name: "truth_pixels", type: "int32", nullable: false, description: "Pixels truly foreground." },
] as const);

/** examples.parquet: the first test images with their masks and predictions as PNG. */
export const EXAMPLES_TABLE = defineTable(
  "evaluate",
  "examples.parquet",
  "The first test images at the model's input size, with the true mask and each model's prediction (PNG).",
  [
    { name: "id", type: "utf8", nullable: false, description: "Sample id." },
    { name: "image", type: "binary", nullable: false, description: "The image as the model saw it (PNG)." },
    { name: "mask", type: "binary", nullable: false, description: "True mask (PNG, 0/255)." },
    { name: "prediction", type: "binary", nullable: false, description: "ProLearn's prediction at the first seed (PNG, 0/255)." },
    { name: "baseline_prediction", type: "binary", nullable: true, description: "The image-only U-Net's prediction at the first seed; null without it." },
  ] as const,
);
