import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, it } from 'vitest';
import { runPipeline } from '../../src/api/run-pipeline.js';
import { loadConfigFile } from '../../src/config/load.js';
import { Metrics } from '../../src/metrics/metrics.js';
import { machinePg15, slotStreaming, sourceAndTarget, testLogger, uniqueName, waitFor } from '../helpers/postgres.js';

const SLOT = uniqueName('syncline_lagstall');

/**
 * Acceptance pass 5: sync_stream_consumer_lag was measured only between batches. While a
 * batch waited on the sink (here a lock on the target table, as a long migration or an outage
 * retried for as long as it lasts), it kept the value from before the stall (150 records for
 * 20 s under load, then 13,270 at once when the lock went), so the one metric that counts the
 * records piling up behind apply read flat exactly while they piled up.
 */
describe('sync_stream_consumer_lag while apply waits on the sink', () => {
  let dir: string;
  let source: pg.Client;
  let target: pg.Client;
  let locker: pg.Client;
  let urls: { sourceUrl: string; targetUrl: string };

  beforeAll(async () => {
    const server = await machinePg15();
    dir = await mkdtemp(path.join(os.tmpdir(), 'syncline-lagstall-'));
    const pair = await sourceAndTarget(server, 'syncline_lagstall');
    ({ source, target } = pair);
    urls = pair;
    locker = new pg.Client({ connectionString: urls.targetUrl });
    await locker.connect();
    for (const c of [source, target]) await c.query('CREATE TABLE t (id integer PRIMARY KEY, v text)');
  }, 60_000);

  afterAll(async () => {
    await source?.query('SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1 AND NOT active', [SLOT]).catch(() => undefined);
    await source?.end();
    await target?.end();
    await locker?.end();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('grows with the records behind a stalled batch', async () => {
    const file = path.join(dir, 'sync.yaml');
    await writeFile(
      file,
      `source:
  url: ${urls.sourceUrl}
  slots: [{ name: ${SLOT}, publication: syncline_lagstall_pub, tables: [t] }]
stream: { path: ${path.join(dir, 'stream')}, partitions: 1 }
consumer: { group_id: lagstall }
sink: { url: ${urls.targetUrl} }
monitoring: { enabled: false }
`,
    );
    const metrics = new Metrics();
    const lag = async (): Promise<number | undefined> => (await metrics.registry.getMetricsAsJSON()).find((m) => m.name === 'sync_stream_consumer_lag')?.values[0]?.value;
    const ctl = new AbortController();
    const running = runPipeline(loadConfigFile(file), 'run', await testLogger(), ctl.signal, metrics);
    running.catch(() => undefined);
    try {
      await waitFor('a streaming slot', () => slotStreaming(source, SLOT), 60_000, 100);
      await source.query("INSERT INTO t VALUES (1, 'first')");
      await waitFor('the first row applied and the lag measured', async () => (await target.query('SELECT 1 FROM t')).rowCount === 1 && (await lag()) === 0, 30_000, 100);
      await locker.query('BEGIN');
      await locker.query('LOCK TABLE t IN ACCESS EXCLUSIVE MODE');
      // The first batch after the lock waits on it; the next 200 changes pile up behind it.
      await source.query("INSERT INTO t VALUES (2, 'stalls')");
      await new Promise((r) => setTimeout(r, 1000));
      for (let i = 3; i <= 202; i++) await source.query('INSERT INTO t VALUES ($1, $2)', [i, 'behind']);
      await waitFor('sync_stream_consumer_lag to count the records behind the stalled batch', async () => ((await lag()) ?? 0) >= 200, 20_000, 200);
      await locker.query('COMMIT');
      await waitFor('every row applied and the lag back to 0', async () => (await target.query('SELECT 1 FROM t')).rowCount === 202 && (await lag()) === 0, 30_000, 100);
    } finally {
      await locker.query('ROLLBACK').catch(() => undefined);
      ctl.abort();
      await running;
    }
  }, 120_000);
});
