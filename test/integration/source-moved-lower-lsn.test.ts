import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runPipeline } from '../../src/api/run-pipeline.js';
import { loadConfigFile } from '../../src/config/load.js';
import { Metrics } from '../../src/metrics/metrics.js';
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

  it.fails('applies the new source\'s changes of rows the old source wrote', async () => {
    // Phase 1: the old source feeds the target.
    const f1 = path.join(dir, 'old.yaml');
    await writeFile(f1, config(oldUrl));
    const c1 = new AbortController();
    const r1 = runPipeline(loadConfigFile(f1), 'run', await testLogger(), c1.signal);
    await waitFor('old slot streaming', async () => await slotStreaming(oldSource, slot), 30_000);
    await oldSource.query(`INSERT INTO t VALUES (1, 'one'), (2, 'two')`);
    await waitFor('old rows applied', async () => (await target.query('SELECT count(*)::int AS n FROM t')).rows[0]?.n === 2, 30_000);
    c1.abort();
    await r1;
    await oldSource.query('SELECT pg_drop_replication_slot($1)', [slot]);

    // The move: the same rows restored on the new cluster (as pg_dump | psql would).
    await newSource.query('CREATE TABLE t (id int PRIMARY KEY, v text)');
    await newSource.query(`INSERT INTO t VALUES (1, 'one'), (2, 'two')`);
    const lsn = async (c: pg.Client): Promise<string> => (await c.query<{ l: string }>('SELECT pg_current_wal_lsn()::text AS l')).rows[0]?.l ?? '';
    const below = (await newSource.query<{ b: boolean }>('SELECT $1::pg_lsn < $2::pg_lsn AS b', [await lsn(newSource), await lsn(oldSource)])).rows[0]?.b;
    expect(below).toBe(true); // the premise: the new cluster's WAL is behind the old one's

    // Phase 2: source.url points at the new cluster; the target and the stream stay.
    const f2 = path.join(dir, 'new.yaml');
    await writeFile(f2, config(newUrl));
    const metrics = new Metrics();
    const c2 = new AbortController();
    const r2 = runPipeline(loadConfigFile(f2), 'run', await testLogger(), c2.signal, metrics);
    let failure: unknown;
    r2.catch((err: unknown) => (failure = err));
    try {
      await waitFor('new slot streaming', async () => await slotStreaming(newSource, slot), 30_000);
      await newSource.query(`UPDATE t SET v = 'ONE after the move' WHERE id = 1`);
      await newSource.query(`INSERT INTO t VALUES (3, 'three')`);
      await waitFor('new row applied', async () => (await target.query('SELECT count(*)::int AS n FROM t WHERE id = 3')).rows[0]?.n === 1, 30_000);
      await new Promise((r) => setTimeout(r, 1500));
      const rows = (await target.query<{ id: number; v: string }>('SELECT id, v FROM t ORDER BY id')).rows;
      expect(failure).toBeUndefined();
      expect(rows).toEqual([
        { id: 1, v: 'ONE after the move' },
        { id: 2, v: 'two' },
        { id: 3, v: 'three' },
      ]);
    } finally {
      c2.abort();
      await r2.catch(() => undefined);
    }
  }, 180_000);
});
