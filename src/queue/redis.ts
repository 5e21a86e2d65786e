import { Redis } from "ioredis";
import { EnvironmentError, UsageError } from "../errors.js";

/**
 * Connection options for BullMQ from a `redis://[user:password@]host:port[/db]` (or `rediss://`)
 * URL. `maxRetriesPerRequest: null` is what BullMQ workers require: a blocked command must wait
 * through a reconnect instead of failing the job.
 */
export interface RedisConnection {
  host: string;
  port: number;
  username?: string;
  password?: string;
  db: number;
  tls?: Record<string, never>;
  maxRetriesPerRequest: null;
}

export function redisOptionsFromUrl(url: string): RedisConnection {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new UsageError(`--redis expects a URL like redis://127.0.0.1:6379, got "${url}"`);
  }
  if (parsed.protocol !== "redis:" && parsed.protocol !== "rediss:") {
    throw new UsageError(`--redis expects a redis:// or rediss:// URL, got "${url}"`);
  }
  const db = parsed.pathname && parsed.pathname !== "/" ? Number(parsed.pathname.slice(1)) : 0;
  if (!Number.isInteger(db) || db < 0) throw new UsageError(`--redis: "${parsed.pathname.slice(1)}" is not a database number`);
  return {
    host: parsed.hostname || "127.0.0.1",
    port: parsed.port ? Number(parsed.port) : 6379,
    username: parsed.username ? decodeURIComponent(parsed.username) : undefined,
    password: parsed.password ? decodeURIComponent(parsed.password) : undefined,
    db,
    ...(parsed.protocol === "rediss:" ? { tls: {} } : {}),
    maxRetriesPerRequest: null,
  };
}

/** The URL without its password, for messages. */
export function redactRedisUrl(url: string): string {
  try {
    const parsed = new URL(url);
    if (parsed.password) parsed.password = "***";
    return parsed.toString();
  } catch {
    return url;
  }
}

/**
 * Connects once, without retrying, and checks that Redis will never evict keys: BullMQ keeps
 * jobs, locks and flow dependencies in Redis, and an evicted key silently loses work (a parent
 * that waits forever, a job that runs twice). Anything but `noeviction` is refused.
 */
export async function checkRedis(url: string, timeoutMs = 5000): Promise<{ version: string; maxmemoryPolicy: string }> {
  const client = new Redis({ ...redisOptionsFromUrl(url), lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null, connectTimeout: timeoutMs });
  let lastError: Error | undefined;
  client.on("error", (error: Error) => (lastError = error));
  try {
    try {
      await client.connect();
    } catch (error) {
      throw new EnvironmentError(`cannot reach Redis at ${redactRedisUrl(url)}: ${(lastError ?? (error as Error)).message}`, {
        hint: "start redis-server (Debian: apt-get install redis-server) or pass the right --redis URL",
      });
    }
    const server = parseInfo(await client.info("server"));
    const memory = parseInfo(await client.info("memory"));
    const maxmemoryPolicy = memory.maxmemory_policy ?? "unknown";
    if (maxmemoryPolicy !== "noeviction") {
      throw new EnvironmentError(`Redis at ${redactRedisUrl(url)} runs with maxmemory-policy ${maxmemoryPolicy}; the queue needs noeviction`, {
        hint: "set `maxmemory-policy noeviction` in redis.conf (or `redis-cli CONFIG SET maxmemory-policy noeviction`); evicted queue keys lose jobs",
      });
    }
    return { version: server.redis_version ?? "unknown", maxmemoryPolicy };
  } finally {
    client.disconnect();
  }
}

function parseInfo(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of text.split(/\r?\n/)) {
    const at = line.indexOf(":");
    if (at > 0 && !line.startsWith("#")) out[line.slice(0, at)] = line.slice(at + 1).trim();
  }
  return out;
}
