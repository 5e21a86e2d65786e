// A scheduler process over the test registry, so a test can send it SIGTERM. argv: <pipeline file>
import { loadPipelineFile } from "../../src/pipeline/spec.js";
import { PipelineScheduler, serveUntilSignal } from "../../src/queue/scheduler.js";
import { TEST_STAGES } from "./test-stages.js";

const file = process.argv[2]!;
const first = loadPipelineFile(file, TEST_STAGES);
const log = (line: string) => process.stdout.write(`${line}\n`);
const scheduler = new PipelineScheduler([{ name: first.name, schedule: first.schedule!, load: async () => loadPipelineFile(file, TEST_STAGES) }], {
  registry: TEST_STAGES,
  log,
});
scheduler.start();
log("scheduler ready");
await serveUntilSignal(scheduler, { log, graceMs: 10_000 });
