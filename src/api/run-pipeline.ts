import type { SynclineConfig } from '../config/schema.js';
import type { Logger } from '../log/logger.js';
import { Metrics } from '../metrics/metrics.js';
import { Pipeline } from './create-pipeline.js';
import type { Role } from './monitoring.js';

export type { Role };

/**
 * Runs capture, apply, or both from a validated config until `signal` aborts (then drains
 * and resolves) or until a part fails (then stops the other part and rejects). Installs no
 * signal handlers: `syncline run|capture|apply` (cli/commands/run.ts) turns SIGTERM/SIGINT
 * into `signal`.
 */
export async function runPipeline(
  config: SynclineConfig,
  role: Role,
  log: Logger,
  signal?: AbortSignal,
  metrics = new Metrics(),
  /** `--from`: replay apply from this position instead of the sink's (see compose/replay-from.ts). */
  from?: string,
): Promise<void> {
  const pipeline = new Pipeline(config, { role, logger: log, metrics, ...(from !== undefined ? { from } : {}) });
  const onAbort = (): void => void pipeline.stop();
  if (signal?.aborted) onAbort();
  else signal?.addEventListener('abort', onAbort, { once: true });
  try {
    await pipeline.start();
    await pipeline.done;
  } finally {
    signal?.removeEventListener('abort', onAbort);
  }
}
