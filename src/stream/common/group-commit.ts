/**
 * Group commit, for producers whose every write has a fixed cost (a produce round trip, an
 * fdatasync): while one batch is being written, later publish calls queue up and the next
 * batch writes them all together, in call order. The first failed batch latches its error:
 * every publish queued or made after it is refused, so that none is stored after a gap.
 */
import type { SynclineError } from '../../core/errors.js';
import type { OutgoingRecord } from '../stream.js';
import { streamClosedError } from './errors.js';

interface PendingPublish {
  records: readonly OutgoingRecord[];
  resolve: () => void;
  reject: (err: unknown) => void;
}

export interface GroupCommitOptions {
  /** Names the adapter in error messages. */
  broker: string;
  /** Writes one batch: the records of each queued publish call, in call order. */
  write: (calls: readonly (readonly OutgoingRecord[])[]) => Promise<void>;
  /** The error a failed write latches (a batch's callers are rejected with it). */
  failed: (err: unknown) => SynclineError;
  /** Called after a batch was written and its callers resolved. */
  written?: () => void;
}

export class GroupCommit {
  private queue: PendingPublish[] = [];
  private draining: Promise<void> | null = null;
  /** Set by the first failed batch: later publishes are refused so none is stored after it. */
  private failure: SynclineError | null = null;
  private closed = false;

  constructor(private readonly opts: GroupCommitOptions) {}

  get isClosed(): boolean {
    return this.closed;
  }

  /** Why a publish is refused now (STREAM_CLOSED, or the latched failure), else null. */
  refusal(): SynclineError | null {
    return this.closed ? streamClosedError(this.opts.broker, 'producer') : this.failure;
  }

  /** Queues `records` (after refusal() said none) for the next batch; resolves once written. */
  enqueue(records: readonly OutgoingRecord[]): Promise<void> {
    // Copy the list (not the records): callers often reuse their batch array right away,
    // and this one is written only when its group commit starts.
    const copy = records.slice();
    return new Promise<void>((resolve, reject) => {
      this.queue.push({ records: copy, resolve, reject });
      this.draining ??= this.drain();
    });
  }

  /** Refuses further publishes; resolves once those accepted before have completed. */
  async close(): Promise<void> {
    this.closed = true;
    await this.draining;
  }

  private async drain(): Promise<void> {
    // Yield once so that publishes issued in the same tick join the first batch.
    await Promise.resolve();
    try {
      while (this.queue.length > 0) {
        const batch = this.queue;
        this.queue = [];
        try {
          if (this.failure !== null) throw this.failure;
          await this.opts.write(batch.map((p) => p.records));
        } catch (err) {
          this.failure ??= this.opts.failed(err);
          for (const p of batch) p.reject(this.failure);
          continue;
        }
        for (const p of batch) p.resolve();
        this.opts.written?.();
      }
    } finally {
      this.draining = null;
    }
  }
}
