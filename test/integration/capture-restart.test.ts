import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runPipeline } from '../../src/api/run-pipeline.js';
import { loadConfigFile } from '../../src/config/load.js';
import { Metrics } from '../../src/metrics/metrics.js';
import { rowDiff } from '../helpers/compare-rows.js';
import { machinePg15, sourceAndTarget, testLogger, waitFor, uniqueName } from '../helpers/postgres.js';

/**
 * Capture survives what passes: its replication connection ended by the server (a source
 * restart, a failover, an administrator) makes it start again from the slot, with backoff,
 * instead of ending the process (found by the chaos harness restarting the broker).
 */
describe('capture starts again after its replication connection is terminated', () => {
  const prefix = 'syncline_caprestart';
  const slot = uniqueName(prefix);
  let dir: string;
  let source: pg.Client;
  let target: pg.Client;
  let configFile: string;

  beforeAll(async () => {
    const server = await machinePg15();
    dir = await mkdtemp(path.join(os.tmpdir(), 'syncline-caprestart-'));
    const pair = await sourceAndTarget(server, prefix);
    ({ source, target } = pair);
    for (const c of [source, target]) await c.query('CREATE TABLE t (id integer PRIMARY KEY, v integer NOT NULL)');
    configFile = path.join(dir, 'sync.yaml');
    await writeFile(
      configFile,
      `source:
  url: ${pair.sourceUrl}
  slots: [{ name: ${slot}, publication: ${prefix}_pub, tables: [t] }]
stream: { path: ${path.join(dir, 'stream')}, partitions: 2 }
consumer: { group_id: caprestart, retry: { backoff_base_ms: 100, backoff_max_ms: 500 } }
sink: { url: ${pair.targetUrl} }
monitoring: { enabled: false }
`,
    );
  }, 60_000);

  afterAll(async () => {
    await source?.end();
    await target?.end();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('keeps running and loses nothing across three terminations of its walsender', async () => {
    const metrics = new Metrics();
    const ctl = new AbortController();
    const running = runPipeline(loadConfigFile(configFile), 'run', await testLogger(), ctl.signal, metrics);
    let failure: unknown;
    running.catch((err: unknown) => (failure = err));
    // The walsender streaming the slot; a terminated one shows a moment longer: not that one.
    const streaming = async (): Promise<number | undefined> =>
      (await source.query<{ pid: number }>('SELECT s.active_pid AS pid FROM pg_replication_slots s JOIN pg_stat_replication r ON r.pid = s.active_pid WHERE s.slot_name = $1', [slot])).rows[0]?.pid;
    let terminated: number | undefined;
    try {
      for (let round = 1; round <= 3; round++) {
        await waitFor('a new walsender streaming', async () => ![undefined, terminated].includes(await streaming()), 30_000, 50);
        await source.query('INSERT INTO t SELECT g, g FROM generate_series($1::int * 1000 - 999, $1::int * 1000) g', [round]);
        const { rows } = await source.query<{ pid: number }>('SELECT active_pid AS pid, pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = $1 AND active_pid IS NOT NULL', [slot]);
        terminated = rows[0]?.pid;
        await source.query('UPDATE t SET v = -v WHERE id % 3 = 0');
      }
      await waitFor('target equals source', async () => {
        const d = await rowDiff(source, target, 't', 1);
        return d.missing.length === 0 && d.extra.length === 0;
      }, 60_000, 250);
      expect(failure).toBeUndefined();
      expect((await metrics.registry.getSingleMetric('sync_events_retried_total')?.get())?.values[0]?.value ?? 0).toBeGreaterThanOrEqual(3);
    } finally {
      ctl.abort();
      await running;
    }
  }, 120_000);
});
