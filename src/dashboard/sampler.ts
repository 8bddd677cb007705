import { errorMessage } from '../core/errors.js';
import type { DeadLetterQueue } from '../dlq/dead-letter-queue.js';
import type { Logger } from '../log/logger.js';
import type { Metrics } from '../metrics/metrics.js';
import type { StatusResponse, StatusSample } from './api.js';
import { readDepth, type DlqDepth } from './dlq-actions.js';
import { max, round, sum } from './metric-values.js';

/** Throughput is averaged over this many sample intervals. */
const THROUGHPUT_WINDOW = 5;

interface Totals {
  /** Unix milliseconds. */
  t: number;
  captured: number;
  applied: number;
}

export interface SamplerOptions {
  metrics: Metrics;
  deadLetters?: DeadLetterQueue | undefined;
  log?: Logger | undefined;
  intervalMs: number;
  maxSamples: number;
}

/**
 * Samples the metrics every `intervalMs` into a ring of the last `maxSamples` points, so
 * throughput is computed here from counter deltas rather than in every browser. Each tick
 * also reads the dead-letter queue's depth, which /api/status reports from here.
 */
export class Sampler {
  /** The history ring, oldest first. */
  readonly samples: StatusSample[] = [];
  private readonly totals: Totals[] = [];
  private readonly timer: NodeJS.Timeout;
  private sampling = false;
  private depth: DlqDepth | undefined;

  constructor(private readonly options: SamplerOptions) {
    this.timer = setInterval(() => void this.sample(), options.intervalMs);
    this.timer.unref();
    void this.sample();
  }

  /** Changes per second over the last THROUGHPUT_WINDOW intervals. */
  throughput(): StatusResponse['throughput'] {
    const first = this.totals[0];
    const last = this.totals[this.totals.length - 1];
    const span = first && last ? (last.t - first.t) / 1000 : 0;
    const perSecond = (k: 'captured' | 'applied'): number => (first && last && span > 0 ? round(Math.max(0, last[k] - first[k]) / span, 1) : 0);
    return { captured_per_s: perSecond('captured'), applied_per_s: perSecond('applied'), window_seconds: round(span, 1) };
  }

  /** The dead-letter queue's depth at the last tick (or action); undefined when unknown. */
  dlqDepth(): DlqDepth | undefined {
    return this.depth;
  }

  async refreshDepth(): Promise<void> {
    const dlq = this.options.deadLetters;
    if (dlq) this.depth = await readDepth(dlq);
  }

  stop(): void {
    clearInterval(this.timer);
  }

  /** Takes one point of history; skipped when the previous one has not finished. */
  private async sample(): Promise<void> {
    if (this.sampling) return;
    this.sampling = true;
    try {
      const { metrics } = this.options;
      const [captured, applied, lag] = await Promise.all([metrics.captured.get(), metrics.applied.get(), metrics.lagSeconds.get()]);
      const now = Date.now();
      const totals = { t: now, captured: sum(captured.values), applied: sum(applied.values) };
      const prev = this.totals[this.totals.length - 1];
      const dt = prev ? (now - prev.t) / 1000 : 0;
      push(this.totals, totals, THROUGHPUT_WINDOW + 1);
      push(
        this.samples,
        {
          t: now,
          lag_seconds: round(max(lag.values), 3),
          captured_per_s: prev && dt > 0 ? round(Math.max(0, totals.captured - prev.captured) / dt, 1) : 0,
          applied_per_s: prev && dt > 0 ? round(Math.max(0, totals.applied - prev.applied) / dt, 1) : 0,
        },
        this.options.maxSamples,
      );
      await this.refreshDepth();
    } catch (err) {
      this.options.log?.warn({ err: errorMessage(err) }, 'dashboard: sampling the metrics failed');
    } finally {
      this.sampling = false;
    }
  }
}

function push<T>(ring: T[], item: T, limit: number): void {
  ring.push(item);
  while (ring.length > limit) ring.shift();
}
