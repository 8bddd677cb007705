import { partitionKeyOf, tableLabelOf, type ChangeEvent, type Row } from '../core/change.js';
import { parseLsn, type Lsn } from '../core/lsn.js';

/** How many recent key changes are remembered (see UnchangedValues.keyChanged). */
const KEY_CHANGES_REMEMBERED = 100_000;

/** Reads a row's `columns` by key at the source, once transaction `xid` is visible there. */
export type SourceRowReader = (schema: string, table: string, key: Row, columns: readonly string[], xid?: number) => Promise<Row | undefined>;

/**
 * Changes that left TOASTed columns unchanged where the target may have no row to keep
 * them from: a key change (the new key's row exists nowhere at the target), an UPDATE of a
 * table whose snapshot has not finished (the row may come with a later chunk), an UPDATE
 * of a key that recently got such a key change (its insert may have been skipped), and an
 * UPDATE committed before this capture started (an earlier capture's memory of key changes
 * is gone with it). The values are read from the source before the change is published (a
 * later change of those columns, or of the row, follows in the stream, so the row
 * converges). A row that is gone
 * keeps `unchanged` and is marked `superseded_at_source`: the key's later change decides it.
 */
export class UnchangedValues {
  /**
   * Tables with an unfinished snapshot: the target may not have a row yet that an UPDATE
   * leaving TOASTed values unchanged needs to keep them from.
   */
  private snapshotting: ReadonlySet<string> = new Set();
  /**
   * Rows (partitionKeyOf) that recently got a key change leaving values unchanged: the target may
   * lack that row (its insert skipped as superseded_at_source), so their later UPDATEs that
   * leave values unchanged are filled too. Bounded: the oldest are forgotten (an UPDATE of a
   * forgotten key is then refused and dead-lettered, never written without its values).
   */
  private readonly keyChanged = new Set<string>();
  /** Changes whose unchanged values must be read from the source before publishing. */
  private toFill: ChangeEvent[] = [];

  /**
   * Without a reader nothing is filled: such a change keeps `unchanged` and the sink
   * dead-letters it rather than guess. `walAtStart`: the source's WAL position when this
   * capture started (see mayLackRow); 0: no earlier capture to have forgotten anything.
   */
  constructor(
    private readonly read: SourceRowReader | undefined,
    private readonly walAtStart: Lsn = 0n,
  ) {}

  /** The tables with an unfinished snapshot job (SnapshotRunner keeps this current). */
  setSnapshotting(tables: ReadonlySet<string>): void {
    this.snapshotting = tables;
  }

  /** A change was built: it waits to be filled if the target may lack its row. */
  observe(e: ChangeEvent): void {
    if (e.unchanged && this.read && this.mayLackRow(e)) this.toFill.push(e);
  }

  /** Changes wait to be filled: nothing may be published until `fill` is done. */
  get waiting(): boolean {
    return this.toFill.length > 0;
  }

  /** Reads the values of every waiting change from the source. */
  async fill(): Promise<void> {
    const read = this.read;
    const todo = this.toFill;
    this.toFill = [];
    if (!read) return;
    for (const e of todo) {
      const missing = e.unchanged ?? [];
      const row = await read(e.schema, e.table, e.key, missing, e.xid);
      if (!row || !e.payload) {
        // Visible, yet not there: the row left this key after the change (a later DELETE of
        // the key follows in the stream, or a TRUNCATE), so the sink may skip the change.
        e.superseded_at_source = true;
        continue;
      }
      const still = missing.filter((col) => {
        if (!(col in row)) return true;
        (e.payload as Row)[col] = row[col] ?? null;
        return false;
      });
      if (still.length > 0) e.unchanged = still;
      else delete e.unchanged;
    }
  }

  /** Whether the target may have no row to keep `e`'s unchanged values from. */
  private mayLackRow(e: ChangeEvent): boolean {
    const id = partitionKeyOf(e);
    if (e.op === 'INSERT') {
      this.keyChanged.delete(id);
      this.keyChanged.add(id);
      if (this.keyChanged.size > KEY_CHANGES_REMEMBERED) this.keyChanged.delete(this.keyChanged.values().next().value as string);
      return true;
    }
    return e.op === 'UPDATE' && (this.snapshotting.has(tableLabelOf(e)) || this.keyChanged.has(id) || this.beforeStart(e));
  }

  /**
   * Committed before this capture started. An earlier capture may have skipped the key's
   * insert as superseded_at_source (it read the key at the source and found no row) and
   * then died, and `keyChanged` died with it. That read came before this start, and found the
   * row gone: whatever removed it (a DELETE of the key, a key change away, a TRUNCATE)
   * committed before this start too, and so did every UPDATE of the key before it. Reading
   * those UPDATEs again marks them superseded in turn; UPDATEs committed later are ones the
   * earlier capture never judged. The cost: one read per UPDATE leaving values unchanged in
   * the backlog a restart resumes (from the slot's confirmed position to `walAtStart`).
   */
  private beforeStart(e: ChangeEvent): boolean {
    return this.walAtStart > 0n && parseLsn(e.commit_lsn) <= this.walAtStart;
  }
}
