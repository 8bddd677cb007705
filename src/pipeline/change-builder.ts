import type { ChangeEvent, ChangeOp, Row } from '../core/change.js';
import { PrerequisiteError, SynclineError } from '../core/errors.js';
import { formatLsn, versionOf, type Lsn } from '../core/lsn.js';
import { SchemaVersionHistory, type ColumnType, type SchemaVersionRegistry } from '../core/schema-version.js';
import type { PgoutputMessage, RelationMessage, TupleValue } from '../pgoutput/messages.js';
import { pgTimestampToIso } from '../pgoutput/replication-frames.js';

/** Prefix of the logical messages syncline emits as heartbeats; they produce no change. */
export const HEARTBEAT_PREFIX = 'syncline.heartbeat';
/** Prefix of the snapshot watermark messages (see snapshot-runner.ts). */
export const SNAPSHOT_PREFIX = 'syncline.snapshot';

interface RelationInfo {
  message: RelationMessage;
  keyIndexes: number[];
  schemaVersion: number;
}

interface OpenTransaction {
  xid: number;
  commitLsn: Lsn;
  commitLsnText: string;
  commitTs: string;
  seq: number;
}

/**
 * Turns decoded pgoutput messages into change events (pure: no I/O). It tracks the relation
 * cache and the open transaction; the caller tracks positions and acknowledgements.
 */
export class ChangeBuilder {
  private readonly relations = new Map<number, RelationInfo>();
  private readonly relationsByName = new Map<string, RelationInfo>();
  private txn: OpenTransaction | undefined;
  /** The version of the last snapshot chunk's columns, resolved once per chunk. */
  private snapshotVersion: { columns: readonly ColumnType[]; lsn: Lsn; version: number } | undefined;

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
     * non-key update is an UPDATE of the same row, not a delete plus an insert.
     */
    private readonly primaryKeys: ReadonlyMap<string, readonly string[]> = new Map(),
    /** `_schema_version` per table definition; the default forgets them when the process ends. */
    private readonly versions: SchemaVersionRegistry = new SchemaVersionHistory(),
  ) {}

  /** Appends the events `msg` produces (zero, one, or two for a key change) to `out`. */
  handle(msg: PgoutputMessage, changeLsn: Lsn, out: ChangeEvent[]): void {
    switch (msg.tag) {
      case 'begin':
        this.txn = {
          xid: msg.xid,
          commitLsn: msg.finalLsn,
          commitLsnText: formatLsn(msg.finalLsn),
          commitTs: pgTimestampToIso(msg.commitTime),
          seq: 0,
        };
        return;
      case 'commit':
        this.txn = undefined;
        return;
      case 'relation':
        this.onRelation(msg, changeLsn);
        return;
      case 'insert': {
        if (this.ignored(msg.relationId)) return;
        const rel = this.relation(msg.relationId);
        const row = this.rowOf(rel, msg.newTuple);
        out.push(this.event(rel, 'INSERT', changeLsn, this.keyOf(rel, msg.newTuple), row.values, undefined, row.unchanged));
        return;
      }
      case 'update': {
        if (this.ignored(msg.relationId)) return;
        const rel = this.relation(msg.relationId);
        const row = this.rowOf(rel, msg.newTuple);
        const newKey = this.keyOf(rel, msg.newTuple, msg.oldTuple);
        const before = msg.oldKind === 'O' && msg.oldTuple ? this.rowOf(rel, msg.oldTuple).values : undefined;
        if (msg.oldTuple) {
          const oldKey = this.keyOf(rel, msg.oldTuple);
          if (!sameRow(oldKey, newKey)) {
            // The key changed: the old row is gone and a new one exists, as two changes.
            out.push(this.event(rel, 'DELETE', changeLsn, oldKey, null, before, undefined));
            out.push(this.event(rel, 'INSERT', changeLsn, newKey, row.values, undefined, row.unchanged));
            return;
          }
        }
        out.push(this.event(rel, 'UPDATE', changeLsn, newKey, row.values, before, row.unchanged));
        return;
      }
      case 'delete': {
        if (this.ignored(msg.relationId)) return;
        const rel = this.relation(msg.relationId);
        const before = msg.oldKind === 'O' ? this.rowOf(rel, msg.oldTuple).values : undefined;
        out.push(this.event(rel, 'DELETE', changeLsn, this.keyOf(rel, msg.oldTuple), null, before, undefined));
        return;
      }
      case 'truncate':
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

  private onRelation(msg: RelationMessage, lsn: Lsn): void {
    const keyIndexes: number[] = [];
    const pk = msg.replicaIdentity === 'f' ? this.primaryKeys.get(`${msg.schema}.${msg.name}`) : undefined;
    if (pk && pk.every((k) => msg.columns.some((c) => c.name === k))) {
      for (const k of pk) keyIndexes.push(msg.columns.findIndex((c) => c.name === k));
    } else {
      msg.columns.forEach((c, i) => {
        if (c.isKey) keyIndexes.push(i);
      });
    }
    // syncline's own tables produce no events, so their definitions are not versioned.
    const schemaVersion = this.ignoredSchemas.has(msg.schema) ? 0 : this.versions.versionOf(msg.schema, msg.name, msg.columns, lsn);
    const info = { message: msg, keyIndexes, schemaVersion };
    this.relations.set(msg.relationId, info);
    this.relationsByName.set(`${msg.schema}.${msg.name}`, info);
  }

  /**
   * A snapshot row as a READ event, versioned inside the current (watermark) transaction:
   * it sorts after every change committed before the high watermark and before every
   * change committed after it. With `columnTypes` (the table's definition when the chunk was
   * read) its `_schema_version` is that definition's, else the one last streamed.
   */
  snapshotRow(
    schema: string,
    table: string,
    columns: readonly string[],
    values: readonly (string | null)[],
    keyColumns: readonly string[],
    changeLsn: Lsn,
    columnTypes?: readonly ColumnType[],
  ): ChangeEvent {
    const payload: Row = {};
    for (let i = 0; i < columns.length; i++) payload[columns[i] as string] = values[i] ?? null;
    const key: Row = {};
    for (const k of keyColumns) key[k] = payload[k] ?? null;
    const known = this.relationsByName.get(`${schema}.${table}`);
    let schemaVersion = known?.schemaVersion ?? 1;
    if (columnTypes) {
      const cached = this.snapshotVersion;
      if (cached?.columns === columnTypes && cached.lsn === changeLsn) schemaVersion = cached.version;
      else {
        schemaVersion = this.versions.versionOf(schema, table, columnTypes, changeLsn);
        this.snapshotVersion = { columns: columnTypes, lsn: changeLsn, version: schemaVersion };
      }
    }
    const rel: RelationInfo =
      known && known.schemaVersion === schemaVersion
        ? known
        : { message: { tag: 'relation', xid: undefined, relationId: 0, schema, name: table, replicaIdentity: 'd', columns: [] }, keyIndexes: [], schemaVersion };
    return this.event(rel, 'READ', changeLsn, key, payload, undefined, undefined);
  }

  private relation(id: number): RelationInfo {
    const rel = this.relations.get(id);
    if (!rel) throw new SynclineError('RELATION_UNKNOWN', `change for relation ${id} arrived before its Relation message`, { retriable: false });
    return rel;
  }

  private ignored(id: number): boolean {
    const rel = this.relations.get(id);
    return rel !== undefined && this.ignoredSchemas.has(rel.message.schema);
  }

  private rowOf(rel: RelationInfo, tuple: TupleValue[]): { values: Row; unchanged: string[] | undefined } {
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
    return { values, unchanged };
  }

  private keyOf(rel: RelationInfo, tuple: TupleValue[], fallback?: TupleValue[]): Row {
    const m = rel.message;
    if (rel.keyIndexes.length === 0) {
      throw new PrerequisiteError(
        `table ${m.schema}.${m.name} has no primary key and no replica identity, so its changes cannot be applied by key`,
        `add a primary key, or: ALTER TABLE ${m.schema}.${m.name} REPLICA IDENTITY FULL (the whole row becomes the key)`,
      );
    }
    const key: Row = {};
    for (const i of rel.keyIndexes) {
      let v = tuple[i];
      if (v === undefined && fallback) v = fallback[i];
      key[(m.columns[i] as { name: string }).name] = v === undefined ? null : typeof v === 'string' || v === null ? v : `\\x${v.toString('hex')}`;
    }
    return key;
  }

  private event(rel: RelationInfo, op: ChangeOp, changeLsn: Lsn, key: Row, payload: Row | null, before: Row | undefined, unchanged: string[] | undefined): ChangeEvent {
    const txn = this.txn;
    if (!txn) throw new SynclineError('NO_TRANSACTION', `row change for ${rel.message.schema}.${rel.message.name} outside a transaction`, { retriable: false });
    txn.seq += 1;
    const e: ChangeEvent = {
      source: this.source,
      schema: rel.message.schema,
      table: rel.message.name,
      op,
      lsn: formatLsn(changeLsn),
      commit_lsn: txn.commitLsnText,
      xid: txn.xid,
      seq: txn.seq,
      commit_ts: txn.commitTs,
      key,
      payload,
      _version: versionOf(txn.commitLsn, txn.seq).toString(),
      _schema_version: rel.schemaVersion,
    };
    if (before) e.before = before;
    if (unchanged) e.unchanged = unchanged;
    return e;
  }
}

function sameRow(a: Row, b: Row): boolean {
  for (const k of Object.keys(a)) if (a[k] !== b[k]) return false;
  return true;
}
