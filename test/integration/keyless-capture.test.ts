import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runPipeline } from '../../src/api/run-pipeline.js';
import { parseConfig } from '../../src/config/load.js';
import { SnapshotStore } from '../../src/source/snapshot-store.js';
import { applyAsMultiset, readEmbeddedStream } from '../helpers/multiset-replay.js';
import { freshDatabase, machinePg15, testLogger, waitFor, uniqueName } from '../helpers/postgres.js';

const SLOT = uniqueName('syncline_keyless_cap');

/**
 * What capture publishes for a keyless table (REPLICA IDENTITY FULL, no primary key, like
 * pgbench_history), checked without any sink: replaying the stream as a multiset (a reset
 * empties, INSERT/READ add a row, DELETE removes one row equal to `before`, UPDATE both) must
 * give exactly the source's rows, while the table is written during its snapshots.
 */
describe('keyless tables at capture (PostgreSQL 15)', () => {
  let dir: string;
  let source: pg.Client;
  let url: string;
  let stop: (() => Promise<void>) | undefined;
  const PARTITIONS = 4;

  beforeAll(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'syncline-keyless-cap-'));
    url = await freshDatabase(await machinePg15(), 'syncline_keyless_cap');
    source = new pg.Client({ connectionString: url });
    await source.connect();
    await source.query('CREATE TABLE hist (tid integer, bid integer, aid integer, delta integer, mtime timestamp, filler char(22))');
    await source.query('ALTER TABLE hist REPLICA IDENTITY FULL');
    // Duplicates on purpose: rows that cannot be told apart.
    await source.query('INSERT INTO hist SELECT g % 10, g % 3, g % 1000, g % 7, timestamp \'2026-01-01\' + (g % 50) * interval \'1 s\', NULL FROM generate_series(1, 30000) g');
    const config = parseConfig(
      `source:
  url: ${url}
  slots: [{ name: ${SLOT}, publication: syncline_keyless_cap_pub, tables: [hist] }]
  snapshot_chunk_size: 1000
stream: { path: ${path.join(dir, 'stream')}, partitions: ${PARTITIONS} }
monitoring: { enabled: false }
`,
      {},
    );
    const ctl = new AbortController();
    const running = runPipeline(config, 'capture', await testLogger(), ctl.signal);
    running.catch(() => undefined);
    stop = async () => {
      ctl.abort();
      await running;
    };
  }, 60_000);

  afterAll(async () => {
    await stop?.();
    await source?.end();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('the initial snapshot and a later one, under inserts, updates and deletes, replay to the source rows', async () => {
    const store = new SnapshotStore(source, 'syncline', SLOT);
    let i = 0;
    const write = async (): Promise<void> => {
      i++;
      await source.query('INSERT INTO hist VALUES ($1, $2, $3, $4, now(), NULL)', [i % 10, i % 3, i % 1000, i]);
      if (i % 4 === 0) await source.query('UPDATE hist SET delta = delta + 1000 WHERE ctid = (SELECT ctid FROM hist WHERE aid = $1 LIMIT 1)', [i % 1000]);
      if (i % 5 === 0) await source.query('DELETE FROM hist WHERE ctid = (SELECT ctid FROM hist WHERE aid = $1 LIMIT 1)', [(i * 7) % 1000]);
    };
    let during = 0;
    const allDone = async (n: number): Promise<boolean> => {
      const jobs = await store.all().catch(() => []);
      if (jobs.some((j) => j.status === 'running')) during++;
      return jobs.length === n && jobs.every((j) => j.status === 'done');
    };
    await waitFor('the initial snapshot', async () => {
      await write();
      return allDone(1);
    }, 60_000, 0);
    await store.request({ schema: 'public', table: 'hist' });
    await waitFor('the second snapshot', async () => {
      await write();
      return allDone(2);
    }, 60_000, 0);
    for (let k = 0; k < 100; k++) await write();
    expect(during).toBeGreaterThan(3);
    const { rows } = await source.query<{ lsn: string }>('SELECT pg_current_wal_lsn()::text AS lsn');
    await waitFor('capture to confirm the last write', async () => {
      const r = await source.query<{ ok: boolean }>("SELECT confirmed_flush_lsn >= $1::pg_lsn AS ok FROM pg_replication_slots WHERE slot_name = $2", [rows[0]?.lsn, SLOT]);
      return r.rows[0]?.ok === true;
    }, 30_000, 100);
    await stop?.();
    stop = undefined;

    const events = await readEmbeddedStream(path.join(dir, 'stream'), PARTITIONS);
    const hist = events.filter((e) => e.change.table === 'hist');
    expect(new Set(hist.map((e) => e.partition)).size).toBe(1);
    expect(hist.filter((e) => e.change.snapshot_reset).length).toBeGreaterThanOrEqual(2);
    const replayed = applyAsMultiset(hist.map((e) => e.change), ['tid', 'bid', 'aid', 'delta', 'mtime', 'filler']);
    const { rows: src } = await source.query<{ r: string }>('SELECT json_build_array(tid::text, bid::text, aid::text, delta::text, mtime::text, filler::text)::text AS r FROM hist');
    const expected = src.map((r) => r.r).sort();
    expect(replayed.length).toBe(expected.length);
    expect(replayed).toEqual(expected);
  }, 180_000);
});
