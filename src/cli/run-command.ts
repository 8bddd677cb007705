import type { SynclineConfig } from '../config/schema.js';
import { errorMessage } from '../core/errors.js';
import type { Logger } from '../log/logger.js';
import { Metrics } from '../metrics/metrics.js';
import { startMetricsServer, type MetricsServer } from '../metrics/server.js';
import { openStream, runApply, runCapture } from './wiring.js';

export type Role = 'run' | 'capture' | 'apply';

/**
 * Runs capture, apply, or both until SIGTERM/SIGINT (then drains and resolves) or until a
 * part fails (then stops the other part and rejects).
 */
export async function runPipeline(config: SynclineConfig, role: Role, log: Logger, external?: AbortSignal, metrics = new Metrics()): Promise<void> {
  let server: MetricsServer | undefined;
  if (config.monitoring.enabled) {
    server = await startMetricsServer(metrics, config.monitoring.host, config.monitoring.port);
    log.info({ url: `${server.url}/metrics` }, 'metrics served');
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
  const stream = await openStream(config);
  try {
    const parts: Promise<void>[] = [];
    const guard = (p: Promise<void>, name: string): Promise<void> =>
      p.catch((err: unknown) => {
        log.error({ err: errorMessage(err) }, `${name} failed`);
        stop.abort();
        throw err;
      });
    if (role !== 'apply') parts.push(guard(runCapture(config, stream, metrics, log, stop.signal), 'capture'));
    if (role !== 'capture') parts.push(guard(runApply(config, stream, metrics, log, stop.signal), 'apply'));
    const results = await Promise.allSettled(parts);
    const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed) throw failed.reason;
  } finally {
    process.off('SIGTERM', sigterm);
    process.off('SIGINT', sigint);
    await stream.close();
    await server?.close();
  }
}
