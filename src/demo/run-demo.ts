import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { errorMessage } from '../core/errors.js';
import { locateBinaries, stageBinaries } from './binaries.js';
import { DemoError } from './errors.js';
import { DemoPostgres, serverUser } from './server.js';
import { createWorkdir, markKept, reapLeftovers, removeWorkdir, removeWorkdirSync } from './workdir.js';
import type { Logger } from '../log/logger.js';
import { Metrics } from '../metrics/metrics.js';
import { compareTable, type TableDrift } from '../verify/compare.js';
import { LoadGenerator } from './load-generator.js';
import { freePort, portIsFree } from './ports.js';
import { runPipeline } from '../api/run-pipeline.js';
import { DEMO_SLOT, DEMO_TABLES, demoConfig, metricsPortOf } from './demo-config.js';
import { DemoOutput } from './demo-output.js';

export interface DemoOptions {
  durationMs: number;
  /** Target rate of the load generator, changes per second. */
  rate: number;
  /** The `--metrics-port` flag, if given: it wins over the config file's `monitoring.port` (default 9464). */
  metricsPort?: number;
  keep: boolean;
  out: NodeJS.WriteStream;
  /** The YAML of `-c FILE` (see demo-config.ts), not validated yet. */
  config?: unknown;
  /** One JSON object per line instead of text. */
  json?: boolean;
}

const TABLES = DEMO_TABLES;

const DDL = `
  CREATE TABLE customers (
    id bigint PRIMARY KEY, name text NOT NULL, email varchar(120), balance numeric(14,2),
    tags text[], profile jsonb, updated_at timestamptz NOT NULL DEFAULT now());
  CREATE TABLE orders (
    id uuid PRIMARY KEY, customer_id bigint NOT NULL, amount numeric(12,2) NOT NULL,
    status text NOT NULL, quantity integer, weight double precision, placed_on date,
    note text, created_at timestamptz NOT NULL DEFAULT now());`;

const SIGNAL_EXIT: Record<string, number> = { SIGINT: 130, SIGTERM: 143 };

/**
 * `syncline demo`: everything on embedded defaults. Starts an embedded PostgreSQL 17 with a
 * source and a target database, runs the pipeline through the embedded stream while a load
 * generator writes mixed INSERT/UPDATE/DELETE transactions, shows progress, then compares
 * target with source row by row. Resolves true only if they are equal.
 *
 * Everything lives in one folder under the temp directory (see demo/workdir.ts), removed on
 * every way out: success, failure, SIGINT/SIGTERM (exit 130/143) and process exit; a run
 * killed with SIGKILL is cleaned up by the next one. As root the server runs as the
 * `postgres` OS user, which may not be able to enter the checkout: the binaries are then
 * hard-linked (or copied) into that folder, which it can reach.
 */
export async function runDemo(options: DemoOptions, log: Logger): Promise<boolean> {
  const out = new DemoOutput(options.out, !!options.json);
  // A bad setting in the user's file fails now, before a server starts (the places are the demo's own later).
  if (options.config !== undefined) demoConfig({ sourceUrl: 'postgres://127.0.0.1/demo_source', targetUrl: 'postgres://127.0.0.1/demo_target', dir: os.tmpdir(), metricsPort: 9464 }, options.config);
  for (const leftover of await reapLeftovers()) out.event('leftover_removed', { path: leftover }, `syncline demo: removed ${leftover}, left by an interrupted demo\n`);
  const user = await serverUser();
  const installed = await locateBinaries();
  const dir = await createWorkdir(user !== undefined).catch((err: unknown) => {
    throw new DemoError(`cannot create the demo folder in the temp directory (${errorMessage(err)})`, 'set TMPDIR to a writable directory every user can enter, e.g. TMPDIR=/tmp', err);
  });

  let server: DemoPostgres | undefined;
  const stop = new AbortController();
  let pipeline: Promise<void> | undefined;
  let cleaning: Promise<void> | undefined;
  const cleanup = (): Promise<void> =>
    (cleaning ??= (async () => {
      stop.abort();
      await Promise.race([pipeline?.catch(() => undefined), new Promise((r) => setTimeout(r, 15_000).unref())]);
      await server?.stop().catch(() => undefined);
      if (options.keep) await markKept(dir).catch(() => undefined);
      else await removeWorkdir(dir).catch(() => undefined);
    })());
  // Last resort when the process exits some other way: nothing asynchronous runs here.
  const onExit = (): void => {
    server?.stopNow();
    if (!options.keep) removeWorkdirSync(dir);
  };
  let signalled: NodeJS.Signals | undefined;
  let signalledAt = 0;
  const onSignal = (sig: NodeJS.Signals): void => {
    if (signalled) {
      // A second Ctrl-C: do not wait for the drain (onExit still stops the server and
      // removes the folder). One within 2 s is the same Ctrl-C again: the terminal sends it
      // to the process group and `npm run` forwards it too.
      if (Date.now() - signalledAt > 2000) process.exit(SIGNAL_EXIT[sig] ?? 1);
      return;
    }
    signalled = sig;
    signalledAt = Date.now();
    out.event('stopping', { signal: sig, dir, keep: options.keep }, `\nsyncline demo: ${sig}: stopping the pipeline and PostgreSQL${options.keep ? '' : `, removing ${dir}`}\n`);
    void cleanup().finally(() => process.exit(SIGNAL_EXIT[sig] ?? 1));
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  process.on('exit', onExit);
  try {
    return await demo();
  } catch (err) {
    if (signalled) {
      await cleanup();
      process.exit(SIGNAL_EXIT[signalled] ?? 1);
    }
    throw err;
  } finally {
    await cleanup();
    if (options.keep) out.event('kept', { dir }, `demo folder kept: ${dir}\n`);
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    process.off('exit', onExit);
  }

  async function demo(): Promise<boolean> {
    const binaries = user ? await stageBinaries(installed, path.join(dir, 'pg')) : installed;
    const port = await freePort();
    // The dashboard/metrics port: the requested one if it is free, else any free one.
    const requested = options.metricsPort ?? metricsPortOf(options.config) ?? 9464;
    const metricsPort = (await portIsFree(requested)) ? requested : await freePort();
    const pgdata = path.join(dir, 'pgdata');
    server = new DemoPostgres({
      binaries,
      dataDir: pgdata,
      port,
      password: 'demo',
      user,
      flags: ['-c', 'wal_level=logical', '-c', 'listen_addresses=127.0.0.1', '-c', `unix_socket_directories=${pgdata}`, '-c', 'fsync=on'],
      onLog: (m: string) => log.debug({ postgres: m }, 'embedded postgres'),
    });
    const pgServer = server;
    out.event(
      'starting',
      { postgres: `127.0.0.1:${port}`, os_user: user?.name ?? null, dir },
      `syncline demo: starting embedded PostgreSQL 17 on 127.0.0.1:${port}${user ? ` as OS user ${user.name}` : ''} (data in ${dir})\n`,
    );
    await pgServer.initialise();
    await pgServer.start();
    let pipelineError: unknown;
    const failed = (): unknown => pipelineError ?? (signalled ? new Error(`interrupted by ${signalled}`) : undefined);
    await pgServer.createDatabase('demo_source');
    await pgServer.createDatabase('demo_target');
    const url = (db: string): string => pgServer.url(db);
    const source = new pg.Client({ connectionString: url('demo_source') });
    const target = new pg.Client({ connectionString: url('demo_target') });
    // A server stopped under them (Ctrl-C) surfaces as a failed query, not an uncaught 'error'.
    source.on('error', () => undefined);
    target.on('error', () => undefined);
    await source.connect();
    await target.connect();
    try {
      await source.query(DDL);
      await target.query(DDL);

      const config = demoConfig({ sourceUrl: url('demo_source'), targetUrl: url('demo_target'), dir, metricsPort }, options.config);
      const metrics = new Metrics();
      pipeline = runPipeline(config, 'run', log, stop.signal, metrics);
      pipeline.catch((err: unknown) => {
        pipelineError = err;
      });
      const dashboard = `http://${config.monitoring.host}:${metricsPort}/`;
      out.event(
        'running',
        { stream: config.stream.broker, partitions: config.stream.partitions, dashboard, metrics: `${dashboard}metrics` },
        `pipeline running: capture -> ${config.stream.broker} stream (${config.stream.partitions} partitions) -> apply; dashboard at ${dashboard} (metrics at /metrics)\n`,
      );
      await waitForSlot(source, DEMO_SLOT, failed);

      const load = new LoadGenerator(source);
      const started = Date.now();
      const progress = setInterval(() => void showProgress(out, metrics, load, started), 500);
      try {
        await load.run(options.durationMs, options.rate, failed);
        out.event('load_finished', { changes: load.changes, transactions: load.transactions }, `\nload finished: ${load.changes} changes in ${load.transactions} transactions; waiting for apply to catch up\n`);
        const drift = await waitForConvergence(source, target, 60_000, failed);
        clearInterval(progress);
        await showProgress(out, metrics, load, started);
        const equal = drift.every((d) => d.differing === 0);
        const tables = drift.map((d) => ({ table: d.table, source_rows: d.sourceRows, target_rows: d.targetRows, differing: d.differing, missing: d.missing, extra: d.extra, different: d.different }));
        const lines = drift.map(
          (d) =>
            `  ${d.table}: source ${d.sourceRows} rows, target ${d.targetRows} rows, ${d.differing === 0 ? 'identical' : `${d.differing} differing`}\n` +
            (d.differing > 0 ? `    missing ${JSON.stringify(d.missing)} extra ${JSON.stringify(d.extra)} different ${JSON.stringify(d.different)}\n` : ''),
        );
        out.event('result', { target_equals_source: equal, tables }, `\n${lines.join('')}${equal ? 'RESULT: target equals source\n' : 'RESULT: DRIFT between source and target\n'}`);
        return equal;
      } finally {
        clearInterval(progress);
      }
    } finally {
      await source.end().catch(() => undefined);
      await target.end().catch(() => undefined);
    }
  }
}

async function showProgress(out: DemoOutput, metrics: Metrics, load: LoadGenerator, started: number): Promise<void> {
  const value = async (name: string): Promise<number> => {
    const m = await metrics.registry.getSingleMetric(name)?.get();
    return (m?.values ?? []).reduce((s, v) => (name === 'sync_lag_seconds' ? Math.max(s, v.value) : s + v.value), 0);
  };
  const [captured, consumed, applied, stale, lag] = await Promise.all([
    value('sync_events_captured_total'),
    value('sync_events_consumed_total'),
    value('sync_events_applied_total'),
    value('sync_events_stale_total'),
    value('sync_lag_seconds'),
  ]);
  const secs = ((Date.now() - started) / 1000).toFixed(1);
  out.progress(
    { seconds: Number(secs), written: load.changes, captured, consumed, applied, stale, lag_seconds: lag },
    `[${secs}s] written ${load.changes}  captured ${captured}  consumed ${consumed}  applied ${applied}  stale ${stale}  lag ${lag.toFixed(2)}s`,
  );
}

async function waitForSlot(db: pg.Client, slot: string, failed: () => unknown): Promise<void> {
  const deadline = Date.now() + 30_000;
  while (Date.now() < deadline) {
    if (failed()) throw failed();
    const { rows } = await db.query('SELECT active FROM pg_replication_slots WHERE slot_name = $1', [slot]);
    if (rows[0]?.active) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`replication slot ${slot} did not become active within 30 s`);
}

async function waitForConvergence(source: pg.Client, target: pg.Client, timeoutMs: number, failed: () => unknown): Promise<(TableDrift & { differing: number })[]> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (failed()) throw failed();
    const drift = await Promise.all(TABLES.map((t) => compareTable(source, target, { schema: 'public', table: t })));
    if (drift.every((d) => d.differing === 0)) {
      // The row counts are those of the comparison's first read, which the lag re-check may
      // have settled; once equal, a second comparison prints the counts as they are now.
      const settled = await Promise.all(TABLES.map((t) => compareTable(source, target, { schema: 'public', table: t })));
      return settled.every((d) => d.differing === 0) ? settled : drift;
    }
    if (Date.now() > deadline) return drift;
    await new Promise((r) => setTimeout(r, 500));
  }
}
