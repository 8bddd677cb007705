import type { ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import path from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SnapshotStore } from '../../src/source/snapshot-store.js';
import { startCli, waitForSlotToConfirm, captureFixture, type CaptureFixture } from '../helpers/cli-process.js';
import { applyAsMultiset, readEmbeddedStream } from '../helpers/multiset-replay.js';
import { uniqueName, waitFor } from '../helpers/postgres.js';

const SLOT = uniqueName('syncline_keyless_rewrite');
const COLUMNS = ['g', 'filler'];

/**
 * A keyless table's snapshot reads under the snapshot its cut exported, on a second
 * connection that takes no lock on the table until it reads. A table rewrite (ALTER COLUMN
 * TYPE) queued behind the cut's SHARE lock ran in between, and a rewrite is not MVCC-safe:
 * under the older snapshot the table read empty. The reset went out with no rows, the job
 * was done, and the target lost the whole table.
 */
describe('a keyless snapshot with a table rewrite queued behind its cut (PostgreSQL 15)', () => {
  let fx: CaptureFixture | undefined;
  let dir: string;
  let source: pg.Client;
  let url: string;
  let child: ChildProcess | undefined;

  beforeAll(async () => {
    fx = await captureFixture('syncline_keyless_rewrite', `CREATE TABLE hist (g integer, filler text);
      ALTER TABLE hist REPLICA IDENTITY FULL;
      INSERT INTO hist SELECT g % 500, 'x' FROM generate_series(1, 2000) g`, (url, stream) => `source:
  url: ${url}
  slots: [{ name: ${SLOT}, publication: syncline_keyless_rewrite_pub, tables: [hist] }]
stream: { path: ${stream}, partitions: 1 }
monitoring: { enabled: false }
`);
    ({ dir, source, url } = fx);
  }, 60_000);

  afterAll(async () => {
    child?.kill('SIGKILL');
    await fx?.close();
  });

  it('the rewrite waits for the read, or the read is taken again: the stream replays to the source rows', async () => {
    const store = new SnapshotStore(source, 'syncline', SLOT);
    const jobs = (): Promise<{ status: string }[]> => store.all().catch(() => []);
    child = startCli(path.join(dir, 'capture.log'), 'capture', '-c', path.join(dir, 'capture.yaml'));
    await waitFor('the initial snapshot', async () => (await jobs()).some((j) => j.status === 'done'), 120_000, 200);

    // A writer keeps the table busy, so the next cut's LOCK waits; the ALTER queues behind it.
    const writer = new pg.Client({ connectionString: url });
    const alterer = new pg.Client({ connectionString: url });
    await writer.connect();
    await alterer.connect();
    try {
      await writer.query('BEGIN');
      await writer.query("INSERT INTO hist VALUES (-1, 'w')");
      await store.request({ schema: 'public', table: 'hist' });
      const waiting = async (mode: string): Promise<boolean> => {
        const r = await source.query<{ n: number }>("SELECT count(*)::int AS n FROM pg_locks WHERE relation = 'hist'::regclass AND mode = $1 AND NOT granted", [mode]);
        return (r.rows[0]?.n ?? 0) > 0;
      };
      await waitFor('the cut to wait for the writer', () => waiting('ShareLock'), 60_000, 10);
      const altered = alterer.query('ALTER TABLE hist ALTER COLUMN g TYPE bigint');
      await waitFor('the ALTER to queue behind the cut', () => waiting('AccessExclusiveLock'), 5_000, 5);
      await writer.query('COMMIT');
      await altered;
    } finally {
      await writer.end();
      await alterer.end();
    }
    await waitFor('the snapshot to finish', async () => (await jobs()).every((j) => j.status === 'done' || j.status === 'failed'), 120_000, 200);
    // (The type change may queue a snapshot of its own.)
    expect((await jobs()).every((j) => j.status === 'done')).toBe(true);

    await waitForSlotToConfirm(source, SLOT, 60_000);
    const stopped = once(child, 'exit');
    child.kill('SIGTERM');
    await stopped;
    child = undefined;

    const events = await readEmbeddedStream(path.join(dir, 'stream'), 1);
    const hist = events.filter((e) => e.change.table === 'hist').map((e) => e.change);
    const replayed = applyAsMultiset(hist, COLUMNS);
    const { rows: src } = await source.query<{ r: string }>('SELECT json_build_array(g::text, filler)::text AS r FROM hist');
    const expected = src.map((r) => r.r).sort();
    expect(replayed.length).toBe(expected.length);
    expect(replayed).toEqual(expected);
  }, 240_000);
});
