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
  /** DELETEs whose row must be looked up at the source before publishing (see observeDeferrable). */
  private toResolve: ChangeEvent[] = [];
  /** The same DELETEs, until published (see mayChange). */
  private readonly resolving = new WeakSet<ChangeEvent>();
  /** The transaction (commit LSN) whose INSERTed keys `insertedKeys` holds. */
  private insertedIn: string | undefined;
  /** Keys (partitionKeyOf) of deferrable-key tables that the open transaction inserted. */
  private readonly insertedKeys = new Set<string>();
  /**
   * A fill is reading: still waiting. A change being filled may already be with the publisher
   * (a DELETE to resolve is followed by its key change's INSERT), and the batch deadline must
   * not publish it as it was before the read.
   */
  private filling = false;

  /**
   * Without a reader nothing is filled: such a change keeps `unchanged` and the sink
   * dead-letters it rather than guess. `walAtStart`: the source's WAL position when this
   * capture started (see mayLackRow); 0: no earlier capture to have forgotten anything.
   */
  constructor(
    private readonly read: SourceRowReader | undefined,
    private readonly walAtStart: Lsn = 0n,
    /** `schema.table` of the tables whose primary key is DEFERRABLE (see observeDeferrable). */
    private readonly deferrableKeys: ReadonlySet<string> = new Set(),
  ) {}

  /** The tables with an unfinished snapshot job (SnapshotRunner keeps this current). */
  setSnapshotting(tables: ReadonlySet<string>): void {
    this.snapshotting = tables;
  }

  /** A change was built: it waits to be filled if the target may lack its row. */
  observe(e: ChangeEvent): void {
    if (this.deferrableKeys.size > 0 && this.read && this.deferrableKeys.has(tableLabelOf(e))) this.observeDeferrable(e);
    if (e.unchanged && this.read && this.mayLackRow(e)) this.toFill.push(e);
  }

  /**
   * A DEFERRABLE primary key is checked at the end of the statement (or transaction), not row
   * by row, so inside one transaction two rows can hold the same key for a while: `UPDATE t
   * SET id = id + 1` moves row 1 to key 2 (a DELETE of 1, an INSERT of 2) before row 2 moves
   * on to key 3 (a DELETE of 2, ...). In the stream those are changes of key 2 in that order,
   * and the DELETE, which meant the row that left, would remove the row that arrived: every
   * shifted key but the last was lost at the target. Which row a DELETE meant cannot be told
   * from the changes (a table of key columns only has identical images), so a DELETE of a key
   * the same transaction inserted is decided by the source once the transaction is visible:
   * a row there now makes it an UPDATE carrying that row (a later change of the key follows in
   * the stream, so the row converges), none leaves it a DELETE. Such a table publishes
   * DELETEs only with REPLICA IDENTITY FULL (a deferrable key is no replica identity), so
   * `before` names every column to read.
   */
  private observeDeferrable(e: ChangeEvent): void {
    if (e.op !== 'INSERT' && e.op !== 'UPDATE' && e.op !== 'DELETE') return;
    if (e.commit_lsn !== this.insertedIn) {
      this.insertedIn = e.commit_lsn;
      this.insertedKeys.clear();
    }
    const id = partitionKeyOf(e);
    if (e.op === 'INSERT') this.insertedKeys.add(id);
    else if (e.op === 'DELETE' && e.before && this.insertedKeys.has(id)) {
      this.toResolve.push(e);
      this.resolving.add(e);
    }
  }

  /**
   * `e` (observed) may still be rewritten by `fill`: its unchanged columns filled, or its
   * DELETE resolved into an UPDATE. The publisher keeps such a change as an event until then.
   */
  mayChange(e: ChangeEvent): boolean {
    return e.unchanged !== undefined || this.resolving.has(e);
  }

  /** Changes wait to be filled: nothing may be published until `fill` is done. */
  get waiting(): boolean {
    return this.toFill.length > 0 || this.toResolve.length > 0 || this.filling;
  }

  /** Reads the values of every waiting change from the source. */
  async fill(): Promise<void> {
    this.filling = true;
    try {
      await this.fillWaiting();
    } finally {
      this.filling = false;
    }
  }

  private async fillWaiting(): Promise<void> {
    const read = this.read;
    const todo = this.toFill;
    this.toFill = [];
    const resolve = this.toResolve;
    this.toResolve = [];
    if (!read) return;
    for (const e of resolve) {
      const row = await read(e.schema, e.table, e.key, Object.keys(e.before ?? {}), e.xid);
      if (!row) continue;
      e.op = 'UPDATE';
      e.payload = row;
    }
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
