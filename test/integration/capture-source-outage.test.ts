import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runPipeline } from '../../src/api/run-pipeline.js';
import { loadConfigFile } from '../../src/config/load.js';
import { Metrics } from '../../src/metrics/metrics.js';
import { machinePg15, sourceAndTarget, testLogger, uniqueName, waitFor } from '../helpers/postgres.js';
import { tcpProxy, type TcpProxy } from '../helpers/tcp-proxy.js';

/** The longest backoff wait: what capture waited after the source came back, before. */
const BACKOFF_MAX_MS = 30_000;
/** Well under BACKOFF_MAX_MS, generous for a loaded 2-core machine (measured: ~1-2 s). */
const RESUME_BOUND_MS = 10_000;

/**
 * A source outage long enough to reach the longest backoff wait (`retry.backoff_max_ms`)
 * ends, and capture resumes within seconds of the source's return instead of after the rest
 * of that wait: while the source does not answer, capture asks it again every second. The
 * shared PostgreSQL is never restarted: capture reaches it through a TCP proxy that the test
 * takes down (every connection cut, new ones refused) and up again.
 */
describe('capture resumes soon after a source outage that reached the longest backoff', () => {
  const prefix = 'syncline_capoutage';
  const slot = uniqueName(prefix);
  let dir: string;
  let source: pg.Client;
  let target: pg.Client;
  let proxy: TcpProxy;
  let configFile: string;

  beforeAll(async () => {
    const server = await machinePg15();
    dir = await mkdtemp(path.join(os.tmpdir(), 'syncline-capoutage-'));
    const pair = await sourceAndTarget(server, prefix);
    ({ source, target } = pair);
    for (const c of [source, target]) await c.query('CREATE TABLE t (id integer PRIMARY KEY, v integer NOT NULL)');
    proxy = await tcpProxy(Number(new URL(pair.sourceUrl).port || 5432));
    const viaProxy = new URL(pair.sourceUrl);
    viaProxy.hostname = '127.0.0.1';
    viaProxy.port = String(proxy.port);
    configFile = path.join(dir, 'sync.yaml');
    // Two attempts, then the longest wait: the outage gets there within a second.
    await writeFile(
      configFile,
      `source:
  url: ${viaProxy.toString()}
  slots: [{ name: ${slot}, publication: ${prefix}_pub, tables: [t] }]
stream: { path: ${path.join(dir, 'stream')}, partitions: 2 }
consumer: { group_id: capoutage, retry: { max_attempts: 2, backoff_base_ms: 100, backoff_max_ms: ${BACKOFF_MAX_MS} } }
sink: { url: ${pair.targetUrl} }
monitoring: { enabled: false }
`,
    );
  }, 60_000);

  afterAll(async () => {
    await source?.end();
    await target?.end();
    await proxy?.close();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('applies a change made during the outage within seconds of the source coming back', async () => {
    const metrics = new Metrics();
    const ctl = new AbortController();
    const running = runPipeline(loadConfigFile(configFile), 'run', await testLogger(), ctl.signal, metrics);
    let failure: unknown;
    running.catch((err: unknown) => (failure = err));
    const retried = async (): Promise<number> => (await metrics.registry.getSingleMetric('sync_events_retried_total')?.get())?.values[0]?.value ?? 0;
    const applied = async (id: number): Promise<boolean> => (await target.query('SELECT 1 FROM t WHERE id = $1', [id])).rows.length > 0;
    try {
      await source.query('INSERT INTO t VALUES (1, 1)');
      await waitFor('the first change applied', () => applied(1), 60_000, 50);

      await proxy.down();
      // Capture failed twice (the cut, then a refused connection): it is in the longest wait.
      await waitFor('capture to reach its longest backoff wait', async () => (await retried()) >= 2, 30_000, 50);
      await new Promise((r) => setTimeout(r, 3000));
      await source.query('INSERT INTO t VALUES (2, 2)'); // directly: only capture's way is down
      const before = await retried();

      await proxy.up();
      const back = Date.now();
      await waitFor('the change made during the outage applied', () => applied(2), BACKOFF_MAX_MS + 15_000, 50);
      const resumedMs = Date.now() - back;
      expect(resumedMs).toBeLessThan(RESUME_BOUND_MS);
      expect(await retried()).toBe(before); // started once more, and that start held
      expect(failure).toBeUndefined();
    } finally {
      ctl.abort();
      await running;
    }
  }, 120_000);
});
