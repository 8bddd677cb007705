import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runPipeline } from '../../src/api/run-pipeline.js';
import { parseConfig } from '../../src/config/load.js';
import { Metrics } from '../../src/metrics/metrics.js';
import { startContinuousVerification } from '../../src/verify/continuous.js';
import { verifyTables } from '../../src/verify/session.js';
import { freePort, machinePg15, sourceAndTarget, testLogger, waitFor, uniqueName } from '../helpers/postgres.js';

const CONT_SLOT = uniqueName('syncline_verify14_cont');
const RUN_SLOT = uniqueName('syncline_verify14_run');

/** verify.interval: background passes set sync_drift_rows and sync_verify_last_success_timestamp. */
describe('continuous verification (PostgreSQL 15)', () => {
  let source: pg.Client;
  let target: pg.Client;
  let urls: { sourceUrl: string; targetUrl: string };

  beforeAll(async () => {
    const pair = await sourceAndTarget(await machinePg15(), 'syncline_verify14_cont');
    ({ source, target } = pair);
    urls = pair;
    for (const c of [source, target]) {
      await c.query('CREATE TABLE items (id int PRIMARY KEY, v text)');
      await c.query("INSERT INTO items SELECT i, 'v' || i FROM generate_series(1, 20000) i");
    }
  });

  afterAll(async () => {
    await source?.end();
    await target?.end();
  });

  it('exports the drift of each pass and the time of the last one, within the row rate', async () => {
    const config = parseConfig(`source:
  url: ${urls.sourceUrl}
  slots: [{ name: ${CONT_SLOT}, publication: p, tables: [items] }]
sink: { url: ${urls.targetUrl} }
verify: { interval: 300ms, max_rows_per_second: 40000 }
`);
    const metrics = new Metrics();
    const value = async (name: string): Promise<number> => (await metrics.registry.getSingleMetric(name)?.get())?.values[0]?.value ?? 0;
    const stop = startContinuousVerification(config, metrics, await testLogger(), { source: { connectionString: urls.sourceUrl }, openStream: () => Promise.reject(new Error('no stream')) });
    expect(stop).toBeDefined();
    try {
      const t0 = Date.now() / 1000;
      await waitFor('a first pass', async () => (await value('sync_verify_last_success_timestamp')) >= Math.floor(t0), 20_000, 100);
      // 20,000 rows at 40,000 rows/s: a pass takes about half a second, not less.
      expect(Date.now() / 1000 - t0).toBeGreaterThan(0.7);
      expect(await value('sync_drift_rows')).toBe(0);
      await target.query('DELETE FROM items WHERE id IN (3, 4)');
      await waitFor('the drift to show', async () => (await value('sync_drift_rows')) === 2, 20_000, 100);
      const rows = await target.query<{ differing: string }>('SELECT differing::text FROM syncline.verify_results WHERE table_name = $1', ['public.items']);
      expect(rows.rows[0]?.differing).toBe('2');
    } finally {
      await stop?.();
    }
  }, 60_000);
});

describe('verify.max_rows_per_second with a keyless table', () => {
  it('charges the re-reads of a differing keyless table to the rate, not just its first scan', async () => {
    const pair = await sourceAndTarget(await machinePg15(), 'syncline_verify14_bag_rate');
    try {
      for (const c of [pair.source, pair.target]) {
        await c.query('CREATE TABLE bag (v text)');
        await c.query("INSERT INTO bag SELECT 'v' || (i % 5000) FROM generate_series(1, 20000) i");
      }
      await pair.target.query("DELETE FROM bag WHERE ctid = (SELECT ctid FROM bag WHERE v = 'v7' LIMIT 1)");
      const t0 = Date.now();
      const [r] = await verifyTables([{ table: { schema: 'public', table: 'bag' } }], { source: { connectionString: pair.sourceUrl }, targetUrl: pair.targetUrl, parallelism: 1, maxRowsPerSecond: 50_000 });
      const seconds = (Date.now() - t0) / 1000;
      expect(r).toMatchObject({ sourceRows: 20000, targetRows: 19999, differing: 1, missing: ['["v7"]'] });
      // The bucket scan, the differing bucket's rows and one re-check round (the source twice,
      // the target once): 5 reads of 20,000 rows at 50,000 rows/s take 2 s; the first scan alone 0.4 s.
      expect(seconds).toBeGreaterThan(1.6);
    } finally {
      await pair.source.end();
      await pair.target.end();
    }
  }, 60_000);
});

describe('continuous verification inside syncline run', () => {
  it('a run process with verify.interval exports sync_verify_last_success_timestamp and sync_drift_rows on /metrics', async () => {
    const pair = await sourceAndTarget(await machinePg15(), 'syncline_verify14_run');
    const dir = await mkdtemp(path.join(os.tmpdir(), 'syncline-verify-run-'));
    for (const c of [pair.source, pair.target]) await c.query('CREATE TABLE items (id int PRIMARY KEY, v text)');
    await pair.source.query("INSERT INTO items SELECT i, 'v' || i FROM generate_series(1, 500) i");
    const port = await freePort();
    const config = parseConfig(`source:
  url: ${pair.sourceUrl}
  slots: [{ name: ${RUN_SLOT}, publication: syncline_verify14_run_pub, tables: [items] }]
stream: { path: ${path.join(dir, 'stream')} }
sink: { url: ${pair.targetUrl} }
verify: { interval: 500ms }
monitoring: { port: ${port} }
`);
    const ctl = new AbortController();
    const running = runPipeline(config, 'run', await testLogger(), ctl.signal);
    running.catch(() => undefined);
    try {
      const scrape = async (): Promise<string> => (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
      await waitFor('a verify pass exported', async () => /^sync_verify_last_success_timestamp [1-9]/m.test(await scrape().catch(() => '')), 60_000, 250);
      // A pass may run once the snapshot job is done but before apply wrote its rows (CI under
      // load: drift 500): the next pass after apply caught up says 0.
      await waitFor('a verify pass with no drift', async () => /^sync_drift_rows\{table="public\.items"\} 0$/m.test(await scrape().catch(() => '')), 60_000, 250, scrape);
    } finally {
      ctl.abort();
      await running.catch(() => undefined);
      await pair.source.end();
      await pair.target.end();
      await rm(dir, { recursive: true, force: true });
    }
  }, 90_000);
});
