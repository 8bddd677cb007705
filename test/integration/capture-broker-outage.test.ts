import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runPipeline } from '../../src/api/run-pipeline.js';
import { parseConfig } from '../../src/config/load.js';
import { Metrics } from '../../src/metrics/metrics.js';
import { requireListening } from '../contract/broker-check.js';
import { machinePg15, sourceAndTarget, testLogger, uniqueName, waitFor } from '../helpers/postgres.js';
import { tcpProxy, type TcpProxy } from '../helpers/tcp-proxy.js';

/** The longest backoff wait: what capture waited after the broker came back, before. */
const BACKOFF_MAX_MS = 30_000;
/** Well under BACKOFF_MAX_MS, generous for a loaded 2-core machine. */
const RESUME_BOUND_MS = 12_000;

/**
 * A broker outage long enough to reach the longest backoff wait (`retry.backoff_max_ms`) ends,
 * and capture resumes within seconds of the broker's return instead of after the rest of that
 * wait: while the broker does not accept connections, capture asks again every second (as it
 * does for the source, capture-source-outage.test.ts), and a publish made while the client
 * reconnects waits for it instead of going into a buffer nats.js empties at the reconnect. The shared NATS server is never
 * restarted: capture reaches it through a TCP proxy that the test takes down and up again;
 * apply, a process of its own, reaches it directly.
 */
describe('capture resumes soon after a broker outage that reached the longest backoff', () => {
  const prefix = 'syncline_brkoutage';
  const slot = uniqueName(prefix);
  const topic = `${prefix}_${process.pid}_${Date.now().toString(36)}`;
  let dir: string;
  let source: pg.Client;
  let target: pg.Client;
  let proxy: TcpProxy;
  let sourceUrl: string;
  let targetUrl: string;

  beforeAll(async () => {
    await requireListening('127.0.0.1', 4222, 'this test needs NATS JetStream on 127.0.0.1:4222');
    const server = await machinePg15();
    dir = await mkdtemp(path.join(os.tmpdir(), 'syncline-brkoutage-'));
    const pair = await sourceAndTarget(server, prefix);
    ({ source, target, sourceUrl, targetUrl } = pair);
    for (const c of [source, target]) await c.query('CREATE TABLE t (id integer PRIMARY KEY, v integer NOT NULL)');
    proxy = await tcpProxy(4222);
  }, 60_000);

  afterAll(async () => {
    await source?.end();
    await target?.end();
    await proxy?.close();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  /** Capture reaches NATS through the proxy, apply directly. Two attempts, then the longest wait. */
  const config = (natsPort: number) =>
    parseConfig(
      `source:
  url: ${sourceUrl}
  slots: [{ name: ${slot}, publication: ${prefix}_pub, tables: [t] }]
stream: { broker: nats, url: 'nats://127.0.0.1:${natsPort}', topic: ${topic}, partitions: 2 }
consumer: { group_id: brkoutage, retry: { max_attempts: 2, backoff_base_ms: 100, backoff_max_ms: ${BACKOFF_MAX_MS} } }
sink: { url: ${targetUrl} }
monitoring: { enabled: false }
`,
      {},
    );

  it('applies a change made during the outage within seconds of the broker coming back', async () => {
    const metrics = new Metrics();
    const ctl = new AbortController();
    const log = await testLogger();
    const capture = runPipeline(config(proxy.port), 'capture', log, ctl.signal, metrics);
    const apply = runPipeline(config(4222), 'apply', log, ctl.signal, new Metrics());
    const failures: unknown[] = [];
    capture.catch((err: unknown) => failures.push(err));
    apply.catch((err: unknown) => failures.push(err));
    const retried = async (): Promise<number> => (await metrics.registry.getSingleMetric('sync_events_retried_total')?.get())?.values[0]?.value ?? 0;
    const applied = async (id: number): Promise<boolean> => (await target.query('SELECT 1 FROM t WHERE id = $1', [id])).rows.length > 0;
    try {
      await source.query('INSERT INTO t VALUES (1, 1)');
      await waitFor('the first change applied', () => applied(1), 60_000, 50);

      await proxy.down();
      await source.query('INSERT INTO t VALUES (2, 2)');
      // Capture failed twice (each publish waits up to 30 s for the connection, then fails): it
      // is in the longest wait.
      await waitFor('capture to reach its longest backoff wait', async () => (await retried()) >= 2, 100_000, 50);
      await new Promise((r) => setTimeout(r, 3000));
      const before = await retried();

      await proxy.up();
      const back = Date.now();
      await waitFor('the change made during the outage applied', () => applied(2), BACKOFF_MAX_MS + 20_000, 50);
      const resumedMs = Date.now() - back;
      expect(resumedMs).toBeLessThan(RESUME_BOUND_MS);
      expect(await retried()).toBe(before); // started once more, and that start held
      expect(failures).toEqual([]);
    } finally {
      ctl.abort();
      await Promise.allSettled([capture, apply]);
    }
  }, 200_000);
});
