import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runPipeline } from '../../src/api/run-pipeline.js';
import { loadConfigFile } from '../../src/config/load.js';
import { openDeadLetterQueue } from '../../src/compose/dead-letters.js';
import type { DeadLetterQueue } from '../../src/dlq/dead-letter-queue.js';
import { SnapshotStore } from '../../src/source/snapshot-store.js';
import { rowDiff } from '../helpers/compare-rows.js';
import { machinePg15, slotStreaming, sourceAndTarget, testLogger, waitFor, uniqueName } from '../helpers/postgres.js';

/**
 * A row whose changes wait in the dead-letter queue is healed by a snapshot of its table: the
 * snapshot row is the whole row as of a newer version, so it passes the waiting changes, and
 * they leave the queue (stale now), so the row's later changes flow again. This is the fix the
 * UNCHANGED_VALUE_MISSING and MULTISET_ROW_MISSING errors name; before, the snapshot rows
 * followed the waiting changes into the queue (found by a red-team run).
 */
describe('a snapshot heals rows whose changes were dead-lettered', () => {
  const prefix = 'syncline_heal';
  const slot = uniqueName(prefix);
  let dir: string;
  let source: pg.Client;
  let target: pg.Client;
  let configFile: string;
  let queue: DeadLetterQueue;

  beforeAll(async () => {
    const server = await machinePg15();
    dir = await mkdtemp(path.join(os.tmpdir(), 'syncline-heal-'));
    const pair = await sourceAndTarget(server, prefix);
    ({ source, target } = pair);
    for (const c of [source, target]) {
      await c.query('CREATE TABLE t (id integer PRIMARY KEY, n integer NOT NULL, big text)');
      await c.query('CREATE TABLE k (a integer, b text)');
    }
    await source.query('ALTER TABLE t ALTER COLUMN big SET STORAGE EXTERNAL');
    await source.query('ALTER TABLE k REPLICA IDENTITY FULL');
    await source.query('INSERT INTO t SELECT g, 0, repeat(md5(g::text), 250) FROM generate_series(1, 20) g');
    await source.query("INSERT INTO k SELECT g % 3, 'x' FROM generate_series(1, 9) g");
    configFile = path.join(dir, 'sync.yaml');
    await writeFile(
      configFile,
      `source:
  url: ${pair.sourceUrl}
  slots: [{ name: ${slot}, publication: ${prefix}_pub, tables: [t, k] }]
stream: { path: ${path.join(dir, 'stream')}, partitions: 2 }
consumer: { group_id: heal, retry: { backoff_base_ms: 10, backoff_max_ms: 100 } }
sink: { url: ${pair.targetUrl} }
monitoring: { enabled: false }
`,
    );
    queue = openDeadLetterQueue(loadConfigFile(configFile)) as DeadLetterQueue;
    await queue.prepare();
  }, 60_000);

  afterAll(async () => {
    await queue?.close();
    await source?.end();
    await target?.end();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  const equal = (table: string) => async (): Promise<boolean> => {
    const d = await rowDiff(source, target, table, 1);
    return d.missing.length === 0 && d.extra.length === 0;
  };

  it('UNCHANGED_VALUE_MISSING and MULTISET_ROW_MISSING entries leave the queue after a snapshot; the rows converge', async () => {
    const ctl = new AbortController();
    const running = runPipeline(loadConfigFile(configFile), 'run', await testLogger(), ctl.signal);
    let failure: unknown;
    running.catch((err: unknown) => (failure = err));
    await waitFor('slot active', async () => await slotStreaming(source, slot));
    await waitFor('initial snapshot of t', equal('t'), 30_000);
    await waitFor('initial snapshot of k', equal('k'), 30_000);

    // Drift behind syncline's back: rows gone at the target.
    await target.query('DELETE FROM t WHERE id IN (3, 4)');
    await target.query('DELETE FROM k WHERE a = 1');
    // Updates leaving `big` unchanged: nothing to keep it from, refused; later changes follow.
    await source.query('UPDATE t SET n = 1 WHERE id IN (3, 4)');
    await source.query('UPDATE t SET n = 2 WHERE id = 3');
    // A keyless delete of a row the target lacks, after the table's snapshot: drift.
    await source.query('DELETE FROM k WHERE ctid = (SELECT ctid FROM k WHERE a = 1 LIMIT 1)');
    await source.query("INSERT INTO k VALUES (5, 'later')");
    await waitFor('the refused changes and their followers dead-lettered', async () => (await queue.depth()).count === 5, 30_000);
    const codes = (await queue.list({ limit: 100 })).map((e) => e.errorCode).sort();
    expect(codes).toEqual(['BLOCKED_BY_EARLIER', 'BLOCKED_BY_EARLIER', 'MULTISET_ROW_MISSING', 'UNCHANGED_VALUE_MISSING', 'UNCHANGED_VALUE_MISSING']);

    const store = new SnapshotStore(source, 'syncline', slot);
    await store.request({ schema: 'public', table: 't' });
    await store.request({ schema: 'public', table: 'k' });
    await waitFor('t equal after its snapshot', equal('t'), 30_000);
    await waitFor('k equal after its snapshot', equal('k'), 30_000);
    await waitFor('the superseded entries left the queue', async () => (await queue.depth()).count === 0, 30_000);
    // The rows flow again.
    await source.query('UPDATE t SET n = 9 WHERE id = 3');
    await source.query("INSERT INTO k VALUES (6, 'after')");
    await waitFor('t flows again', equal('t'), 30_000);
    await waitFor('k flows again', equal('k'), 30_000);
    expect((await queue.depth()).count).toBe(0);
    expect(failure).toBeUndefined();
    ctl.abort();
    await running;
  }, 120_000);
});
