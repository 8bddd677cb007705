import type { Clock } from '../core/clock.js';
import { errorMessage } from '../core/errors.js';
import type { Logger } from '../log/logger.js';
import type { StreamConsumer } from '../stream/stream.js';

/** With positions stored by the sink, the stream's group offsets are committed at most this often. */
const INTERVAL_MS = 1000;

/**
 * Commits apply's positions as the stream's group offsets, after the sink stored them: at
 * most one commit is in flight, so they land in order.
 *
 * A sink without stored positions resumes from these offsets: each batch's are committed and
 * awaited (`commit` returns once they are). With stored positions they only inform (`syncline
 * status`, the embedded stream's retention, a broker's own tools), so they are committed
 * without holding up the next batch and at most once a second, the newest positions merged:
 * on the embedded stream each commit is a file rewritten with two fsyncs, ~10 file operations,
 * which at a light load (a batch every 10 ms) cost ~10 % of a core (latency bench at 5k
 * changes/s: 46-52 % against 59 %). What a kill -9 loses of them is brought up to the sink's
 * positions at the next assignment (apply-start.ts).
 */
export class GroupOffsets {
  /** The commit in flight. */
  private inFlight: Promise<void> = Promise.resolve();
  /** Positions not yet committed, merged; null when none. */
  private pending: Map<number, bigint> | null = null;
  private timer: NodeJS.Timeout | null = null;
  private lastCommitAt = -Infinity;
  /** The consumer of the open session, null between sessions (pending positions wait for the next). */
  private consumer: StreamConsumer | null = null;

  constructor(
    private readonly sinkStoresPositions: boolean,
    private readonly clock: Clock,
    private readonly log: Logger,
  ) {}

  /** A consumer session opened: positions learnt while it opened (the sink's, on assignment) are committed to it. */
  opened(consumer: StreamConsumer): void {
    this.consumer = consumer;
    if (this.pending !== null) this.flush();
  }

  /** The session ends: what is pending is committed now; resolves once nothing is in flight, before the consumer is closed. */
  async closing(): Promise<void> {
    this.flush();
    this.consumer = null;
    await this.inFlight;
  }

  async commit(positions: Map<number, bigint>): Promise<void> {
    if (!this.sinkStoresPositions) {
      const consumer = this.consumer;
      if (consumer === null) return;
      await this.inFlight;
      this.inFlight = this.commitTo(consumer, positions);
      await this.inFlight;
      return;
    }
    if (this.pending === null) this.pending = new Map(positions);
    else for (const [p, o] of positions) this.pending.set(p, o);
    if (this.timer !== null) return;
    const wait = this.lastCommitAt + INTERVAL_MS - this.clock.now();
    if (wait <= 0) {
      this.flush();
      return;
    }
    this.timer = setTimeout(() => this.flush(), wait);
    this.timer.unref();
  }

  /** Commits the pending positions after the commit in flight. */
  private flush(): void {
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
    const consumer = this.consumer;
    if (consumer === null) return;
    const positions = this.pending;
    this.pending = null;
    if (positions === null) return;
    this.lastCommitAt = this.clock.now();
    this.inFlight = this.inFlight.then(() => this.commitTo(consumer, positions));
  }

  private commitTo(consumer: StreamConsumer, positions: Map<number, bigint>): Promise<void> {
    return consumer.commit(positions).catch((err: unknown) => this.log.warn({ err: errorMessage(err) }, 'stream offset commit failed (sink positions are authoritative)'));
  }
}
