import type { SynclineConfig } from '../config/schema.js';
import type { Logger } from '../log/logger.js';
import { Metrics } from '../metrics/metrics.js';
import { Pipeline } from '../api/create-pipeline.js';
import type { Role } from '../api/monitoring.js';

// The readiness checks, monitoring and capture restarts live with createPipeline (src/api/).
export { pipelineReadiness, type Role } from '../api/monitoring.js';

/**
 * Runs capture, apply, or both until SIGTERM/SIGINT (then drains and resolves) or until a
 * part fails (then stops the other part and rejects). The CLI's shell over createPipeline:
 * this is where the signal handlers are.
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
  const pipeline = new Pipeline(config, { role, logger: log, metrics, ...(from !== undefined ? { from } : {}) });
  const onSignal = (sig: string): void => {
    log.info({ signal: sig }, 'stopping: draining in-flight work');
    void pipeline.stop();
  };
  const sigterm = (): void => onSignal('SIGTERM');
  const sigint = (): void => onSignal('SIGINT');
  process.once('SIGTERM', sigterm);
  process.once('SIGINT', sigint);
  const onAbort = (): void => void pipeline.stop();
  if (external?.aborted) onAbort();
  else external?.addEventListener('abort', onAbort, { once: true });
  try {
    await pipeline.start();
    await pipeline.done;
  } finally {
    process.off('SIGTERM', sigterm);
    process.off('SIGINT', sigint);
    external?.removeEventListener('abort', onAbort);
  }
}
