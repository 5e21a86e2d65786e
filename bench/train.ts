/**
 * Training-step speed of the reference U-Net (batch 4) on TensorFlow.js backends, next to the same
 * network in PyTorch on this CPU, measured in the same run.
 *
 *   node --import tsx bench/train.ts [--sizes 64,128,224] [--steps 3] [--stock-steps 1] [--skip-torch]
 *
 * Rows: `cpu+fast` (our kernels) at every size; `cpu stock` (tfjs's own kernels) at 64 only, a
 * single step without warm-up by default, as a sanity ratio (it needs minutes per step at 64
 * and most of an hour at 224); PyTorch via
 * `/usr/bin/python3 <shared>/reference/unet_torch.py SIZE 4 STEPS` (Debian python3-torch), the
 * reference found at $PROLEARN_SHARED/reference or ../shared/reference from the repo root.
 * `cpu+fast` runs the GEMMs on PROLEARN_CPU_THREADS threads (default: every core, up to 16);
 * when that is more than one, a `cpu+fast 1t` row runs the same kernels on one thread, so the
 * threading gain is measured in the same run. PyTorch prints the threads it used.
 */
import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { gemmWorkspace, initTrainingBackend, installFastCpuKernels, uninstallFastCpuKernels } from "../src/tfjs/backends.js";
import { timeReferenceTraining } from "../src/tfjs/reference-unet.js";

const { values } = parseArgs({
  options: {
    sizes: { type: "string", default: "64,128,224" },
    steps: { type: "string", default: "3" },
    "stock-steps": { type: "string", default: "1" },
    "skip-torch": { type: "boolean", default: false },
  },
});
const sizes = values.sizes!.split(",").map(Number);
const steps = Number(values.steps);
const stockSteps = Number(values["stock-steps"]);
const batch = 4;

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
function torchReference(): string | undefined {
  const candidates = [
    process.env.PROLEARN_SHARED && path.join(process.env.PROLEARN_SHARED, "reference", "unet_torch.py"),
    path.join(repoRoot, "..", "shared", "reference", "unet_torch.py"),
  ];
  return candidates.find((c): c is string => Boolean(c && existsSync(c)));
}

/**
 * Runs the PyTorch reference. With `cpuTime`, its step timer (time.perf_counter) is swapped for
 * time.process_time, so the median is CPU time per step: comparable with ours when other
 * processes share the cores (PyTorch runs 1 thread here, so process time = step time when idle).
 */
function torchStep(script: string, size: number, cpuTime: boolean): { ms: number; threads: string; params: string } | { error: string } {
  const argv = [String(size), String(batch), String(steps)];
  const args = cpuTime
    ? [
        "-c",
        "import sys, time, runpy; time.perf_counter = time.process_time; sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')",
        script,
        ...argv,
      ]
    : [script, ...argv];
  const run = spawnSync("/usr/bin/python3", args, { encoding: "utf8", timeout: 30 * 60_000 });
  if (run.error) return { error: run.error.message };
  if (run.status !== 0) return { error: `exit ${run.status}: ${run.stderr.trim().split("\n").slice(-3).join(" | ")}` };
  const ms = /ms\/step median ([\d.]+)/.exec(run.stdout)?.[1];
  const head = /params (\d+) threads (\d+)/.exec(run.stdout);
  if (!ms) return { error: `unexpected output: ${run.stdout.trim()}` };
  return { ms: Number(ms), params: head?.[1] ?? "?", threads: head?.[2] ?? "?" };
}

const info = await initTrainingBackend({ backend: "cpu" });
const threads = info.threads ?? 1;
const script = values["skip-torch"] ? undefined : torchReference();
const load = os
  .loadavg()
  .map((l) => l.toFixed(1))
  .join(" ");
console.log(
  `machine: ${info.adapter}, cpu+fast on ${threads} thread(s), ${Math.round(os.totalmem() / 2 ** 30)} GiB, Node ${process.version}, load average ${load}`,
);
console.log(`batch ${batch}, ${steps} measured steps after 1 warm-up; ms = median wall time per step, cpu = median process CPU time per step (both sides)`);
if (!script)
  console.log(values["skip-torch"] ? "PyTorch skipped (--skip-torch)" : "PyTorch reference not found (set PROLEARN_SHARED or check ../shared/reference)");

const rows: string[] = [];
const header = `${"size".padEnd(5)} ${"backend".padEnd(12)} ${"ms/step".padStart(9)} ${"torch ms".padStart(9)} ${"ratio".padStart(8)} | ${"cpu ms".padStart(8)} ${"torch cpu".padStart(9)} ${"cpu ratio".padStart(9)}`;
console.log(header);
for (const size of sizes) {
  const torch = script ? torchStep(script, size, false) : undefined;
  const torchCpu = script ? torchStep(script, size, true) : undefined;
  const torchMs = torch && "ms" in torch ? torch.ms : undefined;
  const torchCpuMs = torchCpu && "ms" in torchCpu ? torchCpu.ms : undefined;
  if (torch && "error" in torch) console.log(`  PyTorch at ${size} failed: ${torch.error}`);
  if (torchCpu && "error" in torchCpu) console.log(`  PyTorch (CPU time) at ${size} failed: ${torchCpu.error}`);
  if (torch && "ms" in torch && torch.params !== "481745") console.log(`  note: PyTorch reports ${torch.params} params`);
  const variants: Array<["cpu+fast" | "cpu+fast 1t" | "cpu stock", number]> = [["cpu+fast", steps]];
  if (threads > 1) variants.push(["cpu+fast 1t", steps]);
  if (size === 64 && stockSteps > 0) variants.push(["cpu stock", stockSteps]);
  for (const [name, n] of variants) {
    if (name === "cpu stock") uninstallFastCpuKernels();
    else installFastCpuKernels();
    gemmWorkspace().setThreads(name === "cpu+fast 1t" ? 1 : threads);
    // The stock kernels need minutes per step even at 64: no warm-up step for them.
    const t = await timeReferenceTraining({ size, batch, steps: n, warmup: name === "cpu stock" ? 0 : 1 });
    const ratio = torchMs ? (t.msPerStep / torchMs).toFixed(2) + "x" : "-";
    const cpuRatio = torchCpuMs ? (t.cpuMsPerStep / torchCpuMs).toFixed(2) + "x" : "-";
    const line =
      `${String(size).padEnd(5)} ${name.padEnd(12)} ${t.msPerStep.toFixed(0).padStart(9)} ${(torchMs?.toFixed(0) ?? "-").padStart(9)} ${ratio.padStart(8)} | ` +
      `${t.cpuMsPerStep.toFixed(0).padStart(8)} ${(torchCpuMs?.toFixed(0) ?? "-").padStart(9)} ${cpuRatio.padStart(9)}`;
    console.log(line);
    rows.push(line);
  }
  installFastCpuKernels();
  gemmWorkspace().setThreads(threads);
  if (torch && "threads" in torch) console.log(`  (PyTorch ${torch.threads} thread(s))`);
}
console.log(
  `load average after: ${os
    .loadavg()
    .map((l) => l.toFixed(1))
    .join(" ")}`,
);
