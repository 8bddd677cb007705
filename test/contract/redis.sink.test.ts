import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { StructuralError, SynclineError } from '../../src/core/errors.js';
import { RedisSink, redisKeys } from '../../src/sink/redis/redis-sink.js';
import { REDIS_URL, dropKeys, requireRedis } from '../helpers/redis.js';
import { ChangeFactory, describeSinkContract } from './sink-contract.js';

describeSinkContract('redis', async () => {
  const client = await requireRedis();
  const prefix = `syncline_sinkc_${randomBytes(3).toString('hex')}`;
  const sink = new RedisSink({ url: REDIS_URL, prefix, deleteMode: 'hard', versionGate: true });
  return {
    sink,
    storesPositions: true,
    async createTable(table) {
      // Redis has no constraints to reject REJECT_VALUE with. Its way of refusing a change is
      // a foreign key of another type where the row belongs: the contract's rejected change is
      // always row `bad`, so that key holds a string, and the batch must fail atomically.
      await client.set(redisKeys.row(prefix, 'public', table, { id: 'bad' }), 'not a syncline row');
    },
    async readRow(table, key) {
      const k = redisKeys.row(prefix, 'public', table, key);
      if ((await client.type(k)) !== 'hash') return undefined;
      return client.hgetall(k);
    },
    async close() {
      await sink.close();
      await dropKeys(client, prefix);
      client.disconnect();
    },
  };
});

describe('Redis sink specifics', () => {
  const f = new ChangeFactory();
  const none = new Map<number, bigint>();

  async function withSink<T>(options: { deleteMode?: 'hard' | 'soft' }, fn: (sink: RedisSink, client: Awaited<ReturnType<typeof requireRedis>>, prefix: string) => Promise<T>): Promise<T> {
    const client = await requireRedis();
    const prefix = `syncline_redis_${randomBytes(3).toString('hex')}`;
    const sink = new RedisSink({ url: REDIS_URL, prefix, deleteMode: options.deleteMode ?? 'hard', versionGate: true });
    try {
      await sink.prepare();
      return await fn(sink, client, prefix);
    } finally {
      await sink.close();
      await dropKeys(client, prefix);
      client.disconnect();
    }
  }

  it('refuses a keyless table with a StructuralError naming it (apply holds that table, not the line)', async () => {
    await withSink({}, async (sink, client, prefix) => {
      const keyless = { ...f.insert('h', 'a', { lsn: 0x1_0000_0002, seq: 1 }, 'x', null), key: {} };
      const err = await sink.apply([keyless], none, 'g').then(() => undefined, (e: unknown) => e);
      expect(err).toBeInstanceOf(StructuralError);
      expect((err as StructuralError).table).toBe('public.h');
      expect(await client.keys(`${prefix}:public.h:*`)).toEqual([]);
    });
  });

  it('lays rows out as documented: hash per row, version fields, NULL as a missing field, index set', async () => {
    await withSink({}, async (sink, client, prefix) => {
      await sink.apply([f.insert('t', 'a', { lsn: 0x1_0000_0002, seq: 3 }, 'x', null)], new Map([[4, 10n]]), 'g');
      expect(await client.hgetall(`${prefix}:public.t:["a"]`)).toEqual({ id: 'a', v: 'x', _syncline_lsn: '0000000100000002', _syncline_seq: '3' });
      expect(await client.smembers(`${prefix}:rows:public.t`)).toEqual(['["a"]']);
      expect(await client.hgetall(`${prefix}:positions:g`)).toEqual({ 4: '10' });
      await sink.apply([f.delete('t', 'a', { lsn: 0x1_0000_0003, seq: 1 })], none, 'g');
      expect(await client.exists(`${prefix}:public.t:["a"]`)).toBe(0);
      expect(await client.get(`${prefix}:tomb:public.t:["a"]`)).toBe('0000000100000003:1');
      expect(await client.smembers(`${prefix}:rows:public.t`)).toEqual([]);
      await sink.apply([f.truncate('t', 0x1_0000_0004)], none, 'g');
      expect(await client.get(`${prefix}:trunc:public.t`)).toBe('0000000100000004:1');
    });
  });

  it('falls back to EVAL after SCRIPT FLUSH (NOSCRIPT)', async () => {
    await withSink({}, async (sink, client) => {
      await client.script('FLUSH');
      expect(await sink.apply([f.insert('t', 'a', 1, 'x')], none, 'g')).toMatchObject({ applied: 1 });
      expect(await sink.apply([f.insert('t', 'b', 2, 'y')], none, 'g')).toMatchObject({ applied: 1 });
    });
  });

  it('a wrong-typed bookkeeping key stops apply (prerequisite), a wrong-typed row key fails its batch (permanent)', async () => {
    await withSink({}, async (sink, client, prefix) => {
      await client.set(`${prefix}:positions:g`, 'oops');
      const stateErr = await sink.apply([f.insert('t', 'a', 1, 'x')], new Map([[0, 1n]]), 'g').catch((e: unknown) => e);
      expect(stateErr).toMatchObject({ name: 'PrerequisiteError', retriable: false });
      expect(String((stateErr as Error).message)).toContain(`${prefix}:positions:g`);
      await client.set(`${prefix}:public.t:["b"]`, 'foreign');
      const rowErr = await sink.apply([f.insert('t', 'a', 1, 'x'), f.insert('t', 'b', 2, 'y')], none, 'g2').catch((e: unknown) => e);
      expect(rowErr).toBeInstanceOf(SynclineError);
      expect(rowErr).toMatchObject({ code: 'REDIS_SYNCLINE_ROW', retriable: false });
      // Nothing of the failed batch was written (the script checks before it writes).
      expect(await client.exists(`${prefix}:public.t:["a"]`)).toBe(0);
    });
  });

  it('soft deletes keep the hash with _deleted_at; a newer insert revives it', async () => {
    await withSink({ deleteMode: 'soft' }, async (sink, client, prefix) => {
      await sink.apply([f.insert('t', 'a', 1, 'x', 'n')], none, 'g');
      expect(await sink.apply([f.delete('t', 'a', 2)], none, 'g')).toMatchObject({ applied: 1 });
      expect(await client.hgetall(`${prefix}:public.t:["a"]`)).toMatchObject({ v: 'x', n: 'n', _deleted_at: expect.any(String), _syncline_lsn: '0000000000000002' });
      expect(await sink.apply([f.insert('t', 'a', 1, 'old')], none, 'g')).toMatchObject({ stale: 1 });
      expect(await sink.apply([f.updateKeepingN('t', 'a', 3, 'back')], none, 'g')).toMatchObject({ applied: 1 });
      const row = await client.hgetall(`${prefix}:public.t:["a"]`);
      expect(row).toMatchObject({ v: 'back', n: 'n' });
      expect(row._deleted_at).toBeUndefined();
    });
  });

  it('an unreachable server is a retriable error', async () => {
    const sink = new RedisSink({ url: 'redis://127.0.0.1:1', prefix: 'x', deleteMode: 'hard', versionGate: true });
    try {
      const err = await sink.apply([f.insert('t', 'a', 1, 'x')], none, 'g').catch((e: unknown) => e);
      expect(err).toMatchObject({ code: 'REDIS_CONNECTION', retriable: true });
      await expect(sink.prepare()).rejects.toMatchObject({ retriable: true });
    } finally {
      await sink.close();
    }
  });

  it('applies a 2,000-change batch with 20 columns in one script', async () => {
    await withSink({}, async (sink, client, prefix) => {
      const batch = Array.from({ length: 2000 }, (_, i) => {
        const payload: Record<string, string | null> = { id: String(i) };
        for (let c = 0; c < 20; c++) payload[`c${c}`] = `value-${i}-${c}`;
        return f.event('INSERT', 'wide', String(i), i + 1, payload);
      });
      const started = Date.now();
      expect(await sink.apply(batch, new Map([[0, 2000n]]), 'g')).toMatchObject({ applied: 2000, stale: 0 });
      expect(Date.now() - started).toBeLessThan(5000);
      expect(await client.scard(`${prefix}:rows:public.wide`)).toBe(2000);
      expect(await client.hget(`${prefix}:public.wide:["1999"]`, 'c19')).toBe('value-1999-19');
    });
  });
});
