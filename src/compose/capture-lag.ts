import type { Lsn } from '../core/lsn.js';
import type { Metrics } from '../metrics/metrics.js';
import { WalClock } from '../source/wal-clock.js';

/**
 * `sync_capture_lag_seconds` of one process, across capture's restarts: the WAL clock and the
 * position capture last confirmed outlive a failed capture session. While capture waits to
 * start again (the broker or the source away, the backoff of `consumer.retry`), the source's
 * WAL keeps being sampled where it answers, and the gauge keeps growing from what is known.
 * Before, the clock lived in one session and the gauge kept the value it had when capture
 * failed: a broker down for minutes under load read as the second it failed at.
 */
export class CaptureLag {
  private readonly clock = new WalClock();
  /** Capture's confirmed position: live while a session streams, its last value after. */
  private confirmed: () => Lsn | undefined = () => undefined;

  constructor(private readonly metrics: Metrics) {}

  /** The source's WAL was at `lsn` at `atMs`. */
  wal(atMs: number, lsn: Lsn): void {
    this.clock.sample(atMs, lsn);
    this.update(atMs);
  }

  /** A transaction capture received committed at `atMs` at `lsn` (see WalClock.commit). */
  commit(atMs: number, lsn: Lsn): void {
    this.clock.commit(atMs, lsn);
  }

  /** A capture session streams; `confirmed` reads what it confirmed to the source. */
  follow(confirmed: () => Lsn): void {
    this.confirmed = confirmed;
  }

  /** The session ended: its last confirmed position stands until the next one streams. */
  stopped(): void {
    const last = this.confirmed();
    this.confirmed = () => last;
  }

  /** Another capture leads the slot: this process measures nothing (the gauge is withdrawn). */
  standby(): void {
    this.confirmed = () => undefined;
    this.metrics.clearCaptureLag();
  }

  /** Sets the gauge for `nowMs` from what is known (nothing before a session confirmed a position). */
  update(nowMs: number): void {
    const confirmed = this.confirmed();
    if (confirmed !== undefined) this.metrics.setCaptureLag(this.clock.ageSeconds(confirmed, nowMs));
  }
}
