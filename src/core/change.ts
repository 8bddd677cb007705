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
  /** Replica-identity columns (primary key by default). */
  key: Row;
  /** New row image for INSERT/UPDATE/READ; null for DELETE/TRUNCATE. */
  payload: Row | null;
  /** Old row image when the source sends one (REPLICA IDENTITY FULL, or a key change). */
  before?: Row | null;
  /** Columns whose unchanged TOASTed value the source did not send: keep the stored value. */
  unchanged?: string[];
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
}

/** The stream key of a change: all changes of one row share it, so they stay in order. */
export function partitionKeyOf(change: Pick<ChangeEvent, 'schema' | 'table' | 'key'>): string {
  return `${change.schema}.${change.table}:${JSON.stringify(Object.values(change.key))}`;
}

/** Stable partition choice (FNV-1a, 32 bit) so that a key always maps to the same partition. */
export function partitionFor(key: string, partitions: number): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < key.length; i++) {
    h ^= key.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return (h >>> 0) % partitions;
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
