import { PassThrough } from "node:stream";
import { main } from "../../src/cli/main.js";

/** Runs the CLI in-process with captured streams, as a user would from a shell. */
export async function cli(argv: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const stdout = new PassThrough();
  const stderr = new PassThrough();
  let out = "";
  let err = "";
  stdout.on("data", (c: Buffer) => (out += c.toString()));
  stderr.on("data", (c: Buffer) => (err += c.toString()));
  const code = await main(argv, { stdout, stderr, interactive: false });
  return { code, stdout: out, stderr: err };
}
