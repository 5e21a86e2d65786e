// Runs a test pipeline in a separate process, so tests can kill it with SIGKILL mid-stage.
import { loadPipelineFile } from "../../src/pipeline/spec.js";
import { runPipeline } from "../../src/pipeline/engine.js";
import { TEST_STAGES } from "./test-stages.js";

const pipeline = loadPipelineFile(process.argv[2]!, TEST_STAGES);
const result = await runPipeline(pipeline, {
  registry: TEST_STAGES,
  onEvent: (e) => {
    if (e.kind === "progress") process.stdout.write(`progress ${e.task}\n`);
  },
});
process.stdout.write(JSON.stringify({ status: result.status, stages: result.stages.map((s) => [s.name, s.status]) }) + "\n");
