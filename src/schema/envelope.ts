/**
 * The change envelope as the typed formats carry it, shared by their decoders: rows are
 * records keyed by schema field name (see names.ts) holding wire values, which each format's
 * `RowCodec` turns back into PostgreSQL text.
 */
import type { ChangeEvent, Row } from '../core/change.js';
import { SynclineError } from '../core/errors.js';
import type { ColumnPlan } from './column-plan.js';

export interface RowCodec {
  /** The wire value of a column's (non-null) text. */
  toWire(column: ColumnPlan, text: string): unknown;
  /** The text of a column's (non-null) wire value. */
  fromWire(column: ColumnPlan, value: unknown): string;
}

/** A decoded envelope: rows still in wire form, optional fields in their wire defaults. */
export type WireEnvelope<R> = Omit<ChangeEvent, 'key' | 'payload' | 'before' | 'unchanged' | 'superseded_at_source' | 'tx_last' | 'tx_prev' | 'snapshot_reset'> & {
  key: R | null | undefined;
  payload: R | null | undefined;
  before: R | null | undefined;
  unchanged?: string[] | null;
  superseded_at_source?: boolean | null;
  tx_last?: boolean | null;
  tx_prev?: string | null;
  snapshot_reset?: boolean | null;
};

/**
 * A row must have exactly the definition's columns, except the `unchanged` ones (unchanged
 * TOAST values the source did not send), which it lacks: the typed formats write a missing
 * column as null, and decoding drops the nulls of `unchanged` columns again. Anything else
 * would not decode to the same event, so it is refused.
 */
export function checkRowColumns(cols: readonly ColumnPlan[], row: Row, unchanged: readonly string[] | undefined): void {
  let present = 0;
  for (const c of cols) if (row[c.name] !== undefined) present++;
  let keys = 0;
  for (const _ in row) keys++;
  if (present === keys && present + (unchanged?.length ?? 0) === cols.length) return;
  const known = new Set(cols.map((c) => c.name));
  const extra = Object.keys(row).filter((k) => !known.has(k));
  const missing = cols.filter((c) => row[c.name] === undefined && !unchanged?.includes(c.name)).map((c) => c.name);
  throw new SynclineError(
    'SCHEMA_MISMATCH',
    `a change row does not match its table definition (${extra.length > 0 ? `columns not in the definition: ${extra.join(', ')}` : ''}${extra.length > 0 && missing.length > 0 ? '; ' : ''}${missing.length > 0 ? `columns missing: ${missing.join(', ')}` : ''}): capture must pass the definition of the change's _schema_version`,
    { retriable: false },
  );
}

/** The change event of a decoded envelope, with rows in the table's column order. */
export function eventFromEnvelope<R>(v: WireEnvelope<R>, cols: readonly ColumnPlan[], rows: RowCodec, field: (r: R) => Record<string, unknown>): ChangeEvent {
  const unchanged = v.unchanged ?? undefined;
  const key: Row = {};
  if (v.key) {
    const k = field(v.key);
    for (const c of cols) {
      if (!c.key) continue;
      const w = k[c.field];
      if (w !== null && w !== undefined) key[c.name] = rows.fromWire(c, w);
    }
  }
  const e: ChangeEvent = {
    source: v.source,
    schema: v.schema,
    table: v.table,
    op: v.op,
    lsn: v.lsn,
    commit_lsn: v.commit_lsn,
    xid: v.xid,
    seq: v.seq,
    commit_ts: v.commit_ts,
    key,
    payload: v.payload ? rowOf(field(v.payload), cols, rows, unchanged) : null,
    _version: v._version,
    _schema_version: v._schema_version,
  };
  if (v.before) e.before = rowOf(field(v.before), cols, rows, undefined);
  if (unchanged) e.unchanged = unchanged;
  if (v.superseded_at_source) e.superseded_at_source = true;
  if (v.tx_last) e.tx_last = true;
  if (v.tx_prev !== null && v.tx_prev !== undefined) e.tx_prev = v.tx_prev;
  if (v.snapshot_reset) e.snapshot_reset = true;
  return e;
}

function rowOf(r: Record<string, unknown>, cols: readonly ColumnPlan[], rows: RowCodec, unchanged: readonly string[] | undefined): Row {
  const out: Row = {};
  for (const c of cols) {
    const w = r[c.field];
    if (w === null || w === undefined) {
      if (!unchanged?.includes(c.name)) out[c.name] = null;
    } else {
      out[c.name] = rows.fromWire(c, w);
    }
  }
  return out;
}
