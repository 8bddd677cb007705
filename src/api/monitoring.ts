import pg from 'pg';
import type { SynclineConfig } from '../config/schema.js';
import { PrerequisiteError, errorMessage } from '../core/errors.js';
import { createDashboard } from '../dashboard/routes.js';
import type { Logger } from '../log/logger.js';
import type { Metrics } from '../metrics/metrics.js';
import { DEFAULT_CHECK_TIMEOUT_MS, lagCheck, readinessProbe, timed, type ReadinessCheck, type ReadinessReport } from '../http/readiness.js';
import { startHttpServer, type HttpServer } from '../http/server.js';
import type { Sink } from '../sink/sink.js';
import type { Stream } from '../stream/stream.js';
import { openDeadLetterQueue } from '../compose/dead-letters.js';
import { sourceConnection } from '../compose/source-connection.js';
import { openStream } from '../compose/stream.js';
import type { SchemaVersionReport } from '../ops/schemas.js';

/** Which parts a pipeline process runs: both, or capture or apply alone. */
export type Role = 'run' | 'capture' | 'apply';

/**
 * Serves `/metrics`, the health endpoints and the web dashboard. The dashboard gets its own
 * dead-letter queue handle and, for run and apply, its own sink for replays (pools that
 * connect only when used); closing the returned server stops and closes all of them.
 */
export async function startMonitoring(
  config: SynclineConfig,
  role: Role,
  metrics: Metrics,
  log: Logger,
  readiness: () => Promise<ReadinessReport>,
  /** The sink the dashboard replays through; default openSink(config). */
  replaySink?: () => Sink,
): Promise<HttpServer> {
  const customSink = replaySink !== undefined;
  const open = <T>(what: string, fn: () => T): T | undefined => {
    try {
      return fn();
    } catch (err) {
      log.warn({ err: errorMessage(err) }, `dashboard: ${what} unavailable`);
      return undefined;
    }
  };
  const deadLetters = open('dead-letter queue', () => openDeadLetterQueue(config));
  // Capture replays nothing and verifies nothing: it loads neither the sinks nor verify.
  const sink = role === 'capture' ? undefined : open('replay through the sink', replaySink ?? (await configuredSink(config)));
  const token = config.monitoring.dashboard_token;
  const schemaVersions = async (): Promise<SchemaVersionReport[]> => (await import('../ops/schemas.js')).collectSchemaVersions(config);
  const dashboard = createDashboard({ metrics, deadLetters, sink, group: config.consumer.group_id, transactional: config.sink.consistency === 'transactional', token, log, host: config.monitoring.host, schemaVersions });
  const stopDrift = role === 'capture' ? undefined : await reportDrift(config, metrics, log, customSink);
  const release = async (): Promise<void> => {
    await stopDrift?.();
    await dashboard.close();
    await deadLetters?.close().catch(() => undefined);
    await sink?.close().catch(() => undefined);
  };
  let server: HttpServer;
  try {
    server = await startHttpServer({ metrics, host: config.monitoring.host, port: config.monitoring.port, readiness, dashboard });
  } catch (err) {
    await release();
    if ((err as { code?: unknown }).code !== 'EADDRINUSE') throw err;
    // Typically a second process of the same config on this host (capture and apply apart, or two applies).
    throw new PrerequisiteError(
      `monitoring: ${config.monitoring.host}:${config.monitoring.port} is already in use (another syncline process of the same config on this host?)`,
      'give each process its own port: --metrics-port N on run, capture and apply, or monitoring.port: ${METRICS_PORT:-9464} in the config; monitoring.enabled: false serves none',
    );
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
 * Drift metrics of run/apply with a postgres, mysql or sqlite sink, and `verify.interval`'s background
 * verification (see startContinuousVerification). Returns the stopper; undefined for other
 * sinks and for a library caller's own sink.
 */
export async function reportDrift(config: SynclineConfig, metrics: Metrics, log: Logger, customSink = false): Promise<(() => Promise<void>) | undefined> {
  if (customSink) return undefined;
  const { startContinuousVerification } = await import('../verify/continuous.js');
  return startContinuousVerification(config, metrics, log, { source: sourceConnection(config), openStream: () => openStream(config) });
}

/**
 * The `/readyz` checks of a pipeline role, each bounded by 2 s: `source` (a `SELECT 1` on a
 * short-lived connection; run and capture), `stream` (end offsets answer; every role),
 * `sink` (a `SELECT 1` on sink.url; run and apply) and `lag` (max `sync_lag_seconds` below
 * `monitoring.alerts.lag_critical`; run and apply).
 */
export function pipelineReadiness(
  config: SynclineConfig,
  role: Role,
  metrics: Metrics,
  stream: () => Stream | undefined,
  /** A library caller's own sink (createPipeline's `sink`): reported, not probed. */
  customSink = false,
): () => Promise<ReadinessReport> {
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
    checks.sink = customSink
      ? async () => 'custom sink (not probed: apply retries it)'
      : config.sink.type === 'postgres' && sinkUrl
        ? timed('SELECT 1', () => pingPostgres({ connectionString: sinkUrl }, timeoutMs))
        : sinkUrl
          ? // Other sinks: open a fresh one and run its (idempotent) prepare, which connects.
            timed(`${config.sink.type} prepare`, async () => {
              const probe = (await import('../compose/sink.js')).openSink(config);
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

/** openSink(config), its module loaded now (the sinks' client libraries load with it). */
async function configuredSink(config: SynclineConfig): Promise<() => Sink> {
  const { openSink } = await import('../compose/sink.js');
  return () => openSink(config);
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
