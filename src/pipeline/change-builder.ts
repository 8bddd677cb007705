import type { ChangeEvent, ChangeOp, Row } from '../core/change.js';
import { PrerequisiteError, SynclineError } from '../core/errors.js';
import { formatLsn, LsnFormatter, versionOf, type Lsn } from '../core/lsn.js';
import { SchemaVersionHistory, type ColumnType, type SchemaVersionRegistry } from '../core/schema-version.js';
import type { PgoutputMessage, RelationMessage, TupleValue } from '../pgoutput/messages.js';
import { pgTimestampToIso } from '../pgoutput/replication-frames.js';
import type { TableDefinitions } from './table-definitions.js';

/** Prefix of the logical messages syncline emits as heartbeats; they produce no change. */
export const HEARTBEAT_PREFIX = 'syncline.heartbeat';

interface RelationInfo {
  message: RelationMessage;
  /** Indexes of the key columns, ascending (the table's column order); empty: keyless. */
  keyIndexes: number[];
  schemaVersion: number;
}

/**
 * Where events of one transaction take their version from: the commit LSN and the next
 * sequence number. Snapshot rows use the context of their watermark's transaction.
 */
export interface VersionContext {
  xid: number;
  commitLsn: Lsn;
  /** `versionOf(commitLsn, 0)`: each change's `_version` is it plus its seq. */
  versionBase: bigint;
  commitLsnText: string;
  commitTs: string;
  seq: number;
}

/**
 * Turns decoded pgoutput messages into change events (pure: no I/O). It tracks the relation
 * cache and the open transaction; the caller tracks positions and acknowledgements.
 *
 * Keys are always built in the table's column order, whatever order the primary key was
 * declared in, so a snapshot row and a streamed change name a row the same way.
 */
export class ChangeBuilder {
  private readonly relations = new Map<number, RelationInfo>();
  private readonly relationsByName = new Map<string, RelationInfo>();
  /**
   * While a streamed transaction is replayed: the definitions sent inside it. pgoutput tracks
   * the schema it sent per streamed transaction, apart from the main flow's, and counts them
   * as the client's only once that transaction commits (pgoutput.c cleanup_rel_sync_cache).
   */
  private streamed: Map<number, RelationInfo> | undefined;
  private txn: VersionContext | undefined;
  /** The version of the last snapshot chunk's columns, resolved once per chunk. */
  private snapshotVersion: { columns: readonly ColumnType[]; lsn: Lsn; version: number } | undefined;
  /** Every event's `lsn` text. */
  private readonly lsnText = new LsnFormatter();
  /** The columns the last rowOf found unchanged (not sent), if any: its second result. */
  private unchangedOfRow: string[] | undefined;

  /**
   * @param ignoredSchemas schemas whose changes are not events: syncline's own bookkeeping
   *   in the source, which a FOR ALL TABLES publication would otherwise carry.
   */
  constructor(
    private readonly source: string,
    private readonly ignoredSchemas: ReadonlySet<string> = new Set(),
    /**
     * Primary keys by `schema.table`, read from the catalog. With REPLICA IDENTITY FULL the
     * server flags every column as identity; a known primary key stays the row's key, so a
     * non-key update is an UPDATE of the same row, not a delete plus an insert. A FULL table
     * without one is keyless: a multiset of whole rows.
     */
    private readonly primaryKeys: ReadonlyMap<string, readonly string[]> = new Map(),
    /** `_schema_version` per table definition; the default forgets them when the process ends. */
    private readonly versions: SchemaVersionRegistry = new SchemaVersionHistory(),
    /** A typed stream format: where the definition of each version handed out is kept. */
    private readonly definitions?: TableDefinitions,
    /**
     * `source.skip_origins`: the row changes of a transaction that carries a replication
     * origin (a sink's write, see `sink.origin`) are no events: the other direction of a
     * bidirectional pair must not come back. Its commit still moves the position on.
     */
    private readonly skipOrigins = false,
  ) {}

  /** The open transaction carries a replication origin and `skipOrigins` drops its changes. */
  private fromOrigin = false;

  /** Appends the events `msg` produces (zero, one, or two for a key change) to `out`. */
  handle(msg: PgoutputMessage, changeLsn: Lsn, out: ChangeEvent[]): void {
    switch (msg.tag) {
      case 'begin':
        this.txn = {
          xid: msg.xid,
          commitLsn: msg.finalLsn,
          versionBase: versionOf(msg.finalLsn, 0),
          commitLsnText: formatLsn(msg.finalLsn),
          commitTs: pgTimestampToIso(msg.commitTime),
          seq: 0,
        };
        this.fromOrigin = false;
        return;
      case 'commit':
        this.txn = undefined;
        this.fromOrigin = false;
        return;
      case 'origin':
        // Sent after BEGIN, before the transaction's changes.
        if (this.skipOrigins) this.fromOrigin = true;
        return;
      case 'relation':
        // pgoutput sends a Relation message with WAL position 0: where the definition starts
        // is the position of the transaction it came in (its commit), so that WAL replayed
        // after a restart finds the version it had the first time (SchemaVersionHistory).
        this.onRelation(msg, changeLsn === 0n && this.txn ? this.txn.commitLsn : changeLsn);
        return;
      case 'insert': {
        if (this.fromOrigin || this.ignored(msg.relationId)) return;
        const rel = this.relation(msg.relationId);
        const values = this.rowOf(rel, msg.newTuple);
        out.push(this.event(rel, 'INSERT', changeLsn, this.keyOf(rel, msg.newTuple), values, undefined, this.unchangedOfRow));
        return;
      }
      case 'update': {
        if (this.fromOrigin || this.ignored(msg.relationId)) return;
        const rel = this.relation(msg.relationId);
        const values = this.rowOf(rel, msg.newTuple);
        let unchanged = this.unchangedOfRow;
        const before = msg.oldKind === 'O' && msg.oldTuple ? this.rowOf(rel, msg.oldTuple) : undefined;
        // A whole old row (REPLICA IDENTITY FULL, flattened by the server) holds the values
        // of the unchanged TOASTed columns: the event is complete and needs no stored value.
        if (unchanged && before) unchanged = fillFrom(before, values, unchanged);
        if (rel.keyIndexes.length === 0) {
          if (!before) throw this.noOldImage(rel, 'UPDATE');
          out.push(this.event(rel, 'UPDATE', changeLsn, {}, values, before, unchanged));
          return;
        }
        const newKey = this.keyOf(rel, msg.newTuple, msg.oldTuple);
        if (msg.oldTuple) {
          const oldKey = this.keyOf(rel, msg.oldTuple);
          if (!sameRow(oldKey, newKey)) {
            // The key changed: the old row is gone and a new one exists, as two changes.
            out.push(this.event(rel, 'DELETE', changeLsn, oldKey, null, before, undefined));
            out.push(this.event(rel, 'INSERT', changeLsn, newKey, values, undefined, unchanged));
            return;
          }
        }
        out.push(this.event(rel, 'UPDATE', changeLsn, newKey, values, before, unchanged));
        return;
      }
      case 'delete': {
        if (this.fromOrigin || this.ignored(msg.relationId)) return;
        const rel = this.relation(msg.relationId);
        const before = msg.oldKind === 'O' ? this.rowOf(rel, msg.oldTuple) : undefined;
        if (rel.keyIndexes.length === 0 && !before) throw this.noOldImage(rel, 'DELETE');
        out.push(this.event(rel, 'DELETE', changeLsn, this.keyOf(rel, msg.oldTuple), null, before, undefined));
        return;
      }
      case 'truncate':
        if (this.fromOrigin) return;
        for (const id of msg.relationIds) {
          if (this.ignored(id)) continue;
          out.push(this.event(this.relation(id), 'TRUNCATE', changeLsn, {}, null, undefined, undefined));
        }
        return;
      default:
        // origin, type, logical messages, stream control, two-phase: no row change.
        return;
    }
  }

  get inTransaction(): boolean {
    return this.txn !== undefined;
  }

  /** `commit_lsn` of the open transaction's changes, if one is open. */
  get openCommitLsn(): string | undefined {
    return this.txn?.commitLsnText;
  }

  /** The open transaction's version context (shared: events built in it advance its seq). */
  get openTransaction(): VersionContext | undefined {
    return this.txn;
  }

  /** Replaying a streamed transaction: definitions sent inside it apply to it alone. */
  beginStreamedReplay(): void {
    this.streamed = new Map();
  }

  /** The replayed transaction committed: the definitions it was sent become the client's. */
  endStreamedReplay(): void {
    const streamed = this.streamed;
    this.streamed = undefined;
    if (!streamed) return;
    for (const [id, info] of streamed) {
      this.relations.set(id, info);
      this.relationsByName.set(`${info.message.schema}.${info.message.name}`, info);
    }
  }

  private onRelation(msg: RelationMessage, lsn: Lsn): void {
    const keyIndexes: number[] = [];
    if (msg.replicaIdentity === 'f') {
      // Every column is flagged: the primary key, when the table has one, is the key.
      const pk = this.primaryKeys.get(`${msg.schema}.${msg.name}`);
      if (pk && pk.every((k) => msg.columns.some((c) => c.name === k))) {
        msg.columns.forEach((c, i) => {
          if (pk.includes(c.name)) keyIndexes.push(i);
        });
      }
    } else {
      // Default (primary key) or index identity; none flagged: an insert-only keyless table.
      msg.columns.forEach((c, i) => {
        if (c.isKey) keyIndexes.push(i);
      });
    }
    // syncline's own tables produce no events, so their definitions are not versioned.
    const schemaVersion = this.ignoredSchemas.has(msg.schema) ? 0 : this.versions.versionOf(msg.schema, msg.name, msg.columns, lsn, msg.relationId);
    if (schemaVersion !== 0) this.definitions?.record(msg.schema, msg.name, schemaVersion, msg.columns, (_, i) => keyIndexes.includes(i));
    const info = { message: msg, keyIndexes, schemaVersion };
    if (this.streamed) {
      this.streamed.set(msg.relationId, info);
      return;
    }
    this.relations.set(msg.relationId, info);
    this.relationsByName.set(`${msg.schema}.${msg.name}`, info);
  }

  /**
   * A snapshot row as a READ event, versioned in `ctx` (its watermark's transaction): it
   * sorts after every change committed before the watermark and before every change
   * committed after it. With `columnTypes` (the table's definition when the chunk was read)
   * its `_schema_version` is that definition's, else the one last streamed. The key is
   * built from `keyColumns` in the table's column order (`columns`), as streamed keys are.
   */
  snapshotRow(
    ctx: VersionContext,
    schema: string,
    table: string,
    columns: readonly string[],
    values: readonly (string | null)[],
    keyColumns: readonly string[],
    changeLsn: Lsn,
    columnTypes?: readonly ColumnType[],
  ): ChangeEvent {
    const payload: Row = {};
    const key: Row = {};
    for (let i = 0; i < columns.length; i++) {
      const name = columns[i] as string;
      const v = values[i] ?? null;
      payload[name] = v;
      if (keyColumns.includes(name)) key[name] = v;
    }
    return this.event(this.snapshotRelation(schema, table, changeLsn, columnTypes, keyColumns), 'READ', changeLsn, key, payload, undefined, undefined, ctx);
  }

  /** The start of a keyless table's snapshot (see ChangeEvent.snapshot_reset), versioned in `ctx`. */
  snapshotReset(ctx: VersionContext, schema: string, table: string, changeLsn: Lsn, columnTypes?: readonly ColumnType[]): ChangeEvent {
    const e = this.event(this.snapshotRelation(schema, table, changeLsn, columnTypes), 'TRUNCATE', changeLsn, {}, null, undefined, undefined, ctx);
    e.snapshot_reset = true;
    return e;
  }

  private snapshotRelation(schema: string, table: string, changeLsn: Lsn, columnTypes: readonly ColumnType[] | undefined, keyColumns: readonly string[] = []): RelationInfo {
    const known = this.relationsByName.get(`${schema}.${table}`);
    let schemaVersion = known?.schemaVersion ?? 1;
    if (columnTypes) {
      const cached = this.snapshotVersion;
      if (cached?.columns === columnTypes && cached.lsn === changeLsn) schemaVersion = cached.version;
      else {
        schemaVersion = this.versions.versionOf(schema, table, columnTypes, changeLsn);
        this.snapshotVersion = { columns: columnTypes, lsn: changeLsn, version: schemaVersion };
        this.definitions?.record(schema, table, schemaVersion, columnTypes, (c) => keyColumns.includes(c.name));
      }
    }
    return known && known.schemaVersion === schemaVersion
      ? known
      : { message: { tag: 'relation', xid: undefined, relationId: 0, schema, name: table, replicaIdentity: 'd', columns: [] }, keyIndexes: [], schemaVersion };
  }

  private relation(id: number): RelationInfo {
    const rel = this.streamed?.get(id) ?? this.relations.get(id);
    if (!rel) throw new SynclineError('RELATION_UNKNOWN', `change for relation ${id} arrived before its Relation message`, { retriable: false });
    return rel;
  }

  private ignored(id: number): boolean {
    const rel = this.streamed?.get(id) ?? this.relations.get(id);
    return rel !== undefined && this.ignoredSchemas.has(rel.message.schema);
  }

  /** The row image of `tuple`; the columns it left out (unchanged TOAST) are in `unchangedOfRow` until the next call. */
  private rowOf(rel: RelationInfo, tuple: TupleValue[]): Row {
    const cols = rel.message.columns;
    const values: Row = {};
    let unchanged: string[] | undefined;
    for (let i = 0; i < cols.length; i++) {
      const name = (cols[i] as { name: string }).name;
      const v = tuple[i];
      if (v === undefined) {
        (unchanged ??= []).push(name);
      } else {
        values[name] = typeof v === 'string' || v === null ? v : `\\x${v.toString('hex')}`;
      }
    }
    this.unchangedOfRow = unchanged;
    return values;
  }

  /** The key in column order; `{}` for a keyless table. */
  private keyOf(rel: RelationInfo, tuple: TupleValue[], fallback?: TupleValue[]): Row {
    const m = rel.message;
    const key: Row = {};
    for (const i of rel.keyIndexes) {
      let v = tuple[i];
      if (v === undefined && fallback) v = fallback[i];
      key[(m.columns[i] as { name: string }).name] = v === undefined ? null : typeof v === 'string' || v === null ? v : `\\x${v.toString('hex')}`;
    }
    return key;
  }

  private noOldImage(rel: RelationInfo, op: string): PrerequisiteError {
    const m = rel.message;
    return new PrerequisiteError(
      `table ${m.schema}.${m.name} has no primary key and its ${op} carries no old row, so the row it changed cannot be found at the target`,
      `ALTER TABLE ${m.schema}.${m.name} REPLICA IDENTITY FULL (a keyless table is then replicated as a multiset of whole rows), or add a primary key`,
    );
  }

  private event(rel: RelationInfo, op: ChangeOp, changeLsn: Lsn, key: Row, payload: Row | null, before: Row | undefined, unchanged: string[] | undefined, ctx = this.txn): ChangeEvent {
    const txn = ctx;
    if (!txn) throw new SynclineError('NO_TRANSACTION', `row change for ${rel.message.schema}.${rel.message.name} outside a transaction`, { retriable: false });
    txn.seq += 1;
    const e: ChangeEvent = {
      source: this.source,
      schema: rel.message.schema,
      table: rel.message.name,
      op,
      lsn: this.lsnText.format(changeLsn),
      commit_lsn: txn.commitLsnText,
      xid: txn.xid,
      seq: txn.seq,
      commit_ts: txn.commitTs,
      key,
      payload,
      _version: (txn.versionBase | BigInt(txn.seq)).toString(),
      _schema_version: rel.schemaVersion,
    };
    if (before) e.before = before;
    if (unchanged) e.unchanged = unchanged;
    return e;
  }
}

/** Copies the `unchanged` columns `from` has into `into`; returns those still missing. */
function fillFrom(from: Row, into: Row, unchanged: string[]): string[] | undefined {
  const missing = unchanged.filter((col) => {
    if (!(col in from)) return true;
    into[col] = from[col] ?? null;
    return false;
  });
  return missing.length > 0 ? missing : undefined;
}

function sameRow(a: Row, b: Row): boolean {
  for (const k of Object.keys(a)) if (a[k] !== b[k]) return false;
  return true;
}
