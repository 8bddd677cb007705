import type { ChangeEvent, Row } from '../../src/core/change.js';
import { formatLsn } from '../../src/core/lsn.js';
import type { RecordedColumn } from '../../src/core/schema-evolution.js';

/** A recorded column of a table definition (a key column is NOT NULL). */
export const col = (name: string, attnum: number, type: string, type_oid: number, key = false): RecordedColumn => ({ name, type, type_oid, typmod: -1, attnum, not_null: key, key });

/** An INSERT into `public.t` keyed by `id`, at `lsn`, carrying `_schema_version` `schemaVersion`. */
export function insertOfT(lsn: bigint, id: number, payload: Row, schemaVersion: number): ChangeEvent {
  return {
    source: 's', schema: 'public', table: 't', op: 'INSERT', lsn: formatLsn(lsn), commit_lsn: formatLsn(lsn), xid: 1, seq: 1,
    commit_ts: '2026-01-01T00:00:00Z', key: { id: String(id) }, payload, _version: String((lsn << 32n) + 1n), _schema_version: schemaVersion,
  };
}
