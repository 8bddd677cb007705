import type { Lsn } from '../core/lsn.js';

/**
 * The source's WAL position now, as text (null when unknown). A standby (logical decoding on
 * a standby, PostgreSQL 16+) has no current WAL position of its own: its replay position.
 */
export const WAL_POSITION_SQL = 'SELECT (CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END)::text AS lsn';

/** At most this many samples are kept; beyond it every other old one is dropped (coarser, bounded). */
const MAX_SAMPLES = 100_000;

/**
 * When the source wrote its WAL, from samples of its WAL position over time (the way
 * PostgreSQL's own replication lag columns are computed): `sync_capture_lag_seconds`.
 *
 * Capture's lag in time cannot be read from the changes it has seen: after a restart, or
 * while the walsender decodes gigabytes of WAL that hold nothing for the publication (another
 * database, a bulk load of an unpublished table), capture receives nothing, apply has nothing
 * to do, and every lag drawn from commit times reads 0 while the target falls behind. A
 * position the source's WAL passed at time t was written by t; so the first WAL capture has
 * not confirmed (just after position P) is at least `now - t` old, for the first sample t
 * whose position is beyond P. 0 when no sample is beyond P (caught up).
 */
export class WalClock {
  /** (time in ms, WAL position), ascending in both; only those beyond the confirmed position are kept. */
  private readonly times: number[] = [];
  private readonly positions: Lsn[] = [];
  private start = 0;
  /** Transactions received and not yet confirmed, per second of commit time: WAL up to `lsn` was written by `at`. */
  private readonly commits: Array<{ first: number; at: number; lsn: Lsn }> = [];
  private commitsStart = 0;

  /** The source's WAL was at `lsn` at `atMs`. */
  sample(atMs: number, lsn: Lsn): void {
    const last = this.positions[this.positions.length - 1];
    if (last !== undefined && lsn <= last) return; // no new WAL: the older sample says more
    this.times.push(atMs);
    this.positions.push(lsn);
    if (this.positions.length - this.start > MAX_SAMPLES) this.thin();
  }

  /**
   * A transaction capture received committed at `atMs` (the source's commit time) at `lsn`:
   * the WAL up to it was written by then. This dates WAL written while no capture ran (after
   * a kill -9, a restart) that no sample and no checkpoint since covers: the first sample at
   * the start put all of it at "now", and the lag of a backlog read 0 and then counted up
   * from the start. Transactions arrive in commit order and are confirmed in it; those
   * within a second of each other share one entry (dated by its newest: to the second).
   */
  commit(atMs: number, lsn: Lsn): void {
    if (!Number.isFinite(atMs)) return;
    const last = this.commits[this.commits.length - 1];
    if (last && lsn <= last.lsn) return;
    if (last && atMs - last.first < 1000) {
      last.lsn = lsn;
      last.at = Math.max(last.at, atMs);
      return;
    }
    this.commits.push({ first: atMs, at: atMs, lsn });
  }

  /**
   * Seconds since the source wrote the oldest WAL after `confirmed` (a lower bound, to the
   * sampling interval); 0 when the source's WAL was not seen beyond it.
   */
  ageSeconds(confirmed: Lsn, nowMs: number): number {
    // Samples at or below the confirmed position say nothing now (it only moves forward).
    while (this.start < this.positions.length && (this.positions[this.start] as Lsn) <= confirmed) this.start++;
    if (this.start > 1024 && this.start * 2 > this.positions.length) this.compact();
    while (this.commitsStart < this.commits.length && (this.commits[this.commitsStart] as { lsn: Lsn }).lsn <= confirmed) this.commitsStart++;
    if (this.commitsStart > 1024 && this.commitsStart * 2 > this.commits.length) {
      this.commits.splice(0, this.commitsStart);
      this.commitsStart = 0;
    }
    // Two lower bounds: the first sample beyond `confirmed`, the first transaction beyond it.
    let written = Number.POSITIVE_INFINITY;
    if (this.start < this.positions.length) written = this.times[this.start] as number;
    const commit = this.commits[this.commitsStart];
    if (commit) written = Math.min(written, commit.at);
    if (written === Number.POSITIVE_INFINITY) return 0;
    return Math.max(0, (nowMs - written) / 1000);
  }

  private compact(): void {
    this.times.splice(0, this.start);
    this.positions.splice(0, this.start);
    this.start = 0;
  }

  /** Keeps the newest half as it is and every other sample of the older half. */
  private thin(): void {
    this.compact();
    const half = Math.floor(this.positions.length / 2);
    let kept = 0;
    for (let i = 0; i < this.positions.length; i++) {
      // The first (oldest) sample is kept: it bounds the age of what follows the confirmed position.
      if (i < half && i % 2 === 1) continue;
      this.times[kept] = this.times[i] as number;
      this.positions[kept] = this.positions[i] as Lsn;
      kept++;
    }
    this.times.length = kept;
    this.positions.length = kept;
  }
}
