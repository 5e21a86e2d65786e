/**
 * PSA query speed: 96 prototypes x 512-d (N = 6 labels x K = 16), batch 1 and 1,024.
 * Baseline in the same run: a straightforward implementation (cosine per pair with both norms,
 * sort all prototypes, allocate per query). Ours: `query` (plain JS, 4-row blocking, no
 * allocation in the loop; scores by the WebAssembly SIMD GEMM of the training kernels) and `queryAsync` (ONNX Runtime Gemm for the scores from batch 32 on).
 *   node --import tsx bench/psa.ts
 */
import os from "node:os";
import { PrototypeSpace } from "../src/prototypes/psa.js";

const P = 96;
const DIM = 512;
const TOP_K = 3;

function lcg(seed: number) {
  let s = seed >>> 0;
  return () => (s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 4294967296 - 0.5;
}
const random = lcg(1);
const queries = Float32Array.from({ length: P * DIM }, random);
const responses = Float32Array.from({ length: P * DIM }, random);

function naiveQuery(images: Float32Array): Float32Array {
  const n = images.length / DIM;
  const out = new Float32Array(n * DIM);
  for (let i = 0; i < n; i++) {
    const v = images.subarray(i * DIM, (i + 1) * DIM);
    const scored = [];
    for (let p = 0; p < P; p++) {
      let dot = 0;
      let nv = 0;
      let nq = 0;
      for (let k = 0; k < DIM; k++) {
        dot += v[k]! * queries[p * DIM + k]!;
        nv += v[k]! * v[k]!;
        nq += queries[p * DIM + k]! * queries[p * DIM + k]!;
      }
      scored.push({ p, s: dot / Math.sqrt(nv * nq) });
    }
    scored.sort((a, b) => b.s - a.s);
    const top = scored.slice(0, TOP_K);
    const exp = top.map((t) => Math.exp(t.s - top[0]!.s));
    const total = exp.reduce((a, b) => a + b, 0);
    top.forEach((t, j) => {
      for (let k = 0; k < DIM; k++) out[i * DIM + k] += (exp[j]! / total) * responses[t.p * DIM + k]!;
    });
  }
  return out;
}

async function timeIt(label: string, batch: number, fn: () => unknown | Promise<unknown>, minMs = 1500): Promise<number> {
  for (let i = 0; i < 5; i++) await fn();
  let reps = 0;
  const start = performance.now();
  const cpu = process.cpuUsage();
  while (performance.now() - start < minMs) {
    await fn();
    reps++;
  }
  const us = ((performance.now() - start) * 1000) / (reps * batch);
  const used = process.cpuUsage(cpu);
  const cpuUs = (used.user + used.system) / (reps * batch);
  // CPU time (all threads) per query is printed too: on a shared, loaded machine wall time overstates the work.
  console.log(
    `  ${label.padEnd(34)} ${us.toFixed(2).padStart(9)} us/query wall  ${cpuUs.toFixed(2).padStart(9)} us/query CPU  ${(1e6 / us).toFixed(0).padStart(9)} queries/s`,
  );
  return us;
}

console.log(
  `PSA bench: ${P} prototypes x ${DIM}-d, top-${TOP_K}; ${os.cpus().length} x ${os.cpus()[0]?.model ?? "cpu"}, load ${os.loadavg()[0]!.toFixed(1)}, node ${process.version}`,
);
const space = new PrototypeSpace(queries, responses, DIM);
for (const batch of [1, 1024]) {
  const images = Float32Array.from({ length: batch * DIM }, random);
  const out = { embeddings: new Float32Array(batch * DIM), ids: new Int32Array(batch * TOP_K), weights: new Float32Array(batch * TOP_K) };
  console.log(`batch ${batch}`);
  const naive = await timeIt("baseline (naive JS)", batch, () => naiveQuery(images));
  const sync = await timeIt("query (sync, WASM SIMD GEMM)", batch, () => space.queryInto(images, out));
  const viaOrt = await timeIt("queryAsync (ORT Gemm from 32)", batch, () => space.queryIntoAsync(images, out));
  console.log(`  speed-up over baseline: query x${(naive / sync).toFixed(1)}, queryAsync x${(naive / viaOrt).toFixed(1)}`);
}
