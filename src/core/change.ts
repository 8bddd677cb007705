/**
 * The change event: what capture publishes to the stream and apply consumes.
 * Column values are PostgreSQL's text output for the type (exact for every type: no
 * float rounding, no timezone shifts); SQL NULL is JSON null.
 */
export type ChangeOp = 'INSERT' | 'UPDATE' | 'DELETE' | 'TRUNCATE' | 'READ';

export type Row = Record<string, string | null>;

export interface ChangeEvent {
  /** Logical source name (the slot name unless configured). */
  source: string;
  /** PostgreSQL schema (namespace) of the table. */
  schema: string;
  table: string;
  op: ChangeOp;
  /** LSN of this change's WAL record, `X/Y`. Several changes may share one (multi-insert). */
  lsn: string;
  /** LSN of the commit record of the change's transaction, `X/Y`. */
  commit_lsn: string;
  xid: number;
  /** 1-based position of the change inside its transaction. */
  seq: number;
  /** Commit time, ISO-8601 UTC with microseconds. */
  commit_ts: string;
  /**
   * Replica-identity columns (primary key by default), always in the table's column order
   * (capture builds every key that way, snapshot rows and streamed changes alike, so
   * `rowKeyOf` names a row the same everywhere). Empty for a table without a key
   * (REPLICA IDENTITY FULL, or an insert-only table, without a primary key): such a table is
   * a multiset, its changes carry whole row images (`payload`, `before`) and all go to one
   * partition, in source order.
   */
  key: Row;
  /** New row image for INSERT/UPDATE/READ; null for DELETE/TRUNCATE. */
  payload: Row | null;
  /** Old row image when the source sends one (REPLICA IDENTITY FULL, or a key change). */
  before?: Row | null;
  /** Columns whose unchanged TOASTed value the source did not send: keep the stored value. */
  unchanged?: string[];
  /**
   * With `unchanged`, when the target may have no row to keep the values from (a key change,
   * or a table whose snapshot is unfinished): capture could not read them at the source
   * because the row had already left this key there (deleted, or its key changed again). A
   * later change of the key in the stream decides the row, so a sink that lacks it skips this
   * change (stale) instead of refusing it.
   */
  superseded_at_source?: true;
  /**
   * Total order of changes of one source, as a decimal string:
   * commit_lsn * 2^32 + seq. A change is applied only if its version is newer than the row's.
   */
  _version: string;
  /** Increases whenever the source table's column set or types change. */
  _schema_version: number;
  /**
   * On the last change of its transaction only: true (so its `seq` is the transaction's
   * number of changes). Lets `sink.consistency: transactional` know a transaction is whole.
   */
  tx_last?: true;
  /** With `tx_last`: the commit LSN of the transaction capture published before this one. */
  tx_prev?: string;
  /**
   * On a TRUNCATE only: not a TRUNCATE at the source but the start of a snapshot of a keyless
   * table, whose rows (READ) follow. Applied whatever `sink.truncate` says: the snapshot
   * replaces the table's content as of this version.
   */
  snapshot_reset?: true;
}

/** `schema.table`: the table label used in metrics, logs, the dead-letter queue and the sink's bookkeeping. */
export function tableLabelOf(change: Pick<ChangeEvent, 'schema' | 'table'>): string {
  // Asked for every change (its stream key): runs of one table's changes reuse one string.
  if (change.table !== lastLabel.table || change.schema !== lastLabel.schema) {
    lastLabel = { schema: change.schema, table: change.table, text: `${change.schema}.${change.table}` };
  }
  return lastLabel.text;
}

let lastLabel = { schema: '', table: '', text: '.' };

/**
 * tableLabelOf for one pass over a batch: the label of the previous change again while the
 * table stays the same (a batch holds runs of one table), instead of a new string per change.
 */
export function tableLabeler(): (change: Pick<ChangeEvent, 'schema' | 'table'>) => string {
  let schema: string | undefined;
  let table: string | undefined;
  let label = '';
  return (change) => {
    if (change.schema !== schema || change.table !== table) {
      schema = change.schema;
      table = change.table;
      label = tableLabelOf(change);
    }
    return label;
  };
}

/**
 * The canonical identity of a row within its table: JSON of the key values in the key's
 * (the table's column) order. Persisted (tombstones, dead-letter rows), so it must never
 * change form. A keyless table's rows, and a TRUNCATE, have no identity: `[]`.
 */
export function rowKeyOf(change: Pick<ChangeEvent, 'key'>): string {
  // JSON.stringify(Object.values(key)), written out for text and null values (every change's
  // stream key is made of it): the same characters, a third of the time.
  let text = '[';
  for (const v of Object.values(change.key) as unknown[]) {
    if (text.length > 1) text += ',';
    text += typeof v === 'string' && !NEEDS_ESCAPE.test(v) ? `"${v}"` : (JSON.stringify(v) ?? 'null');
  }
  return `${text}]`;
}

/** A character JSON.stringify escapes in a string: `"`, `\`, a control character, a surrogate. */
// eslint-disable-next-line no-control-regex -- the control characters are what JSON escapes
const NEEDS_ESCAPE = /["\\\u0000-\u001f\ud800-\udfff]/;

/**
 * The unique identity of a change: `<source>:<commit_lsn>:<seq>`, the same on every replay.
 * Receivers deduplicate by it (webhook idempotency keys), the stream and the dead-letter
 * queue key records by it. (Not the dedup key pattern: its default, `{lsn}`-based, is shared
 * by every row of a COPY or a snapshot chunk.)
 */
export function changeIdOf(change: Pick<ChangeEvent, 'source' | 'commit_lsn' | 'seq'>): string {
  return `${change.source}:${change.commit_lsn}:${change.seq}`;
}

/** True for a row change of a keyless table (a multiset: no key, whole row images). */
export function isKeyless(change: Pick<ChangeEvent, 'key' | 'op'>): boolean {
  if (change.op === 'TRUNCATE') return false;
  for (const _ in change.key) return false;
  return true;
}

/**
 * The stream key of a change: all changes of one row share it, so they stay in order. A
 * keyless table's changes and its TRUNCATEs share `schema.table:[]`: one partition, in order.
 */
export function partitionKeyOf(change: Pick<ChangeEvent, 'schema' | 'table' | 'key'>): string {
  return `${tableLabelOf(change)}:${rowKeyOf(change)}`;
}

/** FNV-1a, 32 bit, over the UTF-16 code units of `s`: a stable, unsigned hash. */
export function fnv1a32(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}

/** Stable partition choice (FNV-1a, 32 bit) so that a key always maps to the same partition. */
export function partitionFor(key: string, partitions: number): number {
  return fnv1a32(key) % partitions;
}

/** Renders the configured dedup key pattern, e.g. `sync:{source}:{table}:{lsn}`. */
export function dedupKeyOf(pattern: string, change: ChangeEvent): string {
  return pattern.replace(/\{(\w+)\}/g, (whole, name: string) => {
    switch (name) {
      case 'source': return change.source;
      case 'schema': return change.schema;
      case 'table': return change.table;
      case 'lsn': return change.lsn;
      case 'commit_lsn': return change.commit_lsn;
      case 'seq': return String(change.seq);
      case 'version': return change._version;
      case 'xid': return String(change.xid);
      default: return whole;
    }
  });
}
