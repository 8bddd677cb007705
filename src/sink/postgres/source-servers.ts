import type pg from 'pg';
import { quoteIdent, quoteQualified, type TableName } from '../../core/sql.js';
import { tableLabel } from '../../core/table-mapping.js';
import { serializedDdl, STATE_DDL_LOCK } from '../../postgres/serialized-ddl.js';
import { bookkeepingTables, SOURCE_COLUMN, VERSION_LSN_COLUMN, VERSION_SEQ_COLUMN } from '../sql/bookkeeping.js';

/**
 * `<state_schema>.source_servers`: per source (`source.name`) and consumer group (whose
 * positions the sink keeps next to it), the system identifier of the PostgreSQL cluster whose
 * LSNs the target's row versions, tombstones and watermarks hold. The group too: pipelines of
 * other clusters may share a source name (the default, the slot's) while they write other
 * tables of one target; each has its own group.
 * Why: a source moved to another cluster (dump/restore, a new server) starts its WAL at
 * another, often lower, position, and the version gate would then take all its changes of
 * rows the old cluster wrote for stale, silently and for good. Apply compares the source's
 * identifier with this one before it starts (compose/source-server.ts); `syncline resync`
 * resets the versions and records the new one.
 */
export const SOURCE_SERVERS_TABLE = 'source_servers';

/** Whose record: the source's name (`source.name`) and the consumer group (`consumer.group_id`). */
export interface SourcePipeline {
  source: string;
  group: string;
}

function serversTable(stateSchema: string): string {
  return quoteQualified(stateSchema, SOURCE_SERVERS_TABLE);
}

async function createServersTable(c: pg.ClientBase, stateSchema: string): Promise<void> {
  await serializedDdl(c, STATE_DDL_LOCK, async () => {
    await c.query(`CREATE SCHEMA IF NOT EXISTS ${quoteIdent(stateSchema)}`);
    await c.query(`CREATE TABLE IF NOT EXISTS ${serversTable(stateSchema)} (
      source text NOT NULL, group_id text NOT NULL, system_identifier text NOT NULL,
      recorded_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (source, group_id))`);
  });
}

/**
 * The identifier the target's versions of `source` were written under; records `current`
 * and returns it when none was recorded yet (a first start, or a target of a syncline that
 * did not record it: the source then is taken for the one the rows came from).
 */
export async function recordedServer(c: pg.ClientBase, stateSchema: string, pipeline: SourcePipeline, current: string): Promise<string> {
  await createServersTable(c, stateSchema);
  const { source, group } = pipeline;
  await c.query(`INSERT INTO ${serversTable(stateSchema)} (source, group_id, system_identifier) VALUES ($1, $2, $3) ON CONFLICT (source, group_id) DO NOTHING`, [source, group, current]);
  const { rows } = await c.query<{ id: string }>(`SELECT system_identifier AS id FROM ${serversTable(stateSchema)} WHERE source = $1 AND group_id = $2`, [source, group]);
  return rows[0]?.id ?? current;
}

/**
 * Re-bases the target on another cluster of `source`: the rows of `tables` it wrote lose
 * their version (counted as oldest, as rows syncline never wrote: the next change or
 * snapshot row of the new cluster applies), their tombstones and watermarks go, and
 * `current` becomes the recorded identifier. One transaction: a failure leaves the old
 * record, so apply keeps refusing. Returns the rows reset.
 */
export async function rebaseVersions(c: pg.ClientBase, stateSchema: string, pipeline: SourcePipeline, current: string, tables: readonly TableName[]): Promise<number> {
  await createServersTable(c, stateSchema);
  const { source, group } = pipeline;
  const state = bookkeepingTables((t) => quoteQualified(stateSchema, t));
  let reset = 0;
  await c.query('BEGIN');
  try {
    for (const t of tables) {
      const qualified = quoteQualified(t.schema, t.table);
      const { rows } = await c.query<{ col: string }>(
        `SELECT attname AS col FROM pg_attribute WHERE attrelid = to_regclass($1) AND attname = ANY($2::text[]) AND NOT attisdropped`,
        [qualified, [VERSION_LSN_COLUMN, SOURCE_COLUMN]],
      );
      const cols = new Set(rows.map((r) => r.col));
      if (!cols.has(VERSION_LSN_COLUMN)) continue;
      // With conflict tracking a row may be another source's version: those stay.
      const mine = cols.has(SOURCE_COLUMN) ? ` AND ${quoteIdent(SOURCE_COLUMN)} = $1` : ' AND $1::text IS NOT NULL';
      const res = await c.query(
        `UPDATE ${qualified} SET ${quoteIdent(VERSION_LSN_COLUMN)} = NULL, ${quoteIdent(VERSION_SEQ_COLUMN)} = NULL WHERE ${quoteIdent(VERSION_LSN_COLUMN)} IS NOT NULL${mine}`,
        [source],
      );
      reset += res.rowCount ?? 0;
      const label = tableLabel(t);
      for (const table of [state.tombstones, state.truncations, state.multisetVersions]) await deleteIfExists(c, table, 'table_name = $1', [label]);
      for (const table of [state.sourceTombstones, state.sourceTruncations, state.sourceMultisetVersions]) await deleteIfExists(c, table, 'table_name = $1 AND source = $2', [label, source]);
    }
    await c.query(
      `INSERT INTO ${serversTable(stateSchema)} (source, group_id, system_identifier) VALUES ($1, $2, $3)
       ON CONFLICT (source, group_id) DO UPDATE SET system_identifier = EXCLUDED.system_identifier, recorded_at = now()`,
      [source, group, current],
    );
    await c.query('COMMIT');
  } catch (err) {
    await c.query('ROLLBACK').catch(() => undefined);
    throw err;
  }
  return reset;
}

/** A bookkeeping table exists only once the sink (or its conflict tracking) made it. */
async function deleteIfExists(c: pg.ClientBase, table: string, where: string, params: unknown[]): Promise<void> {
  const { rows } = await c.query<{ oid: string | null }>('SELECT to_regclass($1)::oid::text AS oid', [table]);
  if (rows[0]?.oid) await c.query(`DELETE FROM ${table} WHERE ${where}`, params);
}
