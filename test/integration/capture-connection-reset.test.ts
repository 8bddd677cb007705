import net from 'node:net';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runPipeline } from '../../src/api/run-pipeline.js';
import { loadConfigFile } from '../../src/config/load.js';
import { Metrics } from '../../src/metrics/metrics.js';
import { machinePg15, slotStreaming, sourceAndTarget, testLogger, uniqueName, waitFor } from '../helpers/postgres.js';

const SLOT = uniqueName('syncline_connreset');

/** A TCP proxy to `port` whose reset() ends every connection with a RST: the client reads ECONNRESET. */
async function resettingProxy(port: number): Promise<{ port: number; reset(): void; close(): Promise<void> }> {
  const clients = new Set<net.Socket>();
  const server = net.createServer((client) => {
    const upstream = net.connect(port, '127.0.0.1');
    clients.add(client);
    client.on('close', () => {
      clients.delete(client);
      upstream.destroy();
    });
    client.on('error', () => upstream.destroy());
    upstream.on('error', () => client.destroy());
    client.pipe(upstream).pipe(client);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as net.AddressInfo).port,
    reset: () => {
      for (const c of clients) c.resetAndDestroy();
    },
    close: async () => {
      for (const c of clients) c.destroy();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}

/**
 * Acceptance pass 5: a replication connection reset (ECONNRESET: a NAT or proxy timing it out,
 * the source host going away with a RST; seen here when a walsender was ended while capture's
 * process was paused) ended capture, and `syncline capture` with it ("replication from slot …
 * failed: read ECONNRESET", exit 1), where a walsender terminated or a connection ended
 * otherwise restarts capture inside the process. ECONNRESET, EPIPE and ETIMEDOUT now restart it
 * too (classifyPgError's socket errors).
 */
describe('a replication connection reset by the network', () => {
  let dir: string;
  let source: pg.Client;
  let target: pg.Client;
  let proxy: Awaited<ReturnType<typeof resettingProxy>>;
  let urls: { sourceUrl: string; targetUrl: string };

  beforeAll(async () => {
    const server = await machinePg15();
    dir = await mkdtemp(path.join(os.tmpdir(), 'syncline-connreset-'));
    const pair = await sourceAndTarget(server, 'syncline_connreset');
    ({ source, target } = pair);
    urls = pair;
    proxy = await resettingProxy(Number(new URL(urls.sourceUrl).port || 5432));
    for (const c of [source, target]) await c.query('CREATE TABLE t (id integer PRIMARY KEY, v text)');
  }, 60_000);

  afterAll(async () => {
    await source?.query('SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1 AND NOT active', [SLOT]).catch(() => undefined);
    await source?.end();
    await target?.end();
    await proxy?.close();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('restarts capture, which resumes from the slot', async () => {
    const viaProxy = new URL(urls.sourceUrl);
    viaProxy.port = String(proxy.port);
    const file = path.join(dir, 'sync.yaml');
    await writeFile(
      file,
      `source:
  url: ${viaProxy.toString()}
  slots: [{ name: ${SLOT}, publication: syncline_connreset_pub, tables: [t] }]
stream: { path: ${path.join(dir, 'stream')}, partitions: 1 }
consumer: { group_id: connreset, retry: { backoff_base_ms: 200, backoff_max_ms: 1000 } }
sink: { url: ${urls.targetUrl} }
monitoring: { enabled: false }
`,
    );
    const ctl = new AbortController();
    const running = runPipeline(loadConfigFile(file), 'run', await testLogger(), ctl.signal, new Metrics());
    let failure: unknown;
    running.catch((err: unknown) => {
      failure = err;
    });
    const count = async (): Promise<number> => (await target.query<{ n: number }>('SELECT count(*)::int AS n FROM t')).rows[0]?.n ?? -1;
    try {
      await waitFor('a streaming slot', () => slotStreaming(source, SLOT), 60_000, 100);
      await source.query("INSERT INTO t VALUES (1, 'before')");
      await waitFor('the first row', async () => (await count()) === 1, 30_000, 100);
      proxy.reset();
      await source.query("INSERT INTO t VALUES (2, 'after the reset')");
      await waitFor('the row written after the reset', async () => failure !== undefined || (await count()) === 2, 30_000, 100);
      expect(failure).toBeUndefined();
      expect(await count()).toBe(2);
    } finally {
      ctl.abort();
      await running.catch(() => undefined);
    }
  }, 120_000);
});
