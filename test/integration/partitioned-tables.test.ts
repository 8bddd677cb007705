import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type pg from 'pg';
import { runPipeline } from '../../src/api/run-pipeline.js';
import { parseConfig } from '../../src/config/load.js';
import { rowDiff, sameRows } from '../helpers/compare-rows.js';
import { freePort, machinePg15, sourceAndTarget, testLogger, uniqueName, waitFor } from '../helpers/postgres.js';

/**
 * A partitioned source table (declarative partitioning, as `pgbench -i --partitions` makes)
 * into a plain target table: changes must name the table, not its partitions, and a restart
 * with the publication already there must not try to add the table again (PostgreSQL
 * refuses: "already member of publication").
 */
describe('partitioned source tables (PostgreSQL 15)', () => {
  let source: pg.Client;
  let target: pg.Client;
  let urls: { sourceUrl: string; targetUrl: string };
  let dir: string;
  const slot = uniqueName('syncline_parted');

  beforeAll(async () => {
    const pair = await sourceAndTarget(await machinePg15(), 'syncline_parted');
    ({ source, target } = pair);
    urls = pair;
    dir = await mkdtemp(path.join(os.tmpdir(), 'syncline-parted-'));
    await source.query(`CREATE TABLE parted (id int, region text, v text, PRIMARY KEY (id, region)) PARTITION BY LIST (region)`);
    await source.query(`CREATE TABLE parted_eu PARTITION OF parted FOR VALUES IN ('eu')`);
    await source.query(`CREATE TABLE parted_us PARTITION OF parted FOR VALUES IN ('us')`);
    await source.query(`INSERT INTO parted SELECT i, CASE WHEN i % 2 = 0 THEN 'eu' ELSE 'us' END, 'v' || i FROM generate_series(1, 200) i`);
    // The target: one plain table.
    await target.query(`CREATE TABLE parted (id int, region text, v text, PRIMARY KEY (id, region))`);
    // A publication made before syncline, by partition (PostgreSQL's default).
    await source.query(`CREATE PUBLICATION syncline_parted_pub FOR TABLE parted`);
  });

  afterAll(async () => {
    await source?.end();
    await target?.end();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  async function running<T>(fn: () => Promise<T>): Promise<T> {
    const config = parseConfig(`source:
  url: ${urls.sourceUrl}
  slots: [{ name: ${slot}, publication: syncline_parted_pub, tables: [parted] }]
stream: { path: ${path.join(dir, 'stream')} }
sink: { url: ${urls.targetUrl} }
monitoring: { port: ${await freePort()} }
`);
    const ctl = new AbortController();
    const run = runPipeline(config, 'run', await testLogger(), ctl.signal);
    let failed: unknown;
    run.catch((err: unknown) => {
      failed = err;
    });
    try {
      const result = await fn();
      if (failed) throw failed;
      return result;
    } finally {
      ctl.abort();
      await run.catch(() => undefined);
    }
  }

  const converged = (): Promise<void> =>
    waitFor('the target table to equal the partitioned source', () => sameRows(source, target, 'parted'), 60_000, 200, async () => JSON.stringify(await rowDiff(source, target, 'parted', 3)));

  it('replicates the table (snapshot, updates, a row moving between partitions), and again after a restart', async () => {
    await running(async () => {
      await converged();
      await source.query(`UPDATE parted SET v = v || '-u' WHERE id <= 20`);
      // A row moving to another partition: a delete in one and an insert in the other.
      await source.query(`UPDATE parted SET region = 'us' WHERE id = 2`);
      await source.query(`DELETE FROM parted WHERE id = 3`);
      await converged();
    });
    const { rows } = await source.query<{ viaroot: boolean }>(`SELECT pubviaroot AS viaroot FROM pg_publication WHERE pubname = 'syncline_parted_pub'`);
    expect(rows[0]?.viaroot).toBe(true);
    // The publication is there now, with the table: a restart goes on.
    await running(async () => {
      await source.query(`INSERT INTO parted VALUES (1000, 'eu', 'new'), (1001, 'us', 'new')`);
      await source.query(`UPDATE parted SET v = 'again' WHERE id = 4`);
      await converged();
    });
    const { rows: n } = await target.query<{ n: number }>('SELECT count(*)::int AS n FROM parted');
    expect(n[0]?.n).toBe(201);
  }, 120_000);
});
