// Entry of the self-contained GPU check bundle (built by `bench/train-gpu.sh pack`, run by
// `bench/train-gpu.sh run`). Plain JS on purpose: the literal imports below must be visible to
// esbuild so it bundles tfjs-backend-webgpu, and the optional packages must not be type-checked.
// Prints one JSON line: {backend, adapter, params, msPerStep, stepsPerSecond, steps} or {backend, error}.
import { parseArgs } from "node:util";
import { initTrainingBackend } from "../src/train/backend/index.js";
import { timeReferenceTraining } from "../src/train/backend/reference-unet.js";

const { values } = parseArgs({
  options: {
    backend: { type: "string", default: "webgpu" },
    size: { type: "string", default: "224" },
    batch: { type: "string", default: "4" },
    steps: { type: "string", default: "10" },
  },
});
const backend = values.backend;
const loaders = {
  webgpu: () => import("webgpu"),
  "@tensorflow/tfjs-backend-webgpu": () => import("@tensorflow/tfjs-backend-webgpu"),
};
try {
  const info = await initTrainingBackend({ backend, loaders, log: (line) => console.error(line) });
  const steps = Number(values.steps);
  const timing = await timeReferenceTraining({ size: Number(values.size), batch: Number(values.batch), steps, warmup: 2 });
  console.log(
    JSON.stringify({
      backend: info.backend,
      adapter: info.adapter,
      params: timing.params,
      steps,
      msPerStep: Math.round(timing.msPerStep * 10) / 10,
      stepsPerSecond: Math.round((1000 / timing.msPerStep) * 100) / 100,
      firstLoss: timing.losses[0],
      lastLoss: timing.losses[timing.losses.length - 1],
    }),
  );
} catch (error) {
  console.log(JSON.stringify({ backend, error: String(error && error.stack ? error.stack : error), hint: error && error.hint }));
  process.exitCode = 1;
}
