import { tableLabelOf, type ChangeEvent } from '../core/change.js';
import type { Lsn } from '../core/lsn.js';
import type { ChangeBuilder, VersionContext } from './change-builder.js';
import type { KeylessSnapshot } from '../core/snapshot.js';

/** A keyless table's changes held back from the stream, in the order read. */
interface Hold {
  held: ChangeEvent[];
  /**
   * The table's snapshot stopped after its reset may have reached the stream (its read
   * failed, or capture restarted with the job running): held until the next cut.
   */
  interrupted: boolean;
}

/** A keyless table's snapshot as capture sees it: its cut, its rows, the table's later changes. */
interface KeylessCut extends Hold {
  spec: KeylessSnapshot;
  table: string;
  /** The cut's transaction: the reset and every row are versioned in it. Set once the cut is seen. */
  ctx: VersionContext | undefined;
  cutLsn: Lsn;
  markSeen: () => void;
}

/**
 * Capture's side of keyless snapshots. A keyless table is read whole in one snapshot, at the
 * cut `token` (see SnapshotRunner). Once the cut is seen capture emits a reset of the table
 * versioned there, then the rows handed over, and holds the table's later changes until the
 * snapshot is done, so that they follow the rows in the stream.
 *
 * A snapshot that stops between its reset and its last row leaves the target with part of
 * the table; a later change removing a row it lacks would look like drift there (and in
 * transactional mode drag every later transaction touching the table into the dead-letter
 * queue). So the table's changes stay held until the job's next cut, and go out right behind
 * that cut's reset, which makes them stale at the target: the new snapshot holds their
 * effect. Only when the job ends without a new cut (failed, cancelled) are they let go.
 */
export class KeylessSnapshots {
  /** By token. */
  private readonly cuts = new Map<string, KeylessCut>();
  /** Keyless tables whose changes are held, by `schema.table`. */
  private readonly holds = new Map<string, Hold>();

  constructor(private readonly builder: ChangeBuilder) {}

  /** A keyless snapshot at the cut `token` is about to be taken; `seen` resolves once capture saw the cut. */
  register(token: string, spec: KeylessSnapshot): { seen: Promise<void> } {
    let markSeen!: () => void;
    const seen = new Promise<void>((resolve) => (markSeen = resolve));
    this.cuts.set(token, { spec, table: `${spec.schema}.${spec.table}`, ctx: undefined, cutLsn: 0n, held: [], interrupted: false, markSeen });
    return { seen };
  }

  /**
   * The keyless table `table` (`schema.table`) had a snapshot running when capture last
   * stopped: its reset and part of its rows may be in the stream. Its changes are held until
   * the job's next cut (or the job's end, see `jobsEnded`).
   */
  interrupted(table: string): void {
    if (!this.holds.has(table)) this.holds.set(table, { held: [], interrupted: true });
  }

  /**
   * The cut watermark `token` at `lsn`, in the open transaction `ctx`: the reset of the table
   * to emit (undefined for a cut unknown here), and the changes an interrupted snapshot of the
   * table held, to go right behind it. The table's later changes are held from now.
   */
  cutSeen(token: string, ctx: VersionContext | undefined, lsn: Lsn): { reset: ChangeEvent; released: ChangeEvent[] } | undefined {
    const cut = this.cuts.get(token);
    if (!cut || !ctx) return undefined;
    cut.ctx = ctx;
    cut.cutLsn = lsn;
    const reset = this.builder.snapshotReset(ctx, cut.spec.schema, cut.spec.table, lsn, cut.spec.columnTypes);
    // Committed before the cut: the snapshot read holds their effect.
    const released = this.holds.get(cut.table)?.held ?? [];
    // The cut's transaction held the table locked: every later change to it commits after.
    this.holds.set(cut.table, cut);
    cut.markSeen();
    return { reset, released };
  }

  /** Builds rows of the snapshot `token` (versioned at its cut) into `out`. */
  rows(token: string, rows: readonly (string | null)[][], out: ChangeEvent[]): void {
    const cut = this.cuts.get(token);
    if (!cut?.ctx) throw new Error(`keyless snapshot ${token}: rows before its cut was seen`);
    for (const values of rows) out.push(this.builder.snapshotRow(cut.ctx, cut.spec.schema, cut.spec.table, cut.spec.columns, values, [], cut.cutLsn, cut.spec.columnTypes));
  }

  /**
   * The snapshot `token` is over: whether its cut was seen, and the changes it held (undefined
   * when it held none), which go out now, behind its rows. With `published` false (its rows
   * are not all out) a seen cut's changes stay held, as interrupted. Undefined for an unknown
   * token.
   */
  finish(token: string, published: boolean): { seen: boolean; released: ChangeEvent[] | undefined } | undefined {
    const cut = this.cuts.get(token);
    this.cuts.delete(token);
    if (!cut) return undefined;
    const seen = cut.ctx !== undefined;
    if (this.holds.get(cut.table) !== cut) return { seen, released: undefined };
    if (!published) {
      this.holds.set(cut.table, { held: cut.held, interrupted: true });
      return { seen, released: undefined };
    }
    this.holds.delete(cut.table);
    return { seen, released: cut.held };
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

  /** Holds `e` behind its table's snapshot rows if they are not out yet; true when held. */
  hold(e: ChangeEvent): boolean {
    const hold = this.holds.size > 0 ? this.holds.get(tableLabelOf(e)) : undefined;
    if (!hold) return false;
    hold.held.push(e);
    return true;
  }

  /** Some changes are held: the position may not pass them. */
  get holding(): boolean {
    for (const hold of this.holds.values()) if (hold.held.length > 0) return true;
    return false;
  }
}
