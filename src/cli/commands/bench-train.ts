import { defineCommand, numberOption, stringOption } from "../command.js";
import { UsageError } from "../../errors.js";
import { TRAINING_BACKENDS as BACKENDS } from "../../tfjs/names.js";
import type { KernelTime } from "../../tfjs/reference-unet.js";

const MODELS = ["reference", "segmenter"] as const;

function positiveInteger(name: string, value: number | undefined): number {
  if (value === undefined || !Number.isInteger(value) || value < 1) throw new UsageError(`--${name} expects a positive integer, got ${String(value)}`);
  return value;
}

/** The `top` costliest kernels of a profiled step as an aligned table, with their share of the total. */
export function formatKernelProfile(kernels: KernelTime[], top: number): string {
  const total = kernels.reduce((sum, k) => sum + k.ms, 0);
  const lines = [`profiled step: ${kernels.reduce((n, k) => n + k.calls, 0)} kernel calls, ${total.toFixed(1)} ms of kernel time`];
  if (total === 0) lines.push("(no kernel times: this webgpu adapter has no timestamp queries)");
  for (const k of kernels.slice(0, top)) {
    const share = total > 0 ? `${((100 * k.ms) / total).toFixed(1).padStart(5)}%` : "     -";
    lines.push(`  ${k.kernel.padEnd(28)} ${String(k.calls).padStart(5)} calls ${k.ms.toFixed(1).padStart(9)} ms ${share}`);
    for (const p of k.programs?.slice(0, 4) ?? []) lines.push(`      ${p.program.padEnd(42)} ${p.ms.toFixed(1).padStart(9)} ms`);
  }
  return `${lines.join("\n")}\n`;
}

export default defineCommand({
  name: "bench train",
  summary: "Time training steps of the reference U-Net (or the ProLearn segmenter) on a TensorFlow.js backend",
  details:
    "Trains the reference U-Net (4 levels, base 16, 3x3 convs, ReLU, transposed-conv up-sampling, 1x1 head, BCE, Adam;\n" +
    "481,745 parameters, as ../shared/reference/unet_torch.py) on one random batch and prints the backend, its adapter,\n" +
    "the parameter count and the median ms per step after the warm-up steps. Use it to size hardware before training.\n" +
    "--model segmenter times the network the train stage trains instead: the guided U-Net with PSA guidance (instance\n" +
    "norm, cross-attention, Dice + BCE, AdamW) at the train stage's defaults (base 32, depth 4; --base-channels, --depth).\n" +
    "PROLEARN_DAWN_TOGGLES=backend=null with --backend webgpu runs the WebGPU path on Dawn's null adapter, which computes\n" +
    "nothing: a check that the path works on a machine without a GPU, not a timing (docs/backends.md).",
  positionals: [],
  options: {
    backend: { type: "string", choices: BACKENDS, description: `Backend: ${BACKENDS.join(", ")}`, default: "auto", valueName: "B" },
    model: { type: "string", choices: MODELS, description: `Network: ${MODELS.join(", ")}`, default: "reference", valueName: "M" },
    "base-channels": { type: "number", description: "segmenter: channels of the first encoder stage (default 32)", valueName: "N" },
    depth: { type: "number", description: "segmenter: encoder stages (default 4)", valueName: "N" },
    size: { type: "number", description: "Image height and width (a multiple of 8)", default: "224", valueName: "N" },
    batch: { type: "number", description: "Images per step", default: "4", valueName: "N" },
    steps: { type: "number", description: "Measured steps", default: "5", valueName: "N" },
    warmup: { type: "number", description: "Unmeasured steps first", default: "1", valueName: "N" },
    profile: {
      type: "boolean",
      description: "Then profile one more step and print its 15 costliest kernels (GPU time on webgpu where the adapter has timestamp queries)",
      default: false,
    },
    json: {
      type: "boolean",
      description: 'Print {backend, adapter, params, msPerStep} as JSON on stdout (+ model: "segmenter" with --model segmenter)',
      default: false,
    },
  },
  async run(args, io) {
    const backend = stringOption(args, "backend") ?? "auto";
    if (!(BACKENDS as readonly string[]).includes(backend)) throw new UsageError(`--backend must be one of ${BACKENDS.join(", ")}, got "${backend}"`);
    const model = stringOption(args, "model") ?? "reference";
    if (!(MODELS as readonly string[]).includes(model)) throw new UsageError(`--model must be one of ${MODELS.join(", ")}, got "${model}"`);
    const size = positiveInteger("size", numberOption(args, "size"));
    const batch = positiveInteger("batch", numberOption(args, "batch"));
    const steps = positiveInteger("steps", numberOption(args, "steps"));
    const warmup = numberOption(args, "warmup") ?? 1;
    if (!Number.isInteger(warmup) || warmup < 0) throw new UsageError(`--warmup expects a non-negative integer, got ${warmup}`);
    const baseChannels = args.options["base-channels"] === undefined ? undefined : positiveInteger("base-channels", numberOption(args, "base-channels"));
    const depth = args.options.depth === undefined ? undefined : positiveInteger("depth", numberOption(args, "depth"));
    if (model === "reference" && (baseChannels !== undefined || depth !== undefined))
      throw new UsageError("--base-channels and --depth go with --model segmenter (the reference U-Net is fixed)");
    const poolings = model === "reference" ? 3 : (depth ?? 4) - 1;
    if (size % 2 ** poolings !== 0) throw new UsageError(`--size must be a multiple of ${2 ** poolings} (${poolings} 2x2 poolings), got ${size}`);
    const { initTrainingBackend } = await import("../../tfjs/backends.js");
    const info = await initTrainingBackend({ backend: backend as (typeof BACKENDS)[number], log: (line) => io.stderr.write(`${line}\n`) });
    const profile = args.options.profile === true;
    let timing: { params: number; msPerStep: number; cpuMsPerStep: number; kernels?: KernelTime[] };
    if (model === "segmenter") {
      const { timeSegmenterTraining } = await import("../../segmenter/timing.js");
      io.stderr.write(`ProLearn segmenter (PSA), ${size}x${size}, batch ${batch}: ${warmup} warm-up + ${steps} measured steps\n`);
      timing = await timeSegmenterTraining({ size, batch, steps, warmup, baseChannels, depth, profile });
    } else {
      const { timeReferenceTraining } = await import("../../tfjs/reference-unet.js");
      io.stderr.write(`reference U-Net, ${size}x${size}, batch ${batch}: ${warmup} warm-up + ${steps} measured steps\n`);
      timing = await timeReferenceTraining({ size, batch, steps, warmup, profile });
    }
    // The reference's JSON is exactly issue 5's {backend, adapter, params, msPerStep}; the segmenter's says which network it timed.
    const result = {
      backend: info.backend,
      adapter: info.adapter,
      ...(model === "segmenter" ? { model } : {}),
      params: timing.params,
      msPerStep: Math.round(timing.msPerStep * 10) / 10,
    };
    const cpuNote = info.backend === "cpu" ? ` (process CPU ${Math.round(timing.cpuMsPerStep)} ms/step)` : "";
    io.stderr.write(
      `backend ${result.backend} | adapter ${result.adapter} | ${model} | params ${result.params.toLocaleString("en-US")} | ${result.msPerStep} ms/step (median)${cpuNote}\n`,
    );
    if (timing.kernels) io.stderr.write(formatKernelProfile(timing.kernels, 15));
    if (args.options.json === true) io.stdout.write(`${JSON.stringify(result)}\n`);
  },
});
