import type pg from 'pg';
import { formatLsn, parseLsn, type Lsn } from '../core/lsn.js';
import { SchemaVersionHistory, type ColumnType, type SchemaVersionEntry, type SchemaVersionRegistry } from '../core/schema-version.js';
import type { RecordedColumn, TableDefinition } from '../core/schema-evolution.js';
import { quoteIdent, quoteQualified, type TableName } from '../core/sql.js';
import { serializedDdl, STATE_DDL_LOCK } from '../postgres/serialized-ddl.js';
import { definitionAt } from '../core/ddl-history.js';
import { historyBefore } from './ddl-history.js';
import { hasRelation, type StateFacts } from './state-facts.js';

/** The table's name in the state schema. */
export const SCHEMA_VERSIONS_TABLE = 'schema_versions';
/** Columns that prepare() adds to a table created by an older version (the table is in place with them). */
const ADDED_COLUMNS = ['columns'];

/**
 * The `columns` of a recorded definition, one RecordedColumn per column in order: the type
 * (format_type) from the Relation message's oid and modifier; attnum, NOT NULL and primary
 * key membership from the DDL history ($11: the columns as definitionAt found them, exact at
 * the definition's LSN), else from the catalog by name as it is when the definition is
 * recorded (a column renamed or dropped since then has attnum null; a new column that took
 * a dropped one's name since then is taken for it: the limit the DDL history removes, see
 * README "Schema evolution at the sink").
 */
const RECORDED_COLUMNS = `coalesce((SELECT jsonb_agg(jsonb_build_object('name', c.name, 'type', format_type(c.oid, c.typmod), 'type_oid', c.oid, 'typmod', c.typmod,
      'attnum', CASE WHEN $11::jsonb IS NULL THEN a.attnum ELSE (h.col->>'attnum')::int END,
      'not_null', CASE WHEN $11::jsonb IS NULL THEN coalesce(a.attnotnull, false) ELSE (h.col->>'not_null')::boolean END,
      'key', CASE WHEN $11::jsonb IS NULL THEN coalesce(a.attnum = ANY(i.indkey), false) ELSE (h.col->>'key')::boolean END) ORDER BY c.ord)
    FROM unnest($7::text[], $8::oid[], $9::int[]) WITH ORDINALITY AS c(name, oid, typmod, ord)
    LEFT JOIN pg_attribute a ON a.attrelid = to_regclass($10) AND a.attname = c.name AND a.attnum > 0 AND NOT a.attisdropped
    LEFT JOIN pg_index i ON i.indrelid = a.attrelid AND i.indisprimary
    CROSS JOIN LATERAL (SELECT $11::jsonb -> (c.ord::int - 1) AS col) h), '[]'::jsonb)`;

/**
 * `_schema_version` kept in the source database (`<state_schema>.schema_versions`, one row
 * per table definition and slot), so that versions survive restarts and failovers: every
 * capture of the slot loads them at start and records the definitions it sees first.
 */
export class SchemaVersionStore implements SchemaVersionRegistry {
  private readonly table: string;
  private history = new SchemaVersionHistory();
  /** The chain of inserts; a failed insert fails every later `stored()`. */
  private writes: Promise<void> = Promise.resolve();
  private readonly listeners: ((entry: SchemaVersionEntry) => void)[] = [];
  /** The source's DDL history table exists (ddl-history.ts): attnums are looked up there first. */
  private ddlHistory = false;

  constructor(private readonly client: pg.ClientBase, private readonly schema: string, private readonly slot: string) {
    this.table = quoteQualified(schema, SCHEMA_VERSIONS_TABLE);
  }

  /**
   * Creates the table unless it exists (and adds the columns added since), under the state
   * DDL lock. With `facts` (state-facts.ts) that show it in place, nothing is run.
   */
  async prepare(facts?: StateFacts): Promise<void> {
    if (facts && hasRelation(facts, SCHEMA_VERSIONS_TABLE, ADDED_COLUMNS)) return;
    await serializedDdl(this.client, STATE_DDL_LOCK, async () => {
      await this.client.query(`CREATE SCHEMA IF NOT EXISTS ${quoteIdent(this.schema)}`);
      await this.client.query(`CREATE TABLE IF NOT EXISTS ${this.table} (
        slot_name text NOT NULL,
        table_schema text NOT NULL,
        table_name text NOT NULL,
        version integer NOT NULL,
        signature text NOT NULL,
        first_lsn pg_lsn NOT NULL,
        recorded_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (slot_name, table_schema, table_name, version))`);
      // Added later: the definition's columns, [{name, type, type_oid, typmod, attnum, not_null, key}]
      // (type: format_type text), for `syncline schemas` and schema evolution at the sink.
      await this.client.query(`ALTER TABLE ${this.table} ADD COLUMN IF NOT EXISTS columns jsonb`);
      // A column added here joins ADDED_COLUMNS, or a table without it is taken as in place.
    });
  }

  /** Looks definitions up in the DDL history from now on (installDdlHistory succeeded). */
  useDdlHistory(): void {
    this.ddlHistory = true;
  }

  /** Reads the recorded definitions; call once before capture starts. */
  async load(): Promise<void> {
    const { rows } = await this.client.query<{ table_schema: string; table_name: string; version: number; signature: string; first_lsn: string }>(
      `SELECT table_schema, table_name, version, signature, first_lsn::text FROM ${this.table} WHERE slot_name = $1`,
      [this.slot],
    );
    const entries: SchemaVersionEntry[] = rows.map((r) => ({ schema: r.table_schema, table: r.table_name, version: r.version, signature: r.signature, lsn: parseLsn(r.first_lsn) }));
    this.history = new SchemaVersionHistory(entries, (e) => this.record(e));
  }

  versionOf(schema: string, table: string, columns: readonly ColumnType[], lsn: Lsn): number {
    return this.history.versionOf(schema, table, columns, lsn);
  }

  stored(): Promise<void> {
    return this.writes;
  }

  listen(listener: (entry: SchemaVersionEntry) => void): void {
    this.listeners.push(listener);
  }

  private record(e: SchemaVersionEntry): void {
    for (const l of this.listeners) l(e);
    // Only the slot's leader (leader-lock.ts) writes, after loading: a row is never contested.
    // The columns' type names come from format_type; attnum, NOT NULL and the primary key from
    // the DDL history at the definition's LSN, else from the catalog as it is when recorded.
    this.writes = this.writes.then(async () => {
      const cols = e.columns ?? [];
      const known = this.ddlHistory && cols.length > 0 ? definitionAt(await historyBefore(this.client, this.schema, e, e.lsn), cols) : undefined;
      await this.client.query(
        `INSERT INTO ${this.table} (slot_name, table_schema, table_name, version, signature, first_lsn, columns)
         SELECT $1, $2, $3, $4, $5, $6::pg_lsn, ${RECORDED_COLUMNS}
         ON CONFLICT (slot_name, table_schema, table_name, version) DO NOTHING`,
        [this.slot, e.schema, e.table, e.version, e.signature, formatLsn(e.lsn), cols.map((c) => c.name), cols.map((c) => c.typeOid), cols.map((c) => c.typeMod), quoteQualified(e.schema, e.table), known ? JSON.stringify(known) : null],
      );
    });
    // Reported through stored(); not an unhandled rejection meanwhile.
    this.writes.catch(() => undefined);
  }
}

/**
 * The recorded definitions of `t`, oldest first, from the first of `slots` that has any (each
 * slot numbers its versions itself); empty when none are recorded.
 */
export async function readDefinitions(client: pg.ClientBase, stateSchema: string, slots: readonly string[], t: TableName): Promise<TableDefinition[]> {
  const { rows } = await client.query<{ slot_name: string; version: number; columns: RecordedColumn[] | null }>(
    `SELECT slot_name, version, columns FROM ${quoteQualified(stateSchema, 'schema_versions')}
      WHERE table_schema = $1 AND table_name = $2 AND slot_name = ANY($3) ORDER BY version`,
    [t.schema, t.table, slots],
  );
  const slot = slots.find((s) => rows.some((r) => r.slot_name === s));
  return rows.filter((r) => r.slot_name === slot).map((r) => ({ version: r.version, columns: r.columns ?? undefined }));
}
