import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runPipeline } from '../../src/api/run-pipeline.js';
import { parseConfig } from '../../src/config/load.js';
import { SnapshotStore } from '../../src/source/snapshot-store.js';
import { sameRows } from '../helpers/compare-rows.js';
import { embeddedPg17, sourceAndTarget, testLogger, waitFor, type PgServer } from '../helpers/postgres.js';

/**
 * F6: a commit can be in the WAL (and decoded, and applied) before other sessions see it:
 * while it is flushed, or while it waits for a synchronous standby. A snapshot chunk read in
 * that moment lacks it, and its rows, emitted at the high watermark, would overwrite the
 * newer change. A private PostgreSQL 17 whose synchronous standby never answers holds such a
 * commit as long as the test wants.
 */
describe('snapshot of a table with a commit that is in the WAL but not yet visible (PostgreSQL 17)', () => {
  let server: PgServer;
  let dir: string;
  let source: pg.Client;
  let target: pg.Client;
  let sourceUrl: string;
  let stop: (() => Promise<void>) | undefined;

  /** Whether backend `pid` waits: for its standby (`SyncRep`, the commit is in the WAL but invisible) or for a row `Lock`. */
  const waitsOn = async (pid: number | undefined, what: 'SyncRep' | 'Lock'): Promise<boolean> =>
    (await source.query('SELECT 1 FROM pg_stat_activity WHERE pid = $1 AND (wait_event = $2 OR wait_event_type = $2)', [pid, what])).rowCount === 1;

  beforeAll(async () => {
    // Only sessions that ask for it (synchronous_commit = on) wait for the standby that never comes.
    server = await embeddedPg17('logical', ['-c', 'synchronous_standby_names=ghost_standby', '-c', 'synchronous_commit=local']);
    dir = await mkdtemp(path.join(os.tmpdir(), 'syncline-vis-'));
    const pair = await sourceAndTarget(server, 'syncline_vis');
    ({ source, target, sourceUrl } = pair);
    for (const c of [source, target]) await c.query('CREATE TABLE t7 (id integer PRIMARY KEY, v text)');
    await source.query("INSERT INTO t7 SELECT g, 'old' FROM generate_series(1, 100) g");
    for (const c of [source, target]) await c.query('CREATE TABLE t8 (id integer PRIMARY KEY, n integer, big text)');
    await source.query('ALTER TABLE t8 ALTER COLUMN big SET STORAGE EXTERNAL');
    await source.query("INSERT INTO t8 SELECT g, 0, repeat(md5(g::text), 200) FROM generate_series(1, 10) g");
    const config = parseConfig(
      `source:
  url: ${pair.sourceUrl}
  slots: [{ name: syncline_vis, publication: syncline_vis_pub, tables: [t7, t8] }]
stream: { path: ${path.join(dir, 'stream')}, partitions: 2 }
consumer: { group_id: vis, batch_size: 1 }
sink: { url: ${pair.targetUrl} }
monitoring: { enabled: false }
`,
      {},
    );
    const ctl = new AbortController();
    const running = runPipeline(config, 'run', await testLogger(), ctl.signal);
    running.catch(() => undefined);
    stop = async () => {
      ctl.abort();
      await running;
    };
    await waitFor('the initial snapshot', async () => (await sameRows(source, target, 't7')) && sameRows(source, target, 't8'), 60_000, 200);
  }, 120_000);

  afterAll(async () => {
    await stop?.();
    await source?.end();
    await target?.end();
    await server?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('is read again until the commit is visible, and never overwrites it', async () => {
    const writer = new pg.Client({ connectionString: sourceUrl });
    await writer.connect();
    writer.on('error', () => undefined);
    try {
      const { rows } = await writer.query<{ pid: number }>('SELECT pg_backend_pid() AS pid');
      await writer.query('SET synchronous_commit = on');
      // Commits in the WAL, then waits for the standby: invisible to every other session.
      const waiting = writer.query("UPDATE t7 SET v = 'new' WHERE id = 42").catch(() => undefined);
      const v42 = async (c: pg.Client): Promise<string | undefined> => (await c.query<{ v: string }>('SELECT v FROM t7 WHERE id = 42')).rows[0]?.v;
      await waitFor('capture to apply the decoded commit', async () => (await v42(target)) === 'new', 30_000, 100);
      expect(await v42(source)).toBe('old');

      const store = new SnapshotStore(source, 'syncline', 'syncline_vis');
      const id = await store.request({ schema: 'public', table: 't7' });
      // The chunk keeps being read and rejected while the commit stays invisible.
      await new Promise((r) => setTimeout(r, 3000));
      expect((await store.get(id))?.status).toBe('running');
      expect(await v42(target)).toBe('new');

      // The standby wait is cancelled: the commit becomes visible everywhere.
      await source.query('SELECT pg_cancel_backend($1)', [rows[0]?.pid]);
      await waiting;
      expect(await v42(source)).toBe('new');
      await waitFor('the snapshot to finish', async () => (await store.get(id))?.status === 'done', 30_000, 100);
      await waitFor('target equals source', () => sameRows(source, target, 't7'), 30_000, 200);
      expect(await v42(target)).toBe('new');
    } finally {
      await writer.end().catch(() => undefined);
    }
  }, 120_000);

  it('a key change that left a TOASTed value unchanged reads it once the commit is visible, not before', async () => {
    const writer = new pg.Client({ connectionString: sourceUrl });
    await writer.connect();
    writer.on('error', () => undefined);
    try {
      const { rows } = await writer.query<{ pid: number }>('SELECT pg_backend_pid() AS pid');
      await writer.query('SET synchronous_commit = on');
      // The new key's row exists nowhere at the target: capture must read `big` at the source,
      // where the commit is not visible yet.
      const waiting = writer.query('UPDATE t8 SET id = 1000 + id WHERE id <= 3').catch(() => undefined);
      await new Promise((r) => setTimeout(r, 2000));
      expect((await target.query('SELECT count(*)::int AS n FROM t8 WHERE id > 1000')).rows[0]?.n).toBe(0);
      await source.query('SELECT pg_cancel_backend($1)', [rows[0]?.pid]);
      await waiting;
      await waitFor('target equals source', () => sameRows(source, target, 't8'), 30_000, 200);
      const moved = await target.query<{ id: number; len: number }>('SELECT id, length(big) AS len FROM t8 WHERE id > 1000 ORDER BY id');
      expect(moved.rows).toEqual([1001, 1002, 1003].map((id) => ({ id, len: 6400 })));
    } finally {
      await writer.end().catch(() => undefined);
    }
  }, 120_000);

  it('a key change whose row left the new key before capture could read it is skipped, not refused; the later delete decides the row', async () => {
    const writer = new pg.Client({ connectionString: sourceUrl });
    const deleter = new pg.Client({ connectionString: sourceUrl });
    for (const c of [writer, deleter]) {
      await c.connect();
      c.on('error', () => undefined);
    }
    try {
      const { rows } = await writer.query<{ pid: number }>('SELECT pg_backend_pid() AS pid');
      await writer.query('SET synchronous_commit = on');
      const waiting = writer.query('UPDATE t8 SET id = 2000 + id WHERE id IN (4, 5)').catch(() => undefined);
      await waitFor('the key change to wait for the standby', () => waitsOn(rows[0]?.pid, 'SyncRep'), 10_000, 20);
      // Finds the old row versions (ids 4, 5) locked by the key change, waits, then follows
      // them to the new versions (2004, 2005) and deletes those: it commits right after the
      // change is visible, so capture's read of the new keys finds them gone.
      const deleterPid = (await deleter.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0]?.pid;
      const deleting = deleter.query('DELETE FROM t8 WHERE id IN (4, 5, 2004, 2005)');
      await waitFor('the delete to wait for the key change', () => waitsOn(deleterPid, 'Lock'), 10_000, 20);
      await source.query('SELECT pg_cancel_backend($1)', [rows[0]?.pid]);
      await waiting;
      await deleting;
      await source.query('UPDATE t8 SET n = n + 1 WHERE id = 6');
      expect((await source.query('SELECT count(*)::int AS n FROM t8 WHERE id IN (4, 5, 2004, 2005)')).rows[0]?.n).toBe(0);
      await waitFor('target equals source', () => sameRows(source, target, 't8'), 30_000, 200);
      const dlq = await target.query<{ n: number }>("SELECT count(*)::int AS n FROM syncline.dead_letter").catch(() => ({ rows: [{ n: 0 }] }));
      expect(dlq.rows[0]?.n).toBe(0);
    } finally {
      await writer.end().catch(() => undefined);
      await deleter.end().catch(() => undefined);
    }
  }, 120_000);

  it('an UPDATE of a key whose key-change insert was skipped is read too, not refused', async () => {
    // In one transaction: a key change into 3007 leaving `big` unchanged, an UPDATE of 3007
    // leaving it unchanged, and a key change away to 4007. Capture reads 3007 after the
    // commit: gone; both changes of 3007 are skipped, 4007 gets its value.
    await source.query('BEGIN');
    await source.query('UPDATE t8 SET id = 3007 WHERE id = 7');
    await source.query('UPDATE t8 SET n = n + 1 WHERE id = 3007');
    await source.query('UPDATE t8 SET id = 4007 WHERE id = 3007');
    await source.query('COMMIT');
    await source.query('UPDATE t8 SET n = n + 1 WHERE id = 8');
    await waitFor('target equals source', () => sameRows(source, target, 't8'), 30_000, 200);
    expect((await target.query<{ len: number }>('SELECT length(big) AS len FROM t8 WHERE id = 4007')).rows[0]?.len).toBe(6400);
    const dlq = await target.query<{ n: number }>("SELECT count(*)::int AS n FROM syncline.dead_letter").catch(() => ({ rows: [{ n: 0 }] }));
    expect(dlq.rows[0]?.n).toBe(0);
  }, 120_000);
});
