import pg from 'pg';
import type { SynclineConfig } from '../config/schema.js';
import { systemClock } from '../core/clock.js';
import { errorMessage, isRetriable } from '../core/errors.js';
import { backoffDelay } from '../core/retry.js';
import { isRetriablePgError } from '../core/sqlstate.js';
import { createDashboard } from '../dashboard/routes.js';
import type { Logger } from '../log/logger.js';
import { Metrics } from '../metrics/metrics.js';
import { startMetricsServer, type MetricsServer } from '../metrics/server.js';
import { DEFAULT_CHECK_TIMEOUT_MS, lagCheck, readinessProbe, timed, type ReadinessCheck, type ReadinessReport } from '../monitoring/readiness.js';
import type { Stream } from '../stream/stream.js';
import { readVerifyResults } from '../verify/verify-results.js';
import { openDeadLetterQueue, openSink, openStream, runApply, runCapture, sourceConnection } from './wiring.js';

export type Role = 'run' | 'capture' | 'apply';

/**
 * Runs capture, apply, or both until SIGTERM/SIGINT (then drains and resolves) or until a
 * part fails (then stops the other part and rejects).
 */
export async function runPipeline(
  config: SynclineConfig,
  role: Role,
  log: Logger,
  external?: AbortSignal,
  metrics = new Metrics(),
  /** `--from`: replay apply from this position instead of the sink's (see replay-from.ts). */
  from?: string,
): Promise<void> {
  let server: MetricsServer | undefined;
  // Readiness may be asked before the stream is open.
  const opened: { stream?: Stream } = {};
  if (config.monitoring.enabled) {
    server = await startMonitoring(config, role, metrics, log, pipelineReadiness(config, role, metrics, () => opened.stream));
  }
  const stop = new AbortController();
  const onSignal = (sig: string): void => {
    log.info({ signal: sig }, 'stopping: draining in-flight work');
    stop.abort();
  };
  const sigterm = (): void => onSignal('SIGTERM');
  const sigint = (): void => onSignal('SIGINT');
  process.once('SIGTERM', sigterm);
  process.once('SIGINT', sigint);
  external?.addEventListener('abort', () => stop.abort(), { once: true });
  let stream: Stream | undefined;
  try {
    stream = await openStream(config);
    opened.stream = stream;
    const parts: Promise<void>[] = [];
    const guard = (p: Promise<void>, name: string): Promise<void> =>
      p.catch((err: unknown) => {
        log.error({ err: errorMessage(err) }, `${name} failed`);
        stop.abort();
        throw err;
      });
    const s = stream;
    if (role !== 'apply') parts.push(guard(captureWithRestarts(config, s, metrics, log, stop.signal), 'capture'));
    if (role !== 'capture') parts.push(guard(runApply(config, s, metrics, log, stop.signal, from), 'apply'));
    const results = await Promise.allSettled(parts);
    const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed) throw failed.reason;
  } finally {
    process.off('SIGTERM', sigterm);
    process.off('SIGINT', sigint);
    await stream?.close();
    await server?.close();
  }
}

/** A capture session that ran this long before failing starts the backoff afresh. */
const CAPTURE_HEALTHY_MS = 60_000;

/**
 * Capture, started again after a failure that may pass (the broker or the source restarting,
 * a dropped connection) once it has streamed, with jittered backoff from `consumer.retry`. Nothing is lost by a
 * restart: the slot resumes from the position confirmed after the stream stored the changes,
 * and what is published twice is stale at the sink. Other failures (a missing publication,
 * wal_level) end the process with their fix.
 */
async function captureWithRestarts(config: SynclineConfig, stream: Stream, metrics: Metrics, log: Logger, signal: AbortSignal): Promise<void> {
  const r = config.consumer.retry;
  const policy = { maxAttempts: r.max_attempts, baseMs: Math.max(r.backoff_base_ms, 100), maxMs: Math.max(r.backoff_max_ms, 1000), jitter: r.jitter };
  // Until capture has streamed once, a failure (an unreachable source, a wrong password) is
  // reported and ends the process: it is a setup problem, not something that passes.
  let streamed = false;
  for (let attempt = 1; ; attempt++) {
    const started = systemClock.now();
    try {
      await runCapture(config, stream, metrics, log, signal, () => (streamed = true));
      return;
    } catch (err) {
      if (signal.aborted || !streamed || !(isRetriable(err) || isRetriablePgError(err))) throw err;
      if (systemClock.now() - started >= CAPTURE_HEALTHY_MS) attempt = 1;
      const delayMs = Math.max(backoffDelay(policy, attempt), 100);
      metrics.retried.inc();
      log.warn({ err: errorMessage(err), attempt, delayMs }, 'capture failed; starting it again (nothing unpublished was confirmed to the source)');
      await systemClock.sleep(delayMs, signal);
      if (signal.aborted) return;
    }
  }
}

/**
 * Serves `/metrics`, the health endpoints and the web dashboard. The dashboard gets its own
 * dead-letter queue handle and, for run and apply, its own sink for replays (pools that
 * connect only when used); closing the returned server stops and closes all of them.
 */
async function startMonitoring(config: SynclineConfig, role: Role, metrics: Metrics, log: Logger, readiness: () => Promise<ReadinessReport>): Promise<MetricsServer> {
  const open = <T>(what: string, fn: () => T): T | undefined => {
    try {
      return fn();
    } catch (err) {
      log.warn({ err: errorMessage(err) }, `dashboard: ${what} unavailable`);
      return undefined;
    }
  };
  const deadLetters = open('dead-letter queue', () => openDeadLetterQueue(config));
  const sink = role === 'capture' ? undefined : open('replay through the sink', () => openSink(config));
  const token = config.monitoring.dashboard_token;
  const dashboard = createDashboard({ metrics, deadLetters, sink, group: config.consumer.group_id, token, log, host: config.monitoring.host });
  const stopDrift = role === 'capture' ? undefined : reportDrift(config, metrics, log);
  const release = async (): Promise<void> => {
    await stopDrift?.();
    await dashboard.close();
    await deadLetters?.close().catch(() => undefined);
    await sink?.close().catch(() => undefined);
  };
  let server: MetricsServer;
  try {
    server = await startMetricsServer(metrics, config.monitoring.host, config.monitoring.port, readiness, { dashboard });
  } catch (err) {
    await release();
    throw err;
  }
  log.info({ url: `${server.url}/metrics`, dashboard: `${server.url}/`, actions: token ? 'enabled' : 'disabled (no monitoring.dashboard_token)' }, 'metrics and dashboard served');
  return {
    url: server.url,
    close: async () => {
      await server.close();
      await release();
    },
  };
}

/**
 * `sync_drift_rows{table}`: what the last `syncline verify` recorded in the postgres sink's
 * database (verify-results.ts), re-read every 5 s. Returns the stopper; undefined for other sinks.
 */
function reportDrift(config: SynclineConfig, metrics: Metrics, log: Logger): (() => Promise<void>) | undefined {
  const url = config.sink.url;
  if (config.sink.type !== 'postgres' || !url) return undefined;
  const pool = new pg.Pool({ connectionString: url, max: 1 });
  pool.on('error', () => undefined);
  const read = async (): Promise<void> => {
    try {
      for (const r of await readVerifyResults(pool, config.sink.state_schema)) metrics.driftRows.set({ table: r.table }, r.differing);
    } catch (err) {
      log.debug({ err: errorMessage(err) }, 'could not read the last verify results');
    }
  };
  void read();
  const timer = setInterval(() => void read(), 5_000);
  return async () => {
    clearInterval(timer);
    await pool.end().catch(() => undefined);
  };
}

/**
 * The `/readyz` checks of a pipeline role, each bounded by 2 s: `source` (a `SELECT 1` on a
 * short-lived connection; run and capture), `stream` (end offsets answer; every role),
 * `sink` (a `SELECT 1` on sink.url; run and apply) and `lag` (max `sync_lag_seconds` below
 * `monitoring.alerts.lag_critical`; run and apply).
 */
export function pipelineReadiness(config: SynclineConfig, role: Role, metrics: Metrics, stream: () => Stream | undefined): () => Promise<ReadinessReport> {
  const checks: Record<string, ReadinessCheck> = {};
  const timeoutMs = DEFAULT_CHECK_TIMEOUT_MS;
  if (role !== 'apply') checks.source = timed('SELECT 1', () => pingPostgres(sourceConnection(config), timeoutMs));
  checks.stream = async () => {
    const s = stream();
    if (!s) throw new Error('stream not opened yet');
    const ends = await s.endOffsets();
    return `${config.stream.broker} stream answered end offsets of ${ends.size} partitions`;
  };
  if (role !== 'capture') {
    const sinkUrl = config.sink.url;
    checks.sink =
      config.sink.type === 'postgres' && sinkUrl
        ? timed('SELECT 1', () => pingPostgres({ connectionString: sinkUrl }, timeoutMs))
        : sinkUrl
          ? // Other sinks: open a fresh one and run its (idempotent) prepare, which connects.
            timed(`${config.sink.type} prepare`, async () => {
              const probe = openSink(config);
              try {
                await probe.prepare();
              } finally {
                await probe.close().catch(() => undefined);
              }
            })
          : () => Promise.reject(new Error(`sink.type ${config.sink.type} has no sink.url`));
    checks.lag = lagCheck(metrics, config.monitoring.alerts.lag_critical);
  }
  return readinessProbe(checks, timeoutMs);
}

async function pingPostgres(connection: pg.ClientConfig, timeoutMs: number): Promise<void> {
  const client = new pg.Client({ ...connection, connectionTimeoutMillis: timeoutMs, query_timeout: timeoutMs });
  client.on('error', () => undefined);
  try {
    await client.connect();
    await client.query('SELECT 1');
  } finally {
    await client.end().catch(() => undefined);
  }
}
