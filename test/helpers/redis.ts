import { Redis } from 'ioredis';

export const REDIS_URL = process.env.SYNCLINE_TEST_REDIS_URL ?? 'redis://127.0.0.1:6379';

const START = 'redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no';

/**
 * A connected client to the machine's Redis. An unreachable Redis FAILS the test with how to
 * start it (never skips it).
 */
export async function requireRedis(url = REDIS_URL): Promise<Redis> {
  const client = new Redis(url, { lazyConnect: true, connectTimeout: 2000, maxRetriesPerRequest: 0, retryStrategy: () => null });
  client.on('error', () => undefined);
  try {
    await client.connect();
    await client.ping();
  } catch (err) {
    client.disconnect();
    throw new Error(`Redis is not reachable at ${url} (${(err as Error).message}). Start it: ${START} (or set SYNCLINE_TEST_REDIS_URL); .ci/run does this.`);
  }
  return client;
}

/** Deletes every key starting with `prefix` (SCAN, so safe on a shared server). */
export async function dropKeys(client: Redis, prefix: string): Promise<void> {
  let cursor = '0';
  do {
    const [next, keys] = await client.scan(cursor, 'MATCH', `${prefix.replace(/[*?[\]\\]/g, '\\$&')}*`, 'COUNT', 1000);
    cursor = next;
    if (keys.length > 0) await client.del(...keys);
  } while (cursor !== '0');
}
