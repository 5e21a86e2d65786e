// Entry of the self-contained GPU check bundle (built by `bench/train-gpu.sh pack`, run by
// `bench/train-gpu.sh run`). Plain JS on purpose: the literal imports below must be visible to
// esbuild so it bundles tfjs-backend-webgpu, and the optional packages must not be type-checked.
// Prints one JSON line: {backend, adapter, model, params, msPerStep, stepsPerSecond, steps} or {backend, model, error}.
// --model reference (default): the reference U-Net, as PyTorch's unet_torch.py; --model segmenter:
// the ProLearn segmenter at the train stage's defaults (src/segmenter/timing.ts).
import { parseArgs } from "node:util";
import { initTrainingBackend } from "../src/tfjs/backends.js";
import { timeReferenceTraining } from "../src/tfjs/reference-unet.js";
import { timeSegmenterTraining } from "../src/segmenter/timing.js";
import { uninstallFastWebgpuKernels } from "../src/tfjs/webgpu-kernels.js";
import { formatKernelProfile } from "../src/cli/commands/bench-train.js";

const { values } = parseArgs({
  options: {
    backend: { type: "string", default: "webgpu" },
    size: { type: "string", default: "224" },
    batch: { type: "string", default: "4" },
    steps: { type: "string", default: "10" },
    warmup: { type: "string", default: "2" },
    model: { type: "string", default: "reference" },
    // Then profile one more step and print its costliest kernels (GPU time on webgpu).
    profile: { type: "boolean", default: false },
    // webgpu: tfjs-backend-webgpu's own Conv2DBackpropFilter instead of ours, to compare.
    "stock-kernels": { type: "boolean", default: false },
  },
});
const backend = values.backend;
const model = values.model;
const loaders = {
  webgpu: () => import("webgpu"),
  "@tensorflow/tfjs-backend-webgpu": () => import("@tensorflow/tfjs-backend-webgpu"),
};
try {
  const info = await initTrainingBackend({ backend, loaders, log: (line) => console.error(line) });
  if (values["stock-kernels"] && info.backend === "webgpu") uninstallFastWebgpuKernels();
  const steps = Number(values.steps);
  const options = { size: Number(values.size), batch: Number(values.batch), steps, warmup: Number(values.warmup), profile: values.profile };
  const timing = model === "segmenter" ? await timeSegmenterTraining(options) : await timeReferenceTraining(options);
  console.log(
    JSON.stringify({
      backend: info.backend,
      adapter: info.adapter,
      model,
      ...(values["stock-kernels"] && info.backend === "webgpu" ? { kernels: "stock" } : {}),
      params: timing.params,
      steps,
      msPerStep: Math.round(timing.msPerStep * 10) / 10,
      stepsPerSecond: Math.round((1000 / timing.msPerStep) * 100) / 100,
      // Process CPU time per step: on a GPU backend, the host-side cost of issuing the kernels.
      cpuMsPerStep: Math.round(timing.cpuMsPerStep * 10) / 10,
      firstLoss: timing.losses[0],
      lastLoss: timing.losses[timing.losses.length - 1],
    }),
  );
  if (timing.kernels) console.error(formatKernelProfile(timing.kernels, 12));
} catch (error) {
  console.log(JSON.stringify({ backend, model, error: String(error?.stack ?? error), hint: error?.hint }));
  process.exitCode = 1;
}
