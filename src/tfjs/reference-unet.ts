/**
 * The reference U-Net that backends are measured on, layer for layer the network of
 * ../shared/reference/unet_torch.py: 4 levels (3 down blocks + a middle block), base 16
 * channels doubling per level, blocks of two 3x3 convs + ReLU, 2x2 max-pool, 2x2 stride-2
 * transposed convs for up-sampling, skip concatenation, a 1x1 head, BCE with logits, Adam.
 * 481,745 parameters, as PyTorch counts them.
 */
import * as tf from "@tensorflow/tfjs-core";

export interface ReferenceUNetConfig {
  base: number;
  levels: number;
  inChannels: number;
  seed: number;
}

interface Conv {
  w: tf.Variable;
  b: tf.Variable;
}

export interface ReferenceUNet {
  config: ReferenceUNetConfig;
  variables: tf.Variable[];
  paramCount: number;
  /** Logits [batch, H, W, 1] for images [batch, H, W, inChannels]; H, W divisible by 2^(levels-1). */
  forward(x: tf.Tensor4D): tf.Tensor4D;
  dispose(): void;
}

export function buildReferenceUNet(options: Partial<ReferenceUNetConfig> = {}): ReferenceUNet {
  const config: ReferenceUNetConfig = { base: 16, levels: 4, inChannels: 1, seed: 0, ...options };
  // tfjs treats seed 0 as "no seed", so seeds start at 1.
  let seed = config.seed * 1000 + 1;
  const variables: tf.Variable[] = [];
  // PyTorch's default conv init: uniform(+-1/sqrt(fan_in)) for weights and biases.
  const conv = (kh: number, kw: number, inC: number, outC: number, fanIn: number, transposed = false): Conv => {
    const bound = 1 / Math.sqrt(fanIn);
    const shape: [number, number, number, number] = transposed ? [kh, kw, outC, inC] : [kh, kw, inC, outC];
    const w = tf.tidy(() => tf.variable(tf.randomUniform(shape, -bound, bound, "float32", seed++)));
    const b = tf.tidy(() => tf.variable(tf.randomUniform([outC], -bound, bound, "float32", seed++)));
    variables.push(w, b);
    return { w, b };
  };
  const block = (inC: number, outC: number): [Conv, Conv] => [conv(3, 3, inC, outC, 9 * inC), conv(3, 3, outC, outC, 9 * outC)];
  const ch = Array.from({ length: config.levels }, (_, l) => config.base * 2 ** l);
  const down = ch.slice(0, -1).map((c, l) => block(l === 0 ? config.inChannels : ch[l - 1]!, c));
  const mid = block(ch[ch.length - 2]!, ch[ch.length - 1]!);
  const ups: Conv[] = [];
  const decs: Array<[Conv, Conv]> = [];
  for (let l = config.levels - 2; l >= 0; l--) {
    // ConvTranspose2d's fan-in, as PyTorch computes it, is out_channels * kernel area.
    ups.push(conv(2, 2, ch[l + 1]!, ch[l]!, ch[l]! * 4, true));
    decs.push(block(2 * ch[l]!, ch[l]!));
  }
  const head = conv(1, 1, ch[0]!, 1, ch[0]!);

  const apply = (x: tf.Tensor4D, c: Conv): tf.Tensor4D => tf.add(tf.conv2d(x, c.w as tf.Tensor4D, 1, "same"), c.b);
  const applyBlock = (x: tf.Tensor4D, [a, b]: [Conv, Conv]): tf.Tensor4D => tf.relu(apply(tf.relu(apply(x, a)), b));

  const forward = (input: tf.Tensor4D): tf.Tensor4D => {
    let x = input;
    const skips: tf.Tensor4D[] = [];
    for (const d of down) {
      x = applyBlock(x, d);
      skips.push(x);
      x = tf.maxPool(x, 2, 2, "valid");
    }
    x = applyBlock(x, mid);
    for (let i = 0; i < ups.length; i++) {
      const skip = skips.pop()!;
      const [n, h, w, c] = skip.shape;
      const up = tf.add(tf.conv2dTranspose(x, ups[i]!.w as tf.Tensor4D, [n, h, w, c], 2, "valid"), ups[i]!.b) as tf.Tensor4D;
      x = applyBlock(tf.concat([up, skip], 3), decs[i]!);
    }
    return apply(x, head);
  };

  return {
    config,
    variables,
    paramCount: variables.reduce((n, v) => n + v.size, 0),
    forward,
    dispose: () => {
      for (const v of variables) v.dispose();
    },
  };
}

/** Mean binary cross-entropy on logits, in the numerically stable form max(z,0) - z*y + log(1 + e^-|z|). */
export function bceWithLogits(logits: tf.Tensor, targets: tf.Tensor): tf.Scalar {
  return tf.mean(tf.add(tf.sub(tf.relu(logits), tf.mul(logits, targets)), tf.log1p(tf.exp(tf.neg(tf.abs(logits))))));
}

export interface TrainingStepTiming {
  /** Median wall time of the measured steps, ms. */
  msPerStep: number;
  /** Every measured step, ms, in order. */
  stepsMs: number[];
  /**
   * Median CPU time (user + system) of this process per measured step, ms. On a shared machine
   * wall time includes waiting for a core; CPU time does not. It counts every thread of the
   * process, so with GEMM worker threads it is the total work, not the wait.
   */
  cpuMsPerStep: number;
  /** Loss after each measured step. */
  losses: number[];
  params: number;
  /** With `profile`: one extra step's kernels, slowest total first (see `profileTrainingStep`). */
  kernels?: KernelTime[];
}

/** One kernel's share of a profiled step: how often it ran and its summed time, ms. */
export interface KernelTime {
  kernel: string;
  calls: number;
  ms: number;
  /** webgpu: the GPU programs the kernel dispatched, by name, slowest first (when it ran more than one kind). */
  programs?: Array<{ program: string; ms: number }>;
}

/** tfjs-backend-webgpu's per-program timings of one kernel call: "Name: ms, Name: ms". */
function programTimes(extraInfo: unknown): Array<[string, number]> {
  if (typeof extraInfo !== "string" || extraInfo === "") return [];
  return extraInfo.split(", ").flatMap((part) => {
    const at = part.lastIndexOf(": ");
    const ms = Number(part.slice(at + 2));
    return at > 0 && Number.isFinite(ms) ? [[part.slice(0, at), ms] as [string, number]] : [];
  });
}

/**
 * Runs one step under `tf.profile` and sums each registered kernel's time. On `cpu` a kernel's time is its
 * wall time; on `webgpu` it is GPU time from timestamp queries when the adapter offers them (all
 * zero otherwise, and tfjs warns once). The profiler would read every
 * output back to look for NaNs, which webgpu cannot do synchronously in Node, so that check is off
 * while it runs.
 */
export async function profileTrainingStep(step: () => Promise<number>): Promise<KernelTime[]> {
  const checkFlag = "CHECK_COMPUTATION_FOR_ERRORS";
  const checked = tf.env().getBool(checkFlag);
  tf.env().set(checkFlag, false);
  try {
    const info = await tf.profile(async () => {
      await step();
      return [];
    });
    const byName = new Map<string, KernelTime & { byProgram: Map<string, number> }>();
    const backend = tf.getBackend();
    for (const kernel of info.kernels) {
      // tf.customGrad ops ("forward") and scopes are profiled too, around the kernels they run:
      // counting them would count those kernels twice.
      if (!tf.getKernel(kernel.name, backend)) continue;
      const entry = byName.get(kernel.name) ?? { kernel: kernel.name, calls: 0, ms: 0, byProgram: new Map<string, number>() };
      entry.calls += 1;
      entry.ms += typeof kernel.kernelTimeMs === "number" ? kernel.kernelTimeMs : 0;
      for (const [program, ms] of programTimes(kernel.extraInfo)) entry.byProgram.set(program, (entry.byProgram.get(program) ?? 0) + ms);
      byName.set(kernel.name, entry);
    }
    return [...byName.values()]
      .map(({ byProgram, ...entry }) =>
        byProgram.size > 1 ? { ...entry, programs: [...byProgram].map(([program, ms]) => ({ program, ms })).sort((a, b) => b.ms - a.ms) } : entry,
      )
      .sort((a, b) => b.ms - a.ms || b.calls - a.calls);
  } finally {
    tf.env().set(checkFlag, checked);
  }
}

/**
 * Times `warmup + steps` calls of one training step (which returns the loss it read back) and
 * keeps the measured ones: wall time, this process's CPU time (user + system) and the loss.
 */
export async function timeTrainingSteps(
  step: () => Promise<number>,
  options: { steps: number; warmup: number; profile?: boolean },
): Promise<Omit<TrainingStepTiming, "params">> {
  const stepsMs: number[] = [];
  const cpuMs: number[] = [];
  const losses: number[] = [];
  for (let i = 0; i < options.warmup + options.steps; i++) {
    const start = performance.now();
    const cpuStart = process.cpuUsage();
    const loss = await step();
    const ms = performance.now() - start;
    const cpu = process.cpuUsage(cpuStart);
    if (i >= options.warmup) {
      stepsMs.push(ms);
      cpuMs.push((cpu.user + cpu.system) / 1000);
      losses.push(loss);
    }
  }
  const kernels = options.profile ? await profileTrainingStep(step) : undefined;
  return { msPerStep: median(stepsMs), cpuMsPerStep: median(cpuMs), stepsMs, losses, ...(kernels ? { kernels } : {}) };
}

/**
 * Trains the reference U-Net with Adam (lr 1e-3) on one fixed random batch, as the PyTorch
 * reference does, and times each step (forward, backward, update, and reading the loss back).
 */
export async function timeReferenceTraining(options: {
  size: number;
  batch: number;
  steps: number;
  warmup?: number;
  seed?: number;
  profile?: boolean;
}): Promise<TrainingStepTiming> {
  const { size, batch, steps } = options;
  const seed = options.seed ?? 0;
  const net = buildReferenceUNet({ seed });
  const optimizer = tf.train.adam(1e-3);
  const x = tf.randomNormal([batch, size, size, 1], 0, 1, "float32", seed + 1) as tf.Tensor4D;
  const y = tf.cast(tf.greater(tf.randomUniform([batch, size, size, 1], 0, 1, "float32", seed + 2), 0.5), "float32");
  try {
    const timing = await timeTrainingSteps(
      async () => {
        const cost = optimizer.minimize(() => bceWithLogits(net.forward(x), y), true, net.variables)!;
        // Asynchronous read: it waits for the GPU like dataSync, and tfjs-backend-webgpu's
        // synchronous read needs OffscreenCanvas, which Node lacks.
        const loss = (await cost.data())[0]!;
        cost.dispose();
        return loss;
      },
      { steps, warmup: options.warmup ?? 1, profile: options.profile },
    );
    return { ...timing, params: net.paramCount };
  } finally {
    optimizer.dispose();
    net.dispose();
    x.dispose();
    y.dispose();
  }
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)] ?? NaN;
}
