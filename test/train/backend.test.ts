import { test, describe } from "node:test";
import assert from "node:assert/strict";
import * as tf from "@tensorflow/tfjs-core";
import { EnvironmentError, UsageError } from "../../src/errors.js";
import {
  initTrainingBackend,
  activeTrainingBackend,
  fastCpuKernelsInstalled,
  configuredGemmThreads,
  type TrainingBackendRequest,
} from "../../src/tfjs/backends.js";
import { buildReferenceUNet } from "../../src/tfjs/reference-unet.js";
import { cli } from "../helpers/cli.js";
import { stageCapabilities } from "../../src/pipeline/stage.js";
import { STAGES } from "../../src/stages.js";
import { skipUnless } from "../helpers/skip.js";

async function importable(name: string): Promise<boolean> {
  try {
    const specifier: string = name;
    await import(specifier);
    return true;
  } catch {
    return false;
  }
}

const tensorflowInstalled = (await importable("@tensorflow/tfjs-node-gpu")) || (await importable("@tensorflow/tfjs-node"));

describe("initTrainingBackend", () => {
  test("cpu starts with the fast kernels, and repeated calls return the same answer without work", async () => {
    const lines: string[] = [];
    const first = await initTrainingBackend({ backend: "cpu", log: (l) => lines.push(l) });
    assert.equal(first.backend, "cpu");
    assert.equal(first.fastKernels, true);
    assert.equal(fastCpuKernelsInstalled(), true);
    assert.equal(tf.getBackend(), "cpu");
    assert.equal(first.threads, configuredGemmThreads());
    assert.match(lines.join("\n"), new RegExp(`training backend: cpu .*fast convolution kernels on ${first.threads} threads?`));
    const again = await initTrainingBackend({ backend: "cpu" });
    assert.equal(again, first, "the cached info object is returned");
    assert.equal(await initTrainingBackend(), first, "auto keeps the backend already running");
    assert.equal(activeTrainingBackend(), first);
  });

  test("concurrent first calls share one start", async () => {
    const results = await Promise.all([initTrainingBackend({ backend: "cpu" }), initTrainingBackend(), initTrainingBackend({ backend: "cpu" })]);
    assert.ok(results.every((r) => r === results[0]));
  });

  test("forcing tensorflow without @tensorflow/tfjs-node throws EnvironmentError naming the packages", {
    skip: skipUnless(!tensorflowInstalled, "@tensorflow/tfjs-node is installed here, so forcing tensorflow starts it"),
  }, async () => {
    await assert.rejects(initTrainingBackend({ backend: "tensorflow" }), (error: unknown) => {
      assert.ok(error instanceof EnvironmentError);
      assert.match(error.message, /@tensorflow\/tfjs-node-gpu is not installed; @tensorflow\/tfjs-node is not installed/);
      assert.match(error.hint ?? "", /docs\/backends\.md/);
      return true;
    });
    assert.equal(tf.getBackend(), "cpu", "a failed switch leaves the running backend alone");
  });

  test("forcing webgpu runs on the adapter Dawn offers (a software one with a warning) or throws EnvironmentError saying why", async () => {
    try {
      const lines: string[] = [];
      const info = await initTrainingBackend({ backend: "webgpu", log: (line) => lines.push(line) });
      assert.equal(info.backend, "webgpu");
      if (/swiftshader|llvmpipe|lavapipe|software/i.test(info.adapter)) assert.match(lines.join("\n"), /warning: webgpu runs on a software adapter/);
      await initTrainingBackend({ backend: "cpu" });
    } catch (error) {
      assert.ok(error instanceof EnvironmentError, `expected EnvironmentError, got ${String(error)}`);
      assert.match(error.message, /^webgpu backend unavailable: /);
    }
    assert.equal((await initTrainingBackend({ backend: "cpu" })).backend, "cpu");
  });

  test("an unknown backend name is refused", async () => {
    await assert.rejects(initTrainingBackend({ backend: "cuda" as TrainingBackendRequest }), EnvironmentError);
  });
});

test("training stages forced onto a GPU backend need a GPU queue worker; on auto or cpu any worker", () => {
  for (const name of ["guide", "filter", "train", "evaluate"]) {
    const stage = STAGES.get(name)!;
    const params = (backend: string) => stage.params.parse({ backend });
    assert.deepEqual(stageCapabilities(stage, params("webgpu")), ["gpu"], name);
    assert.deepEqual(stageCapabilities(stage, params("tensorflow")), ["gpu"], name);
    assert.deepEqual(stageCapabilities(stage, params("auto")), [], name);
    assert.deepEqual(stageCapabilities(stage, params("cpu")), [], name);
  }
  assert.deepEqual(stageCapabilities(STAGES.get("ingest")!, {}), [], "other stages run anywhere");
});

describe("reference U-Net and prolearn bench train", () => {
  test("the reference U-Net has PyTorch's 481,745 parameters", () => {
    const net = buildReferenceUNet();
    assert.equal(net.paramCount, 481_745);
    const logits = tf.tidy(() => net.forward(tf.zeros([1, 16, 16, 1]) as tf.Tensor4D).shape);
    assert.deepEqual(logits, [1, 16, 16, 1]);
    net.dispose();
  });

  test("--json prints {backend, adapter, params, msPerStep}", async () => {
    const { code, stdout, stderr } = await cli(["bench", "train", "--backend", "cpu", "--size", "16", "--batch", "1", "--steps", "2", "--json"]);
    assert.equal(code, 0, stderr);
    const result = JSON.parse(stdout) as Record<string, unknown>;
    assert.deepEqual(Object.keys(result).sort(), ["adapter", "backend", "msPerStep", "params"]);
    assert.equal(result.backend, "cpu");
    assert.equal(result.params, 481_745);
    assert.ok(typeof result.msPerStep === "number" && result.msPerStep > 0);
    assert.match(stderr, /params 481,745 \| [\d.]+ ms\/step \(median\)/);
  });

  test("--model segmenter times the train stage's network (PSA guidance) and says so", async () => {
    const { code, stdout, stderr } = await cli([
      "bench",
      "train",
      "--backend",
      "cpu",
      "--model",
      "segmenter",
      "--size",
      "16",
      "--batch",
      "1",
      "--steps",
      "1",
      "--base-channels",
      "4",
      "--depth",
      "3",
      "--json",
    ]);
    assert.equal(code, 0, stderr);
    const result = JSON.parse(stdout) as Record<string, unknown>;
    assert.deepEqual(Object.keys(result).sort(), ["adapter", "backend", "model", "msPerStep", "params"]);
    assert.equal(result.model, "segmenter");
    assert.ok(typeof result.params === "number" && result.params > 100_000 && result.params !== 481_745, `params ${result.params}`);
    assert.match(stderr, /ProLearn segmenter \(PSA\), 16x16, batch 1/);
  });

  test("--profile prints one step's costliest kernels with their calls, time and share", async () => {
    const { code, stderr } = await cli(["bench", "train", "--backend", "cpu", "--size", "16", "--batch", "1", "--steps", "1", "--profile"]);
    assert.equal(code, 0, stderr);
    const header = /profiled step: (\d+) kernel calls, ([\d.]+) ms of kernel time/.exec(stderr);
    assert.ok(header, stderr);
    assert.ok(Number(header[1]) > 100 && Number(header[2]) > 0, header[0]);
    const rows = [...stderr.matchAll(/^ {2}(\w+) +(\d+) calls +([\d.]+) ms +([\d.]+)%$/gm)];
    assert.equal(rows.length, 15, "the 15 costliest kernels");
    // The reference U-Net has 18 convolutions, each with a filter gradient.
    const filterGradient = rows.find((r) => r[1] === "Conv2DBackpropFilter");
    assert.equal(filterGradient?.[2], "18");
    const times = rows.map((r) => Number(r[3]));
    assert.deepEqual(
      times,
      [...times].sort((a, b) => b - a),
      "slowest first",
    );
  });

  test("a profiled segmenter step counts kernels only, not the custom-gradient ops around them", async () => {
    await initTrainingBackend({ backend: "cpu" });
    const { timeSegmenterTraining } = await import("../../src/segmenter/timing.js");
    const timing = await timeSegmenterTraining({ size: 16, batch: 1, steps: 1, warmup: 0, baseChannels: 4, depth: 2, profile: true });
    const names = timing.kernels!.map((k) => k.kernel);
    assert.ok(names.includes("ProlearnGroupNorm") && names.includes("Conv2D"), names.join(", "));
    for (const name of names) assert.ok(tf.getKernel(name, "cpu"), `${name} is a registered kernel`);
  });

  test("prolearn backends lists every backend in auto's order, what each runs on or why not, and auto's pick", async () => {
    const { code, stdout, stderr } = await cli(["backends", "--json"]);
    assert.equal(code, 0, stderr);
    const result = JSON.parse(stdout) as { probes: { backend: string; status: string; adapter?: string; reason?: string; hint?: string }[]; auto: string };
    assert.deepEqual(
      result.probes.map((p) => p.backend),
      ["tensorflow", "webgpu", "cpu"],
    );
    const [tensorflow, webgpu, cpu] = result.probes;
    assert.equal(cpu!.status, "ok");
    assert.match(cpu!.adapter!, new RegExp(`fast convolution kernels on ${configuredGemmThreads()} threads?$`));
    for (const p of [tensorflow!, webgpu!]) if (p.status === "unavailable") assert.ok(p.reason && p.hint, `${p.backend} says why and what to do`);
    if (!tensorflowInstalled) assert.match(tensorflow!.reason!, /@tensorflow\/tfjs-node-gpu is not installed/);
    assert.equal(result.auto, tensorflow!.status === "ok" ? "tensorflow" : webgpu!.status === "ok" ? "webgpu" : "cpu");
    const text = await cli(["backends"]);
    assert.match(text.stdout, /^cpu +ok +.*fast convolution kernels on \d+ threads?$/m);
    assert.match(text.stdout, new RegExp(`^auto picks: ${result.auto}$`, "m"));
  });

  test("bad options are usage errors", async () => {
    for (const argv of [
      ["--size", "30"],
      ["--backend", "tpu"],
      ["--steps", "0"],
      ["--model", "vit"],
      ["--depth", "3"],
      ["--model", "segmenter", "--size", "20", "--depth", "4"],
    ]) {
      const { code, stderr } = await cli(["bench", "train", ...argv]);
      assert.equal(code, new UsageError("x").exitCode, `${argv.join(" ")}: ${stderr}`);
    }
  });
});
