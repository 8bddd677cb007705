import type { Lsn } from '../core/lsn.js';

/** One published batch, as the checkpoint tracks it (opaque to callers). */
export interface InFlightBatch {
  /** Highest source position fully contained in this batch and all before it. */
  readonly position: Lsn | undefined;
  done: boolean;
  /** Called once this batch and every one before it are durable. */
  onDurable?: (() => void)[];
}

/**
 * Capture's no-loss rule, on its own: which source position may be confirmed to the slot.
 *
 * Batches are published in order, several at once, and the stream may acknowledge them in
 * any order. The confirmed position moves only over the prefix of batches that are all
 * durable, to the highest position that prefix covers: a batch still outstanding holds it
 * back even when later ones are stored, so the slot never passes a change the stream does
 * not hold, and a crash makes the server resend from there (the version gate absorbs the
 * repeats). Pure: no I/O, no timers.
 *
 * Invariant kept by `complete`: the oldest batch tracked is never done (done ones at the
 * front leave at once), so `outstanding` is 0 exactly when everything is durable.
 */
export class Checkpoint {
  private readonly inFlight: InFlightBatch[] = [];
  private position: Lsn;

  /** `start`: the slot's confirmed position when capture started. */
  constructor(start: Lsn) {
    this.position = start;
  }

  /** The position that may be confirmed to the source. Never decreases. */
  get confirmed(): Lsn {
    return this.position;
  }

  /** Batches published and not yet behind the confirmed position. */
  get outstanding(): number {
    return this.inFlight.length;
  }

  /** A batch is being published; `position` is what it and every batch before it complete. */
  begin(position: Lsn | undefined): InFlightBatch {
    const batch: InFlightBatch = { position, done: false };
    this.inFlight.push(batch);
    return batch;
  }

  /**
   * The stream stored `batch` durably. Advances the confirmed position over the done prefix
   * and calls the `whenDurable` waiters of that prefix; true when the position advanced.
   */
  complete(batch: InFlightBatch): boolean {
    batch.done = true;
    let advanced = false;
    while (this.inFlight.length > 0 && (this.inFlight[0] as InFlightBatch).done) {
      const b = this.inFlight.shift() as InFlightBatch;
      if (b.position !== undefined && b.position > this.position) {
        this.position = b.position;
        advanced = true;
      }
      for (const resolve of b.onDurable ?? []) resolve();
    }
    return advanced;
  }

  /** Resolves once every batch begun so far is durable. */
  whenDurable(): Promise<void> {
    const last = this.inFlight[this.inFlight.length - 1];
    if (!last) return Promise.resolve();
    return new Promise((resolve) => (last.onDurable ??= []).push(resolve));
  }
}
