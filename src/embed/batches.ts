import PQueue from "p-queue";

/**
 * Runs `embed` over `count` items in batches of `batchSize`, at most `concurrency` batches in
 * flight (image decoding runs on libuv threads and ONNX Runtime on its own pool, so a couple of
 * batches in flight keep both busy). Results land in one row-major matrix in input order.
 */
export async function embedInBatches(
  count: number,
  dim: number,
  options: { batchSize: number; concurrency: number; signal?: AbortSignal; onProgress?: (done: number) => void },
  embed: (start: number, end: number) => Promise<Float32Array>,
): Promise<Float32Array> {
  const out = new Float32Array(count * dim);
  const queue = new PQueue({ concurrency: Math.max(1, options.concurrency) });
  let done = 0;
  const tasks: Promise<void>[] = [];
  for (let start = 0; start < count; start += options.batchSize) {
    const end = Math.min(count, start + options.batchSize);
    tasks.push(
      queue.add(async () => {
        options.signal?.throwIfAborted();
        const values = await embed(start, end);
        if (values.length !== (end - start) * dim) throw new Error(`encoder returned ${values.length} values for ${end - start} rows of width ${dim}`);
        out.set(values, start * dim);
        done += end - start;
        options.onProgress?.(done);
      }) as Promise<void>,
    );
  }
  try {
    await Promise.all(tasks);
  } catch (error) {
    // Drop the batches not yet started; the ones in flight finish and are discarded.
    queue.clear();
    await Promise.allSettled(tasks);
    throw error;
  }
  return out;
}
