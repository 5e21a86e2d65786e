/**
 * Instance and layer normalisation on webgpu: the `ProlearnGroupNorm` and `ProlearnGroupNormGrad`
 * kernels (same inputs, attributes and outputs as the cpu ones in model-kernels.ts). Composed
 * from tfjs ops, one normalisation costs about 10 kernels forward and 25 backward. Each tfjs op
 * costs ~0.1 ms of host time on an H200 machine, and the segmenter has 21 normalisations a step.
 * Here it is 6 dispatches forward and 5 backward.
 *
 * x is [groups, span, channels] flattened (instance norm: images, pixels, channels; layer norm:
 * rows, width, 1). Statistics per (group, channel) are sums over the span. A sum over a whole span
 * (50,176 pixels at 224 x 224) in one thread would leave most of a GPU idle, so the span is split
 * into chunks. One program writes a partial sum per (group, chunk, channel), and a second adds the
 * partials in chunk order, so results repeat exactly. The variance is the mean of squared
 * deviations from the mean, as on cpu, not E[x^2] - E[x]^2.
 */
import type { TensorInfo } from "@tensorflow/tfjs-core";
import { ElementProgram, float, int, type Uniform, type WebgpuBackendLike } from "./webgpu-program.js";
import { MODEL_KERNELS } from "./model-kernels.js";

/** Threads a partial-sum pass aims for. */
const TARGET_THREADS = 1 << 17;

interface NormAttrs {
  groups: number;
  span: number;
  channels: number;
  epsilon: number;
  relu: boolean;
}

/**
 * Span rows per chunk: enough chunks to give the GPU ~2^17 threads, none empty, and no more than
 * about sqrt(span). The second pass loops over the chunks in one thread per output, and on an H200
 * a 1,024-chunk pass over 128 outputs cost more than the first.
 */
export function planSpanChunks(groups: number, span: number, channels: number, targetThreads = TARGET_THREADS): { chunks: number; rowsPerChunk: number } {
  const wanted = Math.max(1, Math.min(span, Math.ceil(Math.sqrt(span)), Math.ceil(targetThreads / (groups * channels))));
  const rowsPerChunk = Math.ceil(span / wanted);
  return { chunks: Math.ceil(span / rowsPerChunk), rowsPerChunk };
}

const SHAPE_UNIFORMS = "span : i32, channels : i32, chunks : i32, rowsPerChunk : i32, spanF : f32, epsilon : f32,";

/**
 * Partial sums over one chunk of the span, [groups, chunks, quantities, channels]. Each thread
 * takes one (group, chunk, channel) and sums every quantity in one pass over its rows: `terms[q]`
 * is quantity q's summand at flat element `i` of group `g`, channel `c`, after `prelude`.
 */
function partialsProgram(
  key: string,
  variableNames: string[],
  groups: number,
  chunks: number,
  channels: number,
  terms: string[],
  prelude = "",
): ElementProgram {
  const quantities = terms.length;
  const sums = terms.map((_, q) => `var sum${q} = 0.0;`).join("\n        ");
  const adds = terms.map((term, q) => `sum${q} = sum${q} + ${term};`).join("\n          ");
  const writes = terms.map((_, q) => `setOutputAtIndex(out + ${q} * uniforms.channels, sum${q});`).join("\n        ");
  return new ElementProgram(
    `prolearnNormPartials_${key}`,
    variableNames,
    [groups, chunks, quantities * channels],
    SHAPE_UNIFORMS,
    `let c = index % uniforms.channels;
        let t = index / uniforms.channels;
        let chunk = t % uniforms.chunks;
        let g = t / uniforms.chunks;
        let rowStart = chunk * uniforms.rowsPerChunk;
        let rowEnd = min(rowStart + uniforms.rowsPerChunk, uniforms.span);
        ${sums}
        for (var r = rowStart; r < rowEnd; r = r + 1) {
          let i = (g * uniforms.span + r) * uniforms.channels + c;
          ${prelude}
          ${adds}
        }
        let out = t * ${quantities} * uniforms.channels + c;
        ${writes}`,
    { threads: groups * chunks * channels, bound: `uniforms.size / ${quantities}` },
  );
}

/** Adds the partials of each (group, width position) in chunk order, then applies `finish(sum)`. */
function finishProgram(key: string, groups: number, width: number, finish: string): ElementProgram {
  return new ElementProgram(
    `prolearnNormFinish_${key}`,
    ["partials"],
    // Flat: the kernel's invStd output is [groups * channels], as on cpu.
    [groups * width],
    `${SHAPE_UNIFORMS} width : i32,`,
    `let w = index % uniforms.width;
        let g = index / uniforms.width;
        var sum = 0.0;
        for (var k = 0; k < uniforms.chunks; k = k + 1) {
          sum = sum + partials[(g * uniforms.chunks + k) * uniforms.width + w];
        }
        setOutputAtIndex(index, ${finish});`,
  );
}

/** Per element of x: `g` is the group, `c` the channel, `gc` the (group, channel) statistic index. */
function elementProgram(key: string, variableNames: string[], shape: number[], body: string): ElementProgram {
  return new ElementProgram(
    `prolearnNorm_${key}`,
    variableNames,
    shape,
    SHAPE_UNIFORMS,
    `let c = index % uniforms.channels;
        let g = index / (uniforms.span * uniforms.channels);
        let gc = g * uniforms.channels + c;
        ${body}`,
  );
}

function shapeUniforms(a: NormAttrs, chunks: number, rowsPerChunk: number): Uniform[] {
  return [int(a.span), int(a.channels), int(chunks), int(rowsPerChunk), float(a.span), float(a.epsilon)];
}

function groupNorm(args: { inputs: { x: TensorInfo; gamma: TensorInfo; beta: TensorInfo }; backend: unknown; attrs: unknown }): TensorInfo[] {
  const { x, gamma, beta } = args.inputs;
  const a = args.attrs as NormAttrs;
  const backend = args.backend as WebgpuBackendLike;
  const { chunks, rowsPerChunk } = planSpanChunks(a.groups, a.span, a.channels);
  const uniforms = shapeUniforms(a, chunks, rowsPerChunk);
  const run = (program: ElementProgram, inputs: TensorInfo[], extra: Uniform[] = []) =>
    backend.runWebGPUProgram(program, inputs, "float32", [...uniforms, ...extra]);
  const sums = run(partialsProgram("sum", ["x"], a.groups, chunks, a.channels, ["x[i]"]), [x]);
  const mean = run(finishProgram("mean", a.groups, a.channels, "sum / uniforms.spanF"), [sums], [int(a.channels)]);
  backend.disposeData(sums.dataId);
  const squares = run(
    partialsProgram("centredSquares", ["x", "mean"], a.groups, chunks, a.channels, ["d * d"], "let d = x[i] - mean[g * uniforms.channels + c];"),
    [x, mean],
  );
  const invStd = run(finishProgram("invStd", a.groups, a.channels, "1.0 / sqrt(sum / uniforms.spanF + uniforms.epsilon)"), [squares], [int(a.channels)]);
  backend.disposeData(squares.dataId);
  const normalised = "(x[index] - mean[gc]) * invStd[gc]";
  const xhat = run(elementProgram("xhat", ["x", "mean", "invStd"], x.shape, `setOutputAtIndex(index, ${normalised});`), [x, mean, invStd]);
  const affine = `${normalised} * gamma[c] + beta[c]`;
  const y = run(
    elementProgram(
      a.relu ? "yRelu" : "y",
      ["x", "mean", "invStd", "gamma", "beta"],
      x.shape,
      `setOutputAtIndex(index, ${a.relu ? `max(${affine}, 0.0)` : affine});`,
    ),
    [x, mean, invStd, gamma, beta],
  );
  backend.disposeData(mean.dataId);
  return [y, xhat, invStd];
}

function groupNormGrad(args: {
  inputs: { dy: TensorInfo; xhat: TensorInfo; invStd: TensorInfo; gamma: TensorInfo; y: TensorInfo };
  backend: unknown;
  attrs: unknown;
}): TensorInfo[] {
  const { dy, xhat, invStd, gamma, y } = args.inputs;
  const a = args.attrs as NormAttrs;
  const backend = args.backend as WebgpuBackendLike;
  const { chunks, rowsPerChunk } = planSpanChunks(a.groups, a.span, a.channels);
  const uniforms = shapeUniforms(a, chunks, rowsPerChunk);
  const run = (program: ElementProgram, inputs: TensorInfo[], extra: Uniform[] = []) =>
    backend.runWebGPUProgram(program, inputs, "float32", [...uniforms, ...extra]);
  // After a fused ReLU the gradient reaching the normalisation is dy where y > 0.
  const names = a.relu ? ["dy", "xhat", "y"] : ["dy", "xhat"];
  const inputs = a.relu ? [dy, xhat, y] : [dy, xhat];
  const dz = (i: string) => (a.relu ? `select(0.0, dy[${i}], y[${i}] > 0.0)` : `dy[${i}]`);
  // Two sums per (group, channel): dz (for dbeta) and dz * xhat (for dgamma).
  const partials = run(
    partialsProgram(a.relu ? "gradRelu" : "grad", names, a.groups, chunks, a.channels, ["dz", "dz * xhat[i]"], `let dz = ${dz("i")};`),
    inputs,
  );
  const sums = run(finishProgram("sum", a.groups, 2 * a.channels, "sum"), [partials], [int(2 * a.channels)]);
  backend.disposeData(partials.dataId);
  const dx = run(
    elementProgram(
      a.relu ? "dxRelu" : "dx",
      [...names, "invStd", "gamma", "sums"],
      dy.shape,
      `let base = g * 2 * uniforms.channels;
        let meanDz = sums[base + c] / uniforms.spanF;
        let meanDzXhat = sums[base + uniforms.channels + c] / uniforms.spanF;
        setOutputAtIndex(index, invStd[gc] * gamma[c] * (${dz("index")} - meanDz - xhat[index] * meanDzXhat));`,
    ),
    [...inputs, invStd, gamma, sums],
  );
  // dbeta and dgamma add the per-group sums over every group. Layer norms have one group per row
  // (tens of thousands at 224 x 224, batch 32), and one thread per output looping over them took
  // 96 ms of a 347 ms step on an H200, so the groups are chunked like a span.
  // `sums` is [groups, 2 * channels]: one group whose span is the groups.
  const acrossGroups: NormAttrs = { groups: 1, span: a.groups, channels: 2 * a.channels, epsilon: a.epsilon, relu: false };
  const groupPlan = planSpanChunks(1, acrossGroups.span, acrossGroups.channels);
  const groupPartials = backend.runWebGPUProgram(
    partialsProgram("sum", ["x"], 1, groupPlan.chunks, acrossGroups.channels, ["x[i]"]),
    [sums],
    "float32",
    shapeUniforms(acrossGroups, groupPlan.chunks, groupPlan.rowsPerChunk),
  );
  const sumChunks = (q: 0 | 1) =>
    new ElementProgram(
      `prolearnNormSumChunks_${q}`,
      ["partials"],
      [a.channels],
      "chunks : i32, channels : i32,",
      `var total = 0.0;
        for (var k = 0; k < uniforms.chunks; k = k + 1) {
          total = total + partials[(k * 2 + ${q}) * uniforms.channels + index];
        }
        setOutputAtIndex(index, total);`,
    );
  const chunkUniforms = [int(groupPlan.chunks), int(a.channels)];
  const dbeta = backend.runWebGPUProgram(sumChunks(0), [groupPartials], "float32", chunkUniforms);
  const dgamma = backend.runWebGPUProgram(sumChunks(1), [groupPartials], "float32", chunkUniforms);
  backend.disposeData(groupPartials.dataId);
  backend.disposeData(sums.dataId);
  return [dx, dgamma, dbeta];
}

export const WEBGPU_NORM_KERNELS = {
  [MODEL_KERNELS.groupNorm]: groupNorm,
  [MODEL_KERNELS.groupNormGrad]: groupNormGrad,
};
