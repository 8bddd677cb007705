import type { Redis } from 'ioredis';
import { dedupKeyOf, type ChangeEvent } from '../core/change.js';
import { SynclineError } from '../core/errors.js';
import { classifyRedisError, closeRedis, openRedis } from '../redis/redis-client.js';
import type { Dedup } from './dedup.js';

export interface RedisDedupOptions {
  url: string;
  /** `consumer.deduplication.key_pattern`, e.g. `sync:{source}:{table}:{lsn}`. */
  keyPattern: string;
  ttlSeconds: number;
}

/**
 * Dedup records in Redis. The Redis key is the rendered `key_pattern`; it holds the set of
 * the changes applied under it, each as `<source>/<_version>`, and expires `ttl_seconds`
 * after the last one was added. A set rather than a flag, because a pattern need not
 * identify one change: the default `sync:{source}:{table}:{lsn}` is shared by every row of
 * a COPY (one WAL record) and of a snapshot chunk, and a flag would drop all but the first
 * of them as duplicates.
 */
export class RedisDedup implements Dedup {
  private readonly client: Redis;

  constructor(private readonly options: RedisDedupOptions) {
    this.client = openRedis(options.url);
  }

  async seen(changes: readonly ChangeEvent[]): Promise<boolean[]> {
    if (changes.length === 0) return [];
    const ids = changes.map((c) => [dedupKeyOf(this.options.keyPattern, c), memberOf(c)] as const);
    const pipeline = this.client.pipeline();
    for (const [key, member] of ids) pipeline.sismember(key, member);
    const replies = await this.exec(pipeline.exec(), 'reading dedup keys from Redis');
    const inBatch = new Set<string>();
    return ids.map(([key, member], i) => {
      const id = `${key}\u0000${member}`;
      const repeated = inBatch.has(id);
      inBatch.add(id);
      return repeated || replies[i] === 1;
    });
  }

  async mark(changes: readonly ChangeEvent[]): Promise<void> {
    if (changes.length === 0) return;
    const byKey = new Map<string, string[]>();
    for (const c of changes) {
      const key = dedupKeyOf(this.options.keyPattern, c);
      const members = byKey.get(key);
      if (members) members.push(memberOf(c));
      else byKey.set(key, [memberOf(c)]);
    }
    const pipeline = this.client.pipeline();
    for (const [key, members] of byKey) {
      pipeline.sadd(key, ...members);
      pipeline.expire(key, this.options.ttlSeconds);
    }
    await this.exec(pipeline.exec(), 'writing dedup keys to Redis');
  }

  async close(): Promise<void> {
    await closeRedis(this.client);
  }

  private async exec(pending: Promise<[Error | null, unknown][] | null>, what: string): Promise<unknown[]> {
    let results: [Error | null, unknown][] | null;
    try {
      results = await pending;
    } catch (err) {
      throw classifyRedisError(err, what);
    }
    if (!results) throw new SynclineError('REDIS_CONNECTION', `${what} failed: the pipeline was discarded`, { retriable: true });
    return results.map(([err, reply]) => {
      if (err) throw classifyRedisError(err, what);
      return reply;
    });
  }
}

function memberOf(c: ChangeEvent): string {
  return `${c.source}/${c._version}`;
}
