import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runPipeline } from '../../src/api/run-pipeline.js';
import { openDeadLetterQueue } from '../../src/compose/dead-letters.js';
import { loadConfigFile } from '../../src/config/load.js';
import type { DeadLetterQueue } from '../../src/dlq/dead-letter-queue.js';
import { Metrics } from '../../src/metrics/metrics.js';
import { replayDeadLetterQueue } from '../../src/ops/replay-dead-letters.js';
import { machinePg15, slotStreaming, sourceAndTarget, testLogger, uniqueName, waitFor } from '../helpers/postgres.js';

/**
 * Red team on `syncline dlq replay`: a replay must leave the target equal to the source,
 * whatever the stream does meanwhile and whichever entries the operator selects.
 */
describe('dead-letter replay keeps rows in order and catches up', () => {
  const prefix = 'dlqrt_replay';
  const slot = uniqueName(prefix);
  let dir: string;
  let configFile: string;
  let queue: DeadLetterQueue;
  let source: pg.Client;
  let target: pg.Client;

  beforeAll(async () => {
    const server = await machinePg15();
    dir = await mkdtemp(path.join(os.tmpdir(), 'syncline-dlqrt-'));
    const pair = await sourceAndTarget(server, prefix);
    ({ source, target } = pair);
    await source.query('CREATE TABLE t (id integer PRIMARY KEY, v integer NOT NULL, note text)');
    await target.query('CREATE TABLE t (id integer PRIMARY KEY, v integer NOT NULL CONSTRAINT no_thirteen CHECK (v <> 13), note text)');
    configFile = path.join(dir, 'sync.yaml');
    await writeFile(
      configFile,
      `source:
  url: ${pair.sourceUrl}
  slots: [{ name: ${slot}, publication: ${prefix}_pub, tables: [t] }]
  snapshot: never # the tests count the WAL's changes; a first snapshot running late (busy machine) would dead-letter a row again
stream: { path: ${path.join(dir, 'stream')}, partitions: 2 }
consumer: { group_id: ${slot}, retry: { backoff_base_ms: 10, backoff_max_ms: 100 } }
sink: { url: ${pair.targetUrl} }
monitoring: { enabled: false }
`,
    );
    queue = openDeadLetterQueue(loadConfigFile(configFile)) as DeadLetterQueue;
    await queue.prepare();
  }, 60_000);

  afterAll(async () => {
    await queue?.close();
    await source?.query('SELECT pg_drop_replication_slot($1) FROM pg_replication_slots WHERE slot_name = $1 AND NOT active', [slot]).catch(() => undefined);
    await source?.end();
    await target?.end();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  const depth = async (): Promise<number> => (await queue.depth()).count;
  const targetV = async (id: number): Promise<number | undefined> => (await target.query('SELECT v FROM t WHERE id = $1', [id])).rows[0]?.v;

  it('a row changed while its entries are replayed is not left behind in the queue', async () => {
    const ctl = new AbortController();
    const running = runPipeline(loadConfigFile(configFile), 'run', await testLogger(), ctl.signal, new Metrics());
    running.catch(() => undefined);
    try {
      await waitFor('slot streaming', () => slotStreaming(source, slot));
      await source.query('INSERT INTO t VALUES (1, 13, null)');
      // Waited for: in one batch the two would be folded into the update, which applies.
      await waitFor('the insert dead-lettered', async () => (await depth()) === 1, 30_000, 100, async () => `depth ${await depth()}, target ${JSON.stringify((await target.query('SELECT * FROM t')).rows)}`);
      await source.query('UPDATE t SET v = 14 WHERE id = 1');
      await waitFor('the update dead-lettered behind it', async () => (await depth()) === 2, 30_000, 100, async () => `entries ${JSON.stringify((await queue.list({})).map((e) => [e.errorCode, e.change?.op, e.rowKey]))}, target ${JSON.stringify((await target.query('SELECT * FROM t')).rows)}`);
      await target.query('ALTER TABLE t DROP CONSTRAINT no_thirteen');
      // The running apply still sees row 1 blocked for a few seconds after the replay; the
      // row keeps changing meanwhile (a hot row).
      const replay = await replayDeadLetterQueue(loadConfigFile(configFile), {});
      expect(replay).toMatchObject({ replayed: 2, failed: [], held: [] });
      for (let v = 100; v < 110; v++) {
        await source.query('UPDATE t SET v = $1 WHERE id = 1', [v]);
        await new Promise((r) => setTimeout(r, 300));
      }
      // Before, the changes that arrived then waited BLOCKED_BY_EARLIER behind nothing, for good.
      await waitFor('row 1 caught up and the queue empty', async () => (await targetV(1)) === 109 && (await depth()) === 0, 30_000);
    } finally {
      ctl.abort();
      await running;
    }
  }, 90_000);

  it('replaying a later entry of a row by id waits for the earlier one (its TOASTed value is not lost)', async () => {
    // Whatever the first test left (it fails by leaving entries) does not count here.
    await queue.remove((await queue.list({})).map((e) => e.id));
    await target.query('ALTER TABLE t DROP CONSTRAINT IF EXISTS no_thirteen, ADD CONSTRAINT no_thirteen CHECK (v <> 13)');
    const ctl = new AbortController();
    const running = runPipeline(loadConfigFile(configFile), 'run', await testLogger(), ctl.signal, new Metrics());
    running.catch(() => undefined);
    try {
      await waitFor('slot streaming', () => slotStreaming(source, slot));
      await source.query("INSERT INTO t VALUES (2, 1, 'small')");
      await waitFor('row 2 applied', async () => (await targetV(2)) === 1, 30_000);
      // A TOASTed note set by the poison; the later update leaves it unchanged (no value sent).
      await source.query("UPDATE t SET v = 13, note = (SELECT string_agg(md5(g::text), '') FROM generate_series(1, 400) g) WHERE id = 2");
      await waitFor('the poison dead-lettered', async () => (await depth()) === 1, 30_000);
      await source.query('UPDATE t SET v = 14 WHERE id = 2');
      await waitFor('both changes of row 2 dead-lettered', async () => (await depth()) === 2, 30_000);
    } finally {
      ctl.abort();
      await running;
    }
    const [poison, later] = await queue.list({ table: 't' });
    expect(poison?.errorCode).toBe('SINK_23514');
    const early = await replayDeadLetterQueue(loadConfigFile(configFile), { ids: [later?.id ?? ''] });
    expect(early).toMatchObject({ replayed: 0, held: [later?.id] });
    expect(await targetV(2)).toBe(1);

    await target.query('ALTER TABLE t DROP CONSTRAINT no_thirteen');
    expect(await replayDeadLetterQueue(loadConfigFile(configFile), {})).toMatchObject({ replayed: 2, stale: 0, failed: [] });
    const note = 'SELECT v, md5(note) AS h FROM t WHERE id = 2';
    expect((await target.query(note)).rows[0]).toEqual((await source.query(note)).rows[0]);
  }, 90_000);
});

describe('dead-letter replay with sink.consistency: transactional', () => {
  const prefix = 'dlqrt_tx';
  const slot = uniqueName(prefix);
  let dir: string;
  let configFile: string;
  let queue: DeadLetterQueue;
  let source: pg.Client;
  let target: pg.Client;

  beforeAll(async () => {
    const server = await machinePg15();
    dir = await mkdtemp(path.join(os.tmpdir(), 'syncline-dlqrt-tx-'));
    const pair = await sourceAndTarget(server, prefix);
    ({ source, target } = pair);
    await source.query('CREATE TABLE acct (id integer PRIMARY KEY, bal integer NOT NULL)');
    await target.query('CREATE TABLE acct (id integer PRIMARY KEY, bal integer NOT NULL CONSTRAINT nonneg CHECK (bal >= 0))');
    configFile = path.join(dir, 'sync.yaml');
    await writeFile(
      configFile,
      `source:
  url: ${pair.sourceUrl}
  slots: [{ name: ${slot}, publication: ${prefix}_pub, tables: [acct] }]
  snapshot: never # the tests count the WAL's changes; a first snapshot running late (busy machine) would dead-letter a row again
stream: { path: ${path.join(dir, 'stream')}, partitions: 2 }
consumer: { group_id: ${slot}, retry: { backoff_base_ms: 10, backoff_max_ms: 100 } }
sink: { url: ${pair.targetUrl}, consistency: transactional }
monitoring: { enabled: false }
`,
    );
    queue = openDeadLetterQueue(loadConfigFile(configFile)) as DeadLetterQueue;
    await queue.prepare();
  }, 60_000);

  afterAll(async () => {
    await queue?.close();
    await source?.query('SELECT pg_drop_replication_slot($1) FROM pg_replication_slots WHERE slot_name = $1 AND NOT active', [slot]).catch(() => undefined);
    await source?.end();
    await target?.end();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('a transaction the target still refuses in part is replayed whole or not at all', async () => {
    const ctl = new AbortController();
    const running = runPipeline(loadConfigFile(configFile), 'run', await testLogger(), ctl.signal, new Metrics());
    running.catch(() => undefined);
    try {
      await waitFor('slot streaming', () => slotStreaming(source, slot));
      await source.query('INSERT INTO acct VALUES (1, 100), (2, 100)');
      await waitFor('accounts applied', async () => (await target.query('SELECT count(*)::int AS n FROM acct')).rows[0]?.n === 2, 30_000);
      // A transfer whose debit the target refuses (bal -50): the transaction waits whole.
      await source.query('BEGIN; UPDATE acct SET bal = bal + 150 WHERE id = 1; UPDATE acct SET bal = bal - 150 WHERE id = 2; COMMIT');
      await waitFor('the transfer dead-lettered', async () => (await queue.depth()).count === 2, 30_000);
    } finally {
      ctl.abort();
      await running;
    }
    const balances = 'SELECT id, bal FROM acct ORDER BY id';
    // Before the fix: nothing of it reaches the target (before, the credit did: sum 350).
    const early = await replayDeadLetterQueue(loadConfigFile(configFile), {});
    expect(early).toMatchObject({ replayed: 0 });
    expect(early.failed).toHaveLength(2);
    expect((await target.query(balances)).rows).toEqual([{ id: 1, bal: 100 }, { id: 2, bal: 100 }]);
    // The credit alone, chosen by id, waits for its transaction.
    const [credit] = await queue.list({});
    expect(await replayDeadLetterQueue(loadConfigFile(configFile), { ids: [credit?.id ?? ''] })).toMatchObject({ replayed: 0, held: [credit?.id] });
    expect((await target.query(balances)).rows).toEqual([{ id: 1, bal: 100 }, { id: 2, bal: 100 }]);

    await target.query('ALTER TABLE acct DROP CONSTRAINT nonneg');
    expect(await replayDeadLetterQueue(loadConfigFile(configFile), {})).toMatchObject({ replayed: 2, failed: [] });
    expect((await target.query(balances)).rows).toEqual((await source.query(balances)).rows);
  }, 90_000);

  it('transfers of an account changed while its transaction is replayed are not left behind in the queue', async () => {
    // NOT VALID: account 2 is at -50 since the first test.
    await target.query('ALTER TABLE acct DROP CONSTRAINT IF EXISTS nonneg, ADD CONSTRAINT nonneg CHECK (bal >= 0) NOT VALID');
    const ctl = new AbortController();
    const running = runPipeline(loadConfigFile(configFile), 'run', await testLogger(), ctl.signal, new Metrics());
    running.catch(() => undefined);
    const balances = 'SELECT id, bal FROM acct ORDER BY id';
    try {
      await waitFor('slot streaming', () => slotStreaming(source, slot));
      await source.query('INSERT INTO acct VALUES (3, 100), (4, 100), (5, 1000)');
      await waitFor('accounts applied', async () => (await target.query('SELECT count(*)::int AS n FROM acct WHERE id >= 3')).rows[0]?.n === 3, 30_000);
      await source.query('BEGIN; UPDATE acct SET bal = bal - 150 WHERE id = 3; UPDATE acct SET bal = bal + 150 WHERE id = 4; COMMIT');
      await waitFor('the transfer dead-lettered', async () => (await queue.depth()).count === 2, 30_000);
      await target.query('ALTER TABLE acct DROP CONSTRAINT nonneg');
      expect(await replayDeadLetterQueue(loadConfigFile(configFile), {})).toMatchObject({ replayed: 2, failed: [] });
      // Account 3 keeps changing while the running apply still sees it blocked; account 5,
      // in the same transactions, follows it into the queue.
      for (let i = 0; i < 10; i++) {
        await source.query('BEGIN; UPDATE acct SET bal = bal + 1 WHERE id = 3; UPDATE acct SET bal = bal - 1 WHERE id = 5; COMMIT');
        await new Promise((r) => setTimeout(r, 300));
      }
      const want = JSON.stringify((await source.query(balances)).rows);
      await waitFor('the accounts caught up and the queue empty', async () => JSON.stringify((await target.query(balances)).rows) === want && (await queue.depth()).count === 0, 30_000);
    } finally {
      ctl.abort();
      await running;
    }
  }, 90_000);
});
