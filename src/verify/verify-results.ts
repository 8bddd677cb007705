import pg from 'pg';
import { quoteIdent, quoteQualified } from '../core/sql.js';

/** What the last `syncline verify` found for one table. */
export interface VerifyResult {
  table: string;
  differing: number;
  sourceRows: number;
  targetRows: number;
  verifiedAt: Date;
}

/**
 * `syncline verify` runs in a process of its own, so its findings reach `sync_drift_rows`
 * of the long-running run/apply processes through the target database:
 * `<sink.state_schema>.verify_results`, one row per table, replaced by each verify.
 */
export async function recordVerifyResults(target: pg.ClientBase, schema: string, results: readonly Omit<VerifyResult, 'verifiedAt'>[]): Promise<void> {
  const table = quoteQualified(schema, 'verify_results');
  await target.query(`CREATE SCHEMA IF NOT EXISTS ${quoteIdent(schema)}`);
  await target.query(`CREATE TABLE IF NOT EXISTS ${table} (
    table_name text PRIMARY KEY, differing bigint NOT NULL, source_rows bigint NOT NULL, target_rows bigint NOT NULL,
    verified_at timestamptz NOT NULL DEFAULT now())`);
  await target.query(
    `INSERT INTO ${table} (table_name, differing, source_rows, target_rows)
     SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::bigint[])
     ON CONFLICT (table_name) DO UPDATE SET differing = EXCLUDED.differing, source_rows = EXCLUDED.source_rows,
       target_rows = EXCLUDED.target_rows, verified_at = now()`,
    [results.map((r) => r.table), results.map((r) => r.differing), results.map((r) => r.sourceRows), results.map((r) => r.targetRows)],
  );
}

/** The recorded results; empty when verify never ran against this target. */
export async function readVerifyResults(target: pg.ClientBase | pg.Pool, schema: string): Promise<VerifyResult[]> {
  const { rows } = await target.query<{ table_name: string; differing: string; source_rows: string; target_rows: string; verified_at: Date }>(
    `SELECT table_name, differing::text, source_rows::text, target_rows::text, verified_at
       FROM ${quoteQualified(schema, 'verify_results')}`,
  ).catch((err: unknown) => {
    if ((err as { code?: string }).code === '42P01') return { rows: [] }; // never verified
    throw err;
  });
  return rows.map((r) => ({ table: r.table_name, differing: Number(r.differing), sourceRows: Number(r.source_rows), targetRows: Number(r.target_rows), verifiedAt: r.verified_at }));
}
