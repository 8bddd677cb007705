import type pg from 'pg';
import { rowKeyOf, type ChangeEvent } from '../../core/change.js';
import { quoteIdent } from '../../core/sql.js';
import { VERSION_LSN_COLUMN, VERSION_SEQ_COLUMN } from '../sql/bookkeeping.js';
import { keyMatch, type TargetTable } from './table-meta.js';

/**
 * `sink.stale_audit`: the reconciliation record of `conflict_strategy: source_lsn_priority`.
 * Every upsert the version gate rejected is recorded, with the incoming and the stored
 * version, in `<stateSchema>.stale_audit`, in the batch's transaction: who won, and by how much.
 */
export function staleAuditDdl(table: string): string {
  return `CREATE TABLE IF NOT EXISTS ${table} (
          id bigserial PRIMARY KEY, table_name text NOT NULL, row_key text NOT NULL, op text NOT NULL,
          incoming_lsn pg_lsn NOT NULL, incoming_seq integer NOT NULL, stored_lsn pg_lsn, stored_seq integer,
          change jsonb NOT NULL, rejected_at timestamptz NOT NULL DEFAULT now())`;
}

/** Records `rejected` (upserts the gate refused) with the version the target holds. */
export async function auditStale(c: pg.ClientBase, table: string, target: TargetTable, keyColumns: string[], rejected: ChangeEvent[]): Promise<void> {
  const k = keyColumns.length;
  const params: unknown[] = keyColumns.map((col) => rejected.map((r) => r.key[col] ?? null));
  params.push(rejected.map((r) => rowKeyOf(r)), rejected.map((r) => r.commit_lsn), rejected.map((r) => r.seq), rejected.map((r) => r.op), rejected.map((r) => JSON.stringify(r)), target.label);
  await c.query(
    `INSERT INTO ${table} (table_name, row_key, op, incoming_lsn, incoming_seq, stored_lsn, stored_seq, change)
     SELECT $${k + 6}, i.row_key, i.op, i.v_lsn::pg_lsn, i.v_seq, t.${quoteIdent(VERSION_LSN_COLUMN)}, t.${quoteIdent(VERSION_SEQ_COLUMN)}, i.change::jsonb
       FROM unnest(${[...keyColumns.map((_, j) => `$${j + 1}::text[]`), `$${k + 1}::text[]`, `$${k + 2}::text[]`, `$${k + 3}::int[]`, `$${k + 4}::text[]`, `$${k + 5}::text[]`].join(', ')})
            AS i(${[...keyColumns.map((_, j) => `k${j}`), 'row_key', 'v_lsn', 'v_seq', 'op', 'change'].join(', ')})
       LEFT JOIN ${target.qualified} t ON ${keyMatch(target, keyColumns)}`,
    params,
  );
}
