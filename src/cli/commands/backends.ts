import { defineCommand } from "../command.js";

export default defineCommand({
  name: "backends",
  summary: "Which TensorFlow.js training backends start on this machine, on what, and why the others do not",
  details: [
    "Tries tensorflow (@tensorflow/tfjs-node-gpu or -node), webgpu (Dawn, when the machine shows a GPU device) and cpu (with this package's kernels) in the order `backend: auto` uses, and prints what each runs on or why it cannot start, with a hint, and which one auto picks.",
    "Run it on a machine before sending it training work (a GPU worker, say); docs/backends.md explains each backend's needs.",
  ].join("\n"),
  positionals: [],
  options: {
    json: { type: "boolean", description: "Print {probes: [{backend, status, adapter?, reason?, hint?}], auto} as JSON on stdout", default: false },
  },
  async run(args, io) {
    const { probeTrainingBackends } = await import("../../tfjs/backends.js");
    const result = await probeTrainingBackends();
    if (args.options.json === true) {
      io.stdout.write(`${JSON.stringify(result)}\n`);
      return 0;
    }
    const width = Math.max(...result.probes.map((p) => p.backend.length));
    for (const p of result.probes) {
      io.stdout.write(`${p.backend.padEnd(width)}  ${p.status.padEnd(11)}  ${[p.adapter, p.reason].filter(Boolean).join(": ")}\n`);
      if (p.hint && p.status !== "ok") io.stdout.write(`${"".padEnd(width)}  ${"".padEnd(11)}  hint: ${p.hint}\n`);
    }
    io.stdout.write(`auto picks: ${result.auto}\n`);
    return 0;
  },
});
