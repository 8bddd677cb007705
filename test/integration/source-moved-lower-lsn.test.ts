import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runPipeline } from '../../src/api/run-pipeline.js';
import { loadConfigFile } from '../../src/config/load.js';
import { PrerequisiteError } from '../../src/core/errors.js';
import { Metrics } from '../../src/metrics/metrics.js';
import { resync } from '../../src/ops/resync.js';
import { freshDatabase, machinePg15, secondPg15, waitFor, slotStreaming, uniqueName, testLogger, type PgServer } from '../helpers/postgres.js';

/**
 * red18: the source database moves to another cluster (a dump/restore upgrade, a new server),
 * and `source.url` is pointed at it; the target stays. Every row at the target carries the
 * old cluster's LSN (`_syncline_lsn`), and a new cluster's WAL starts far below it, so the
 * version gate takes the new source's snapshot rows and every later change of an existing
 * row for stale: skipped and counted, nothing else. The target stays frozen at the old
 * values with no WARN, no dead letter, no refusal to start; `syncline repair` cannot help
 * either (its re-read is stale too). Nothing records the source's system identifier to
 * notice the change. Promise: no loss / never dropped silently (DESIGN.md 1, 4).
 *
 * Now: the target records the source's system identifier (`<state_schema>.source_servers`);
 * run/apply refuse a source of another cluster with the fix, `syncline resync --force`, which
 * resets the target's versions of the tables it re-reads, so the new snapshot applies.
 */
describe('source moved to a new cluster whose LSNs are below the target rows', () => {
  const slot = uniqueName('red18_moved');
  let dir: string;
  let b: PgServer & { fastStop(timeoutSeconds: number): Promise<boolean> };
  let oldSource: pg.Client;
  let newSource: pg.Client;
  let target: pg.Client;
  let targetUrl: string;
  let oldUrl: string;
  let newUrl: string;

  const config = (sourceUrl: string): string => `source:
  url: ${sourceUrl}
  slots: [{ name: ${slot}, publication: red18_moved_pub, tables: [t] }]
stream: { path: ${path.join(dir, 'stream')}, partitions: 2 }
consumer: { group_id: moved }
sink: { url: ${targetUrl} }
monitoring: { enabled: false }
`;

  beforeAll(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'red18-moved-'));
    const machine = await machinePg15();
    oldUrl = await freshDatabase(machine, 'red18_moved_src');
    targetUrl = await freshDatabase(machine, 'red18_moved_tgt');
    oldSource = new pg.Client({ connectionString: oldUrl });
    target = new pg.Client({ connectionString: targetUrl });
    await oldSource.connect();
    await target.connect();
    await oldSource.query('CREATE TABLE t (id int PRIMARY KEY, v text)');
    await target.query('CREATE TABLE t (id int PRIMARY KEY, v text)');
    b = await secondPg15();
    const admin = new pg.Client({ connectionString: b.url('postgres') });
    await admin.connect();
    await admin.query('CREATE DATABASE moved');
    await admin.end();
    newUrl = b.url('moved');
    newSource = new pg.Client({ connectionString: newUrl });
    await newSource.connect();
  }, 120_000);

  afterAll(async () => {
    await oldSource?.end();
    await newSource?.end().catch(() => undefined);
    await target?.end();
    await b?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('refuses to apply a moved source until resync re-bases the target, then applies its snapshot and changes', async () => {
    // Phase 1: the old source feeds the target.
    const f1 = path.join(dir, 'old.yaml');
    await writeFile(f1, config(oldUrl));
    const c1 = new AbortController();
    const r1 = runPipeline(loadConfigFile(f1), 'run', await testLogger(), c1.signal);
    await waitFor('old slot streaming', async () => await slotStreaming(oldSource, slot), 30_000);
    await oldSource.query(`INSERT INTO t VALUES (1, 'one'), (2, 'two'), (9, 'nine')`);
    await oldSource.query('DELETE FROM t WHERE id = 9'); // a tombstone at the old cluster's LSN
    await waitFor('old rows applied', async () => (await target.query('SELECT array_agg(id ORDER BY id)::text AS ids FROM t')).rows[0]?.ids === '{1,2}', 30_000);
    c1.abort();
    await r1;
    await oldSource.query('SELECT pg_drop_replication_slot($1)', [slot]);

    // The move: the same rows restored on the new cluster (as pg_dump | psql would), and
    // changed there before syncline is pointed at it.
    await newSource.query('CREATE TABLE t (id int PRIMARY KEY, v text)');
    await newSource.query(`INSERT INTO t VALUES (1, 'one'), (2, 'two')`);
    const lsn = async (c: pg.Client): Promise<string> => (await c.query<{ l: string }>('SELECT pg_current_wal_lsn()::text AS l')).rows[0]?.l ?? '';
    const below = (await newSource.query<{ b: boolean }>('SELECT $1::pg_lsn < $2::pg_lsn AS b', [await lsn(newSource), await lsn(oldSource)])).rows[0]?.b;
    expect(below).toBe(true); // the premise: the new cluster's WAL is behind the old one's
    await newSource.query(`UPDATE t SET v = 'TWO on the new cluster' WHERE id = 2`);

    // Phase 2: source.url points at the new cluster; the target and the stream stay. Not a
    // silent skip: start-up refuses, naming the fix, before capture made a slot there.
    const f2 = path.join(dir, 'new.yaml');
    await writeFile(f2, config(newUrl));
    const c2 = new AbortController();
    const r2 = runPipeline(loadConfigFile(f2), 'run', await testLogger(), c2.signal, new Metrics());
    // Settles at start-up when refused; one that runs is stopped (and its skips looked at) after a while.
    const outcome = await Promise.race([r2.then(() => 'ran and stopped', (err: unknown) => err), new Promise((r) => setTimeout(() => r('still running after 15 s'), 15_000))]);
    c2.abort();
    await r2.catch(() => undefined);
    expect(outcome).toBeInstanceOf(PrerequisiteError);
    expect(String(outcome)).toMatch(/another PostgreSQL cluster[\s\S]*syncline resync --force/);
    expect((await newSource.query('SELECT 1 FROM pg_replication_slots WHERE slot_name = $1', [slot])).rows).toHaveLength(0);

    // The way out: resync re-reads the tables from the new cluster and re-bases the target.
    const rebuilt = await resync(loadConfigFile(f2), { force: true });
    expect(rebuilt.rebased?.rows).toBe(2);
    const recorded = (await target.query<{ id: string }>('SELECT system_identifier AS id FROM syncline.source_servers')).rows;
    const newId = (await newSource.query<{ id: string }>('SELECT system_identifier::text AS id FROM pg_control_system()')).rows[0]?.id;
    expect(recorded).toEqual([{ id: newId }]);

    // Phase 3: the snapshot and every later change of the new cluster apply.
    const c3 = new AbortController();
    const r3 = runPipeline(loadConfigFile(f2), 'run', await testLogger(), c3.signal, new Metrics());
    let failure: unknown;
    r3.catch((err: unknown) => (failure = err));
    try {
      await waitFor('new slot streaming', async () => await slotStreaming(newSource, slot), 30_000);
      await newSource.query(`UPDATE t SET v = 'ONE after the move' WHERE id = 1`);
      await newSource.query(`INSERT INTO t VALUES (3, 'three'), (9, 'nine again')`);
      const expected = [
        { id: 1, v: 'ONE after the move' },
        { id: 2, v: 'TWO on the new cluster' },
        { id: 3, v: 'three' },
        { id: 9, v: 'nine again' },
      ];
      const rows = async (): Promise<unknown[]> => (await target.query<{ id: number; v: string }>('SELECT id, v FROM t ORDER BY id')).rows;
      await waitFor('the new cluster\'s snapshot and changes applied', async () => JSON.stringify(await rows()) === JSON.stringify(expected), 60_000);
      expect(failure).toBeUndefined();
      expect(await rows()).toEqual(expected);
    } finally {
      c3.abort();
      await r3.catch(() => undefined);
    }
  }, 180_000);
});
