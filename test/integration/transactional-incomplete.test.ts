import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { partitionKeyOf, type ChangeEvent } from '../../src/core/change.js';
import { systemClock } from '../../src/core/clock.js';
import { PostgresDeadLetterQueue } from '../../src/dlq/postgres-dead-letter-queue.js';
import { silentLogger } from '../../src/log/logger.js';
import { Events } from '../../src/core/events.js';
import { Apply } from '../../src/pipeline/apply.js';
import { PostgresSink } from '../../src/sink/postgres/postgres-sink.js';
import { openEmbeddedStream } from '../../src/stream/embedded/embedded-stream.js';
import { freshDatabase, machinePg15, waitFor } from '../helpers/postgres.js';

function change(id: number, commitLsn: bigint, seq: number, last?: { prev?: bigint }): ChangeEvent {
  const lsn = `0/${commitLsn.toString(16).toUpperCase()}`;
  const e: ChangeEvent = {
    source: 'src', schema: 'public', table: 't', op: 'INSERT', lsn, commit_lsn: lsn, xid: 1, seq,
    commit_ts: new Date().toISOString(), key: { id: String(id) }, payload: { id: String(id), v: 'x' },
    _version: String((commitLsn << 32n) | BigInt(seq)), _schema_version: 1,
  };
  if (last) {
    e.tx_last = true;
    if (last.prev !== undefined) e.tx_prev = `0/${last.prev.toString(16).toUpperCase()}`;
  }
  return e;
}

/**
 * Transactional apply must not hold the line forever for a transaction that can never
 * become whole (here: its second change was an undecodable record, dead-lettered): once a
 * later transaction is whole, everything was read and it stopped growing, its changes are
 * applied as they are and the next transaction, chained to it, follows.
 */
describe('transactional apply: a transaction that can never become whole', () => {
  let dir: string;
  let url: string;
  let target: pg.Client;

  beforeAll(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'syncline-incomplete-'));
    url = await freshDatabase(await machinePg15(), 'syncline_txn_incomplete');
    target = new pg.Client({ connectionString: url });
    await target.connect();
    await target.query('CREATE TABLE t (id integer PRIMARY KEY, v text)');
  });

  afterAll(async () => {
    await target?.end();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('is applied as it is after incompleteTransactionMs, and the line moves on', async () => {
    const stream = await openEmbeddedStream({ path: path.join(dir, 'stream'), partitions: 2 });
    const producer = await stream.producer();
    const x1 = change(1, 0x100n, 1); // the first of two changes; the second never decodes
    const y = change(2, 0x200n, 1, { prev: 0x100n });
    await producer.publish([
      { key: partitionKeyOf(x1), value: Buffer.from(JSON.stringify(x1)) },
      { key: 'public.t:["9"]', value: Buffer.from('{not json') },
      { key: partitionKeyOf(y), value: Buffer.from(JSON.stringify(y)) },
    ]);
    await producer.close();
    const dlq = new PostgresDeadLetterQueue(url, 'syncline', 'src');
    const sink = new PostgresSink({ url, stateSchema: 'syncline', deleteMode: 'hard', versionGate: true, staleAudit: false });
    const ctl = new AbortController();
    const apply = new Apply((o) => stream.consumer('g', o), sink, new Events(), silentLogger(), {
      group: 'g', batchSize: 100, batchWaitMs: 20, clock: systemClock, deadLetters: dlq, truncate: 'apply',
      retry: { maxAttempts: 3, baseMs: 10, maxMs: 100, jitter: true },
      endOffsets: () => stream.endOffsets(), transactional: true, incompleteTransactionMs: 1500,
    });
    const running = apply.run(ctl.signal);
    try {
      await waitFor('the next transaction applied', async () => (await target.query('SELECT count(*)::int AS n FROM t WHERE id = 2')).rows[0]?.n === 1, 20_000);
      // What the broken transaction has is applied as it is; its undecodable change waits in the queue.
      expect((await target.query('SELECT count(*)::int AS n FROM t WHERE id = 1')).rows[0]?.n).toBe(1);
      const entries = await dlq.list({});
      expect(entries.map((e) => e.errorCode)).toEqual(['EVENT_MALFORMED']);
    } finally {
      ctl.abort();
      await running;
      await dlq.close();
      await sink.close();
      await stream.close();
    }
  }, 60_000);

  it('after an apply restart, the tail of a republished copy whose head was applied before passes at once (the last released commit is stored with the positions)', async () => {
    await target.query('TRUNCATE t');
    const stream = await openEmbeddedStream({ path: path.join(dir, 'stream-restart'), partitions: 2 });
    const sink = new PostgresSink({ url, stateSchema: 'syncline', deleteMode: 'hard', versionGate: true, staleAudit: false });
    const dlq = new PostgresDeadLetterQueue(url, 'syncline', 'src-restart');
    const runApply = (): { stop: () => Promise<void> } => {
      const ctl = new AbortController();
      const apply = new Apply((o) => stream.consumer('g-restart', o), sink, new Events(), silentLogger(), {
        group: 'g-restart', batchSize: 100, batchWaitMs: 20, clock: systemClock, deadLetters: dlq, truncate: 'apply',
        retry: { maxAttempts: 3, baseMs: 10, maxMs: 100, jitter: true },
        // The default: the tail would hold the line this long without the stored mark.
        endOffsets: () => stream.endOffsets(), transactional: true, incompleteTransactionMs: 60_000,
      });
      const running = apply.run(ctl.signal);
      return { stop: async () => (ctl.abort(), await running) };
    };
    const producer = await stream.producer();
    const publish = (changes: ChangeEvent[]): Promise<void> => producer.publish(changes.map((c) => ({ key: partitionKeyOf(c), value: Buffer.from(JSON.stringify(c)) })));
    const t1 = [change(10, 0x300n, 1), change(11, 0x300n, 2, {})];
    try {
      await publish(t1);
      const first = runApply();
      try {
        await waitFor('t1 applied', async () => (await target.query('SELECT count(*)::int AS n FROM t')).rows[0]?.n === 2, 20_000);
      } finally {
        await first.stop();
      }
      const { rows } = await target.query<{ o: string }>("SELECT next_offset::text AS o FROM syncline.positions WHERE group_id = 'g-restart' AND stream_partition = -1");
      expect(rows[0]?.o).toBe(String(0x300));
      // A capture restart republished t1; its head was read (stale) before apply restarted,
      // so only the tail comes now, followed by the next transaction.
      await publish([t1[1] as ChangeEvent, change(12, 0x400n, 1, { prev: 0x300n })]);
      const started = Date.now();
      const second = runApply();
      try {
        await waitFor('t2 applied', async () => (await target.query('SELECT count(*)::int AS n FROM t WHERE id = 12')).rows[0]?.n === 1, 20_000);
      } finally {
        await second.stop();
      }
      expect(Date.now() - started).toBeLessThan(15_000);
      expect(await dlq.list({})).toEqual([]);
    } finally {
      await producer.close();
      await dlq.close();
      await sink.close();
      await stream.close();
    }
  }, 90_000);
});
