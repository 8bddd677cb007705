import type { ChangeEvent } from '../core/change.js';
import type { Lsn } from '../core/lsn.js';
import type { CaptureSnapshots } from './capture-snapshots.js';

/** What waits for the keyless snapshots holding one of its tables (and reading with it). */
type Waiting =
  | { kind: 'transaction'; commitLsn: Lsn; tables: ReadonlySet<string>; changes: ChangeEvent[]; committed: (tables: ReadonlySet<string>) => void }
  | { kind: 'streamed'; commitLsn: Lsn }
  /** The open transaction grew past `maxOpen` before its commit (its tables still unknown). */
  | { kind: 'open'; commitLsn: Lsn };

/**
 * `sink.consistency: transactional`: no source transaction reaches the stream in parts.
 *
 * A keyless snapshot holds its table's changes committed after its cut until its rows are
 * out (see KeylessSnapshots). A transaction that changed that table and others (pgbench's:
 * accounts, tellers, branches, history) would go out in two parts: the rest now, the held
 * part behind the rows. Transactional apply would then hold it, and every transaction after
 * it, in memory until the rest came (a big table's snapshot takes minutes), and apply it
 * without the rest once `incomplete_transaction_ms` passed with nothing moving: torn.
 *
 * So while a keyless table is held, each transaction's changes are kept until its commit,
 * where its tables are known. One that changed no held table goes out as before; one that
 * did waits whole, and capture stops reading the slot behind it (the WAL waits at the source,
 * not in memory; nothing after it is confirmed) until no hold would take part of it. Apply
 * would have waited as long. A transaction streamed before its commit (large) is already on
 * disk, its tables unknown until replayed: its commit waits before the replay while a hold
 * may take part of it. Under `eventual` nothing waits here: each row's changes are in order
 * by themselves.
 *
 * A transaction that was not streamed (protocol 1, a high logical_decoding_work_mem) arrives
 * whole after its commit, however large; kept until its commit it all sat in memory (1M rows:
 * 1.6 GB of heap). So once `maxOpen` of its changes are kept and a hold may still take part
 * of it, reading stops there too, until none may.
 */
export class WholeTransactions {
  /** The open transaction's changes, kept until its commit (undefined: no hold at its begin). */
  private open: ChangeEvent[] | undefined;
  private openCommitLsn: Lsn = 0n;
  private waiting: Waiting | undefined;

  /** `maxOpen`: how many of the open transaction's changes are kept before reading stops (the publish window's worth). */
  constructor(
    private readonly snapshots: CaptureSnapshots,
    private readonly maxOpen: number,
  ) {}

  /** Something waits: reading stays stopped until `release` says otherwise. */
  get isWaiting(): boolean {
    return this.waiting !== undefined;
  }

  /** A transaction committed at `commitLsn` begins. */
  begin(commitLsn: Lsn): void {
    this.openCommitLsn = commitLsn;
    this.open = this.snapshots.heldTables.length > 0 ? [] : undefined;
  }

  /** A change of the open transaction, ready to go. True: it made the transaction wait (reading must stop). */
  route(e: ChangeEvent): boolean {
    const open = this.open;
    if (!open) {
      this.snapshots.route(e);
      return false;
    }
    open.push(e);
    if (open.length < this.maxOpen || this.waiting) return false;
    if (this.snapshots.mayHold(this.openCommitLsn)) {
      this.waiting = { kind: 'open', commitLsn: this.openCommitLsn };
      return true;
    }
    // No hold may take a part of it (it committed before every cut): it goes on as it comes.
    this.releaseOpen();
    return false;
  }

  private releaseOpen(): void {
    const open = this.open;
    this.open = undefined;
    if (open) for (const e of open) this.snapshots.route(e);
  }

  /**
   * The open transaction, which changed `tables`, committed; `committed(tables)` is what
   * follows its changes (its position). False: it waits, whole, and reading must stop.
   */
  commit(tables: ReadonlySet<string>, committed: (tables: ReadonlySet<string>) => void): boolean {
    const changes = this.open;
    this.open = undefined;
    if (changes && this.snapshots.mayHold(this.openCommitLsn, tables)) {
      this.waiting = { kind: 'transaction', commitLsn: this.openCommitLsn, tables: new Set(tables), changes, committed };
      return false;
    }
    // (Its last change may have made it wait as too large: its tables are known now.)
    this.waiting = undefined;
    if (changes) for (const e of changes) this.snapshots.route(e);
    committed(tables);
    return true;
  }

  /** A transaction streamed before its commit commits at `commitLsn`: false when its replay must wait. */
  streamedCommit(commitLsn: Lsn): boolean {
    if (!this.snapshots.mayHold(commitLsn)) return true;
    this.waiting = { kind: 'streamed', commitLsn };
    return false;
  }

  /** The holds changed: what waits goes on when no hold would take part of it. True: nothing waits. */
  release(): boolean {
    const w = this.waiting;
    if (!w) return true;
    if (this.snapshots.mayHold(w.commitLsn, w.kind === 'transaction' ? w.tables : undefined)) return false;
    this.waiting = undefined;
    if (w.kind === 'open') this.releaseOpen();
    if (w.kind === 'transaction') {
      for (const e of w.changes) this.snapshots.route(e);
      w.committed(w.tables);
    }
    return true;
  }
}
