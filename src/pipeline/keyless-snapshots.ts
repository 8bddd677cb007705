import { tableLabelOf, type ChangeEvent } from '../core/change.js';
import type { Lsn } from '../core/lsn.js';
import type { ChangeBuilder, VersionContext } from './change-builder.js';
import type { KeylessSnapshot } from '../core/snapshot.js';

/** A keyless table's snapshot as capture sees it: its cut, its rows, the table's later changes. */
interface KeylessCut {
  spec: KeylessSnapshot;
  table: string;
  /** The cut's transaction: the reset and every row are versioned in it. Set once the cut is seen. */
  ctx: VersionContext | undefined;
  cutLsn: Lsn;
  /** Changes to the table after the cut, waiting for the snapshot's rows to go first. */
  held: ChangeEvent[];
  markSeen: () => void;
}

/**
 * Capture's side of keyless snapshots. A keyless table is read whole in one snapshot, at the
 * cut `token` (see SnapshotRunner). Once the cut is seen capture emits a reset of the table
 * versioned there, then the rows handed over, and holds the table's later changes until the
 * snapshot is done, so that they follow the rows in the stream.
 */
export class KeylessSnapshots {
  /** By token. */
  private readonly cuts = new Map<string, KeylessCut>();
  /** Keyless tables whose changes are held, by `schema.table`. */
  private readonly holds = new Map<string, KeylessCut>();

  constructor(private readonly builder: ChangeBuilder) {}

  /** A keyless snapshot at the cut `token` is about to be taken; `seen` resolves once capture saw the cut. */
  register(token: string, spec: KeylessSnapshot): { seen: Promise<void> } {
    let markSeen!: () => void;
    const seen = new Promise<void>((resolve) => (markSeen = resolve));
    this.cuts.set(token, { spec, table: `${spec.schema}.${spec.table}`, ctx: undefined, cutLsn: 0n, held: [], markSeen });
    return { seen };
  }

  /**
   * The cut watermark `token` at `lsn`, in the open transaction `ctx`: the reset of the table
   * to emit (undefined for a cut unknown here); the table's later changes are held from now.
   */
  cutSeen(token: string, ctx: VersionContext | undefined, lsn: Lsn): ChangeEvent | undefined {
    const cut = this.cuts.get(token);
    if (!cut || !ctx) return undefined;
    cut.ctx = ctx;
    cut.cutLsn = lsn;
    const reset = this.builder.snapshotReset(ctx, cut.spec.schema, cut.spec.table, lsn, cut.spec.columnTypes);
    // The cut's transaction held the table locked: every later change to it commits after.
    this.holds.set(cut.table, cut);
    cut.markSeen();
    return reset;
  }

  /** Builds rows of the snapshot `token` (versioned at its cut) into `out`. */
  rows(token: string, rows: readonly (string | null)[][], out: ChangeEvent[]): void {
    const cut = this.cuts.get(token);
    if (!cut?.ctx) throw new Error(`keyless snapshot ${token}: rows before its cut was seen`);
    for (const values of rows) out.push(this.builder.snapshotRow(cut.ctx, cut.spec.schema, cut.spec.table, cut.spec.columns, values, [], cut.cutLsn, cut.spec.columnTypes));
  }

  /**
   * The snapshot `token` is over: whether its cut was seen, and the changes it held (undefined
   * when it held none), which go out now, behind its rows. Undefined for an unknown token.
   */
  finish(token: string): { seen: boolean; released: ChangeEvent[] | undefined } | undefined {
    const cut = this.cuts.get(token);
    this.cuts.delete(token);
    if (!cut) return undefined;
    if (this.holds.get(cut.table) !== cut) return { seen: cut.ctx !== undefined, released: undefined };
    this.holds.delete(cut.table);
    return { seen: cut.ctx !== undefined, released: cut.held };
  }

  /** Holds `e` behind its table's snapshot rows if they are not out yet; true when held. */
  hold(e: ChangeEvent): boolean {
    const cut = this.holds.size > 0 ? this.holds.get(tableLabelOf(e)) : undefined;
    if (!cut) return false;
    cut.held.push(e);
    return true;
  }

  /** Some changes are held: the position may not pass them. */
  get holding(): boolean {
    for (const cut of this.holds.values()) if (cut.held.length > 0) return true;
    return false;
  }
}
