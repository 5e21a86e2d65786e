import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { Redis } from "ioredis";

export interface RedisServer {
  url: string;
  port: number;
  stop(): Promise<void>;
}

/** A free loopback TCP port, found by letting the kernel pick one and releasing it. */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.unref();
    server.on("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      server.close(() => (typeof address === "object" && address ? resolve(address.port) : reject(new Error("no port"))));
    });
  });
}

/**
 * Starts a private `redis-server` (Debian package redis-server) on a free loopback port with its
 * own data folder, persistence off. `stop()` shuts it down and removes the folder; call it from
 * an `after` hook so a failing test never leaves a server behind.
 */
export async function startRedis(options: { maxmemoryPolicy?: string } = {}): Promise<RedisServer> {
  const dir = mkdtempSync(path.join(tmpdir(), "prolearn-redis-"));
  const port = await freePort();
  const args = [
    "--port",
    String(port),
    "--bind",
    "127.0.0.1",
    "--dir",
    dir,
    "--save",
    "",
    "--appendonly",
    "no",
    "--maxmemory-policy",
    options.maxmemoryPolicy ?? "noeviction",
    "--logfile",
    path.join(dir, "redis.log"),
  ];
  let child: ChildProcess;
  try {
    child = spawn("redis-server", args, { stdio: "ignore" });
  } catch (error) {
    rmSync(dir, { recursive: true, force: true });
    throw error;
  }
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  let spawnError: Error | undefined;
  child.once("error", (error) => (spawnError = error));
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill("SIGTERM");
      const timer = setTimeout(() => child.kill("SIGKILL"), 3000);
      await exited;
      clearTimeout(timer);
    }
    rmSync(dir, { recursive: true, force: true });
  };
  const url = `redis://127.0.0.1:${port}`;
  for (let i = 0; i < 100; i++) {
    if (spawnError) {
      await stop();
      throw new Error(`cannot start redis-server (apt-get install redis-server): ${spawnError.message}`);
    }
    const client = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null });
    client.on("error", () => {});
    try {
      await client.connect();
      await client.ping();
      client.disconnect();
      return { url, port, stop };
    } catch {
      client.disconnect();
      await sleep(50);
    }
  }
  await stop();
  throw new Error(`redis-server did not answer on port ${port}`);
}
