// A queue worker process serving the test registry, so tests can run several and SIGKILL one.
// argv: <redis url> <root> <lock ms> [capabilities, comma-separated] [max payload bytes]
import { startStageWorker } from "../../src/queue/worker.js";
import { QUEUE_TEST_STAGES } from "./queue-stages.js";

const [redisUrl, root, lockMs, capabilities, maxPayloadBytes] = process.argv.slice(2);
const worker = await startStageWorker({
  redisUrl: redisUrl!,
  registry: QUEUE_TEST_STAGES,
  roots: [root!],
  lockDurationMs: Number(lockMs ?? 30000),
  capabilities: capabilities ? capabilities.split(",") : [],
  maxPayloadBytes: maxPayloadBytes ? Number(maxPayloadBytes) : undefined,
  log: (line) => process.stdout.write(`${line}\n`),
});
process.once("SIGTERM", () => {
  void worker.close().then(() => process.exit(0));
});
