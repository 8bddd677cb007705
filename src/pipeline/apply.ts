import type { ChangeEvent } from '../core/change.js';
import type { Clock } from '../core/clock.js';
import { errorMessage, isRetriable } from '../core/errors.js';
import { parseLsn } from '../core/lsn.js';
import { backoffDelay, type RetryPolicy } from '../core/retry.js';
import type { Logger } from '../log/logger.js';
import type { Metrics } from '../metrics/metrics.js';
import type { ApplyOutcome, Sink } from '../sink/sink.js';
import type { ConsumerOptions, StreamConsumer, StreamRecord } from '../stream/stream.js';
import { decodeChange } from './decode-change.js';

export interface ApplyOptions {
  group: string;
  batchSize: number;
  batchWaitMs: number;
  retry: RetryPolicy;
  clock: Clock;
}

/**
 * Apply: stream → sink. Each polled batch is applied in one sink transaction together with
 * the stream positions it reaches; the stream's own group offsets are committed after that,
 * for monitoring. On restart the sink's stored positions win, so a crash between the two
 * commits replays at most one batch, which the version gate turns into no-ops.
 */
export class Apply {
  private readonly tablesSeen = new Set<string>();

  private consumer!: StreamConsumer;

  constructor(
    private readonly openConsumer: (options: ConsumerOptions) => Promise<StreamConsumer>,
    private readonly sink: Sink,
    private readonly metrics: Metrics,
    private readonly log: Logger,
    private readonly options: ApplyOptions,
  ) {}

  async run(signal: AbortSignal): Promise<void> {
    await this.withRetry(() => this.sink.prepare(), signal, 'preparing the sink');
    if (signal.aborted) return;
    const group = this.options.group;
    const startPositions = async (partitions: readonly number[]): Promise<Map<number, bigint>> => {
      const stored = (await this.withRetry(() => this.sink.positions(group), signal, 'reading sink positions')) ?? new Map<number, bigint>();
      // A partition the sink never recorded was never applied: start at its beginning.
      const start = new Map(partitions.map((p) => [p, stored.get(p) ?? 0n]));
      this.log.info({ group, positions: Object.fromEntries([...start].map(([p, o]) => [p, o.toString()])) }, 'partitions assigned');
      return start;
    };
    this.consumer = await this.openConsumer(this.sink.storesPositions ? { startPositions } : {});
    try {
      while (!signal.aborted) {
        const records = await this.consumer.poll(this.options.batchSize, this.options.batchWaitMs);
        if (records.length === 0) {
          this.markCaughtUp();
          continue;
        }
        await this.applyBatch(records, signal);
      }
    } finally {
      await this.consumer.close();
    }
  }

  private async applyBatch(records: StreamRecord[], signal: AbortSignal): Promise<void> {
    const changes: ChangeEvent[] = [];
    const positions = new Map<number, bigint>();
    for (const r of records) {
      changes.push(decodeChange(r.value));
      const next = r.offset + 1n;
      if ((positions.get(r.partition) ?? -1n) < next) positions.set(r.partition, next);
    }
    this.metrics.consumed.inc(changes.length);
    const started = this.options.clock.now();
    const outcome = await this.withRetry(() => this.sink.apply(changes, positions, this.options.group), signal, 'applying a batch');
    if (!outcome) return; // stopping; the batch will be re-read from the stored positions
    this.metrics.applyBatchSeconds.observe((this.options.clock.now() - started) / 1000);
    this.record(changes, outcome);
    await this.consumer.commit(positions).catch((err: unknown) => this.log.warn({ err: errorMessage(err) }, 'stream offset commit failed (sink positions are authoritative)'));
  }

  private record(changes: ChangeEvent[], outcome: ApplyOutcome): void {
    for (const [table, counts] of outcome.byTable) {
      this.metrics.applied.inc({ table }, counts.applied);
      if (counts.stale > 0) this.metrics.stale.inc({ table }, counts.stale);
    }
    this.metrics.recordConsumed(changes.length, outcome.stale, this.options.clock.now());
    const now = this.options.clock.now();
    const newestByTable = new Map<string, number>();
    let newestLsn = '';
    for (const c of changes) {
      const table = `${c.schema}.${c.table}`;
      const ts = Date.parse(c.commit_ts);
      if ((newestByTable.get(table) ?? 0) < ts) newestByTable.set(table, ts);
      newestLsn = c.commit_lsn;
    }
    for (const [table, ts] of newestByTable) {
      this.tablesSeen.add(table);
      this.metrics.lagSeconds.set({ table }, Math.max(0, (now - ts) / 1000));
    }
    if (newestLsn) this.metrics.applyLsn.set(Number(parseLsn(newestLsn)));
  }

  private markCaughtUp(): void {
    for (const table of this.tablesSeen) this.metrics.lagSeconds.set({ table }, 0);
  }

  /**
   * Retries retriable failures with jittered exponential backoff. After `maxAttempts` it
   * keeps trying at the maximum delay (a sink outage must stall the pipeline, not drop
   * changes); permanent failures propagate. Returns undefined when stopped meanwhile.
   */
  private async withRetry<T>(fn: () => Promise<T>, signal: AbortSignal, what: string): Promise<T | undefined> {
    for (let attempt = 1; ; attempt++) {
      try {
        return await fn();
      } catch (err) {
        if (!isRetriable(err)) throw err;
        this.metrics.retried.inc();
        const policy = this.options.retry;
        const delay = attempt < policy.maxAttempts ? backoffDelay(policy, attempt) : policy.maxMs;
        this.log.warn({ attempt, delayMs: delay, err: errorMessage(err) }, `${what} failed; retrying`);
        await this.options.clock.sleep(delay, signal);
        if (signal.aborted) return undefined;
      }
    }
  }
}
