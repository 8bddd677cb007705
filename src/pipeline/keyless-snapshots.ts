import { tableLabelOf, type ChangeEvent } from '../core/change.js';
import { formatLsn, parseLsn, versionOf, type Lsn } from '../core/lsn.js';
import type { ChangeBuilder, VersionContext } from './change-builder.js';
import type { KeylessCut as CutAt, KeylessSnapshot } from '../core/snapshot.js';

/** A keyless table's changes held back from the stream, in the order read. */
interface Hold {
  held: ChangeEvent[];
  /**
   * Only changes committed after this LSN are held (a cut's: the ones before it are in its
   * snapshot, and stale behind its reset). Undefined: every change of the table is held.
   */
  after: Lsn | undefined;
  /**
   * The table's snapshot stopped after its reset may have reached the stream (its read
   * failed, or capture restarted with the job running): held until the job's next cut.
   */
  interrupted: boolean;
}

/** A keyless table's snapshot as capture sees it: its cut, its rows, the table's later changes. */
interface KeylessCut extends Hold {
  spec: KeylessSnapshot;
  table: string;
  /** The cut: the reset and every row are versioned at it. */
  ctx: VersionContext;
  cutLsn: Lsn;
}

/**
 * Capture's side of keyless snapshots. A keyless table is read whole in one snapshot taken at
 * a cut (see SnapshotRunner): the runner writes a cut message into the WAL while it holds the
 * table locked, so every change to the table committed before the message's LSN is in the
 * snapshot and every later one commits after it. At once (not when capture reaches the cut
 * in the WAL: after a restart that may be a whole backlog later) capture emits a reset of
 * the table versioned at the cut, then the rows handed over, and holds the table's changes
 * committed after the cut until the rows are out, so that they follow the rows in the
 * stream. Its changes committed before the cut go out as they come: behind the reset they
 * are stale at the target (their versions are below the cut's), the snapshot holds their
 * effect.
 *
 * A snapshot that stops between its reset and its last row leaves the target with part of
 * the table; a later change removing a row it lacks would look like drift there (and in
 * transactional mode drag every later transaction touching the table into the dead-letter
 * queue). So the table's changes stay held until the job's next cut, whose reset they go
 * out behind, stale. Only when the job ends without a new cut (failed, cancelled) are they
 * let go as they are.
 */
export class KeylessSnapshots {
  /** By token. */
  private readonly cuts = new Map<string, KeylessCut>();
  /** Keyless tables whose changes are held, by `schema.table`. */
  private readonly holds = new Map<string, Hold>();

  constructor(private readonly builder: ChangeBuilder) {}

  /**
   * The keyless table `table` (`schema.table`) had a snapshot running when capture last
   * stopped: its reset and part of its rows may be in the stream. Its changes are held until
   * the job's next cut (or the job's end, see `jobsEnded`).
   */
  interrupted(table: string): void {
    if (!this.holds.has(table)) this.holds.set(table, { held: [], after: undefined, interrupted: true });
  }

  /**
   * A snapshot of `spec` cut at `at` (its message written, not yet committed): the reset of
   * the table to emit now, and the changes an interrupted snapshot of the table held, to go
   * right behind it. The table's changes committed after the cut are held from now.
   */
  cut(spec: KeylessSnapshot, at: CutAt): { reset: ChangeEvent; released: ChangeEvent[] } {
    const commitTs = `${new Date().toISOString().slice(0, 23)}000Z`;
    const ctx: VersionContext = { xid: at.xid, commitLsn: at.lsn, versionBase: versionOf(at.lsn, 0), commitLsnText: formatLsn(at.lsn), commitTs, seq: 0 };
    const table = `${spec.schema}.${spec.table}`;
    const cut: KeylessCut = { spec, table, ctx, cutLsn: at.lsn, held: [], after: at.lsn, interrupted: false };
    this.cuts.set(at.token, cut);
    const reset = this.builder.snapshotReset(ctx, spec.schema, spec.table, at.lsn, spec.columnTypes);
    // Read before the cut was written: committed before it, so in its snapshot.
    const released = this.holds.get(table)?.held ?? [];
    this.holds.set(table, cut);
    return { reset, released };
  }

  /** Builds rows of the snapshot `token` (versioned at its cut) into `out`. */
  rows(token: string, rows: readonly (string | null)[][], out: ChangeEvent[]): void {
    const cut = this.cuts.get(token);
    if (!cut) throw new Error(`keyless snapshot ${token}: rows of an unknown cut`);
    for (const values of rows) out.push(this.builder.snapshotRow(cut.ctx, cut.spec.schema, cut.spec.table, cut.spec.columns, values, [], cut.cutLsn, cut.spec.columnTypes));
  }

  /**
   * The snapshot `token` is over: the changes it held, which go out now, behind its rows
   * (undefined: none, or an unknown token). With `published` false (its rows are not all
   * out) the table's changes stay held, every one of them, as interrupted.
   */
  finish(token: string, published: boolean): ChangeEvent[] | undefined {
    const cut = this.cuts.get(token);
    this.cuts.delete(token);
    if (!cut || this.holds.get(cut.table) !== cut) return undefined;
    if (!published) {
      this.holds.set(cut.table, { held: cut.held, after: undefined, interrupted: true });
      return undefined;
    }
    this.holds.delete(cut.table);
    return cut.held;
  }

  /**
   * `unfinished`: the tables with an unfinished snapshot job. An interrupted snapshot whose
   * job ended without a new cut (failed, cancelled) holds no longer: its changes, returned,
   * go out (the target keeps the part of the table it got; a change removing a row it lacks
   * is dead-lettered as drift).
   */
  jobsEnded(unfinished: ReadonlySet<string>): ChangeEvent[] {
    const released: ChangeEvent[] = [];
    for (const [table, hold] of this.holds) {
      if (!hold.interrupted || unfinished.has(table)) continue;
      this.holds.delete(table);
      for (const e of hold.held) released.push(e);
    }
    return released;
  }

  /**
   * `table` got a primary key since its keyless snapshot was interrupted: its job reads it by
   * key now and will not cut again, so it holds no longer; its held changes, returned, go out
   * (the keyed read that follows overwrites the target's rows by key). Its chunks wait for
   * the position to pass them, which a hold would keep back for good.
   */
  keyed(table: string): ChangeEvent[] {
    const hold = this.holds.get(table);
    if (!hold?.interrupted) return [];
    this.holds.delete(table);
    return hold.held;
  }

  /** Holds `e` behind its table's snapshot rows if they are not out yet; true when held. */
  hold(e: ChangeEvent): boolean {
    const hold = this.holds.size > 0 ? this.holds.get(tableLabelOf(e)) : undefined;
    if (!hold || (hold.after !== undefined && parseLsn(e.commit_lsn) <= hold.after)) return false;
    hold.held.push(e);
    return true;
  }

  /**
   * A source transaction committed at `commitLsn` (that changed `tables`, `schema.table`;
   * absent: whichever) may have changes held here: it commits after a cut whose rows are not all
   * out, or the table's snapshot was interrupted.
   */
  mayHold(commitLsn: Lsn, tables?: ReadonlySet<string>): boolean {
    for (const [table, hold] of this.holds) {
      if ((hold.after === undefined || commitLsn > hold.after) && (!tables || tables.has(table))) return true;
    }
    return false;
  }

  /** The tables whose changes are held now (`schema.table`). */
  get heldTables(): string[] {
    return [...this.holds.keys()];
  }

  /** Some changes are held: the position may not pass them. */
  get holding(): boolean {
    for (const hold of this.holds.values()) if (hold.held.length > 0) return true;
    return false;
  }
}
