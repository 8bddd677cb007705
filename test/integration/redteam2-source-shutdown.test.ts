/**
 * Red team 2: the source's own shutdown while capture streams. `pg_ctl stop` (fast, its
 * default, as systemd and Debian's pg_ctlcluster use it) makes each walsender send the WAL up
 * to the shutdown checkpoint and wait until the client reports it flushed; capture reported
 * only its last commit or heartbeat (it cannot write a heartbeat into a server that is
 * shutting down), so the walsender waited for as long as capture ran: the source stayed in
 * "the database system is shutting down", refusing every connection (4 minutes in the red
 * team's run, until syncline was stopped). Capture now confirms the position of a keepalive
 * that finds it idle (nothing received but durable, outside any transaction), as it does a
 * heartbeat's.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { afterAll, describe, expect, it } from 'vitest';
import { runPipeline } from '../../src/api/run-pipeline.js';
import { loadConfigFile } from '../../src/config/load.js';
import { Metrics } from '../../src/metrics/metrics.js';
import { freshDatabase, machinePg15, secondPg15, slotStreaming, testLogger, uniqueName, waitFor } from '../helpers/postgres.js';

const closers: (() => Promise<void>)[] = [];
afterAll(async () => {
  for (const close of closers.reverse()) await close();
});

describe('red team 2: the source shuts down while capture streams (PostgreSQL 15)', () => {
  it('pg_ctl stop -m fast completes: capture lets the walsender finish', async () => {
    const server = await secondPg15();
    closers.push(() => server.stop());
    const sourceUrl = server.url('postgres');
    const targetUrl = await freshDatabase(await machinePg15(), 'rt2_shutdown_target');
    const source = new pg.Client({ connectionString: sourceUrl });
    await source.connect();
    const target = new pg.Client({ connectionString: targetUrl });
    await target.connect();
    closers.push(() => target.end());
    await source.query('CREATE TABLE t (id int PRIMARY KEY, v text)');
    await target.query('CREATE TABLE t (id int PRIMARY KEY, v text)');
    const dir = await mkdtemp(path.join(os.tmpdir(), 'rt2-shutdown-'));
    closers.push(() => rm(dir, { recursive: true, force: true }));
    const slot = uniqueName('rt2_shutdown');
    const configFile = path.join(dir, 'sync.yaml');
    await writeFile(
      configFile,
      `source:
  url: ${sourceUrl}
  heartbeat_interval_ms: 60000
  slots: [{ name: ${slot}, publication: rt2_shutdown_pub, tables: [t] }]
stream: { path: ${path.join(dir, 'stream')}, partitions: 2 }
consumer: { group_id: rt, retry: { backoff_base_ms: 100, backoff_max_ms: 1000 } }
sink: { url: ${targetUrl} }
monitoring: { enabled: false }
`,
    );
    const ctl = new AbortController();
    const running = runPipeline(loadConfigFile(configFile), 'run', await testLogger(), ctl.signal, new Metrics());
    running.catch(() => undefined);
    closers.push(async () => {
      ctl.abort();
      await running.catch(() => undefined);
    });
    await waitFor('slot streaming', () => slotStreaming(source, slot), 30_000);
    await source.query("INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, 100) g");
    await waitFor('rows applied', async () => Number((await target.query('SELECT count(*) AS n FROM t')).rows[0].n) === 100, 30_000);
    // WAL after the last change capture confirmed, that no change or heartbeat of this slot
    // follows (another database's writes; on a real server also autovacuum, the bgwriter's
    // standby snapshots, other applications): the walsender has sent it when the stop comes.
    await source.query('CREATE DATABASE other');
    const other = new pg.Client({ connectionString: server.url('other') });
    await other.connect();
    await other.query('CREATE TABLE x AS SELECT g FROM generate_series(1, 1000) g');
    await other.end();
    await source.end();
    await new Promise((r) => setTimeout(r, 1500));
    const started = Date.now();
    const stopped = await server.fastStop(20);
    expect({ stopped, seconds: Math.round((Date.now() - started) / 1000) }).toMatchObject({ stopped: true });
  }, 90_000);
});
