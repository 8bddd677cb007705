import type pg from 'pg';
import { formatLsn, parseLsn, type Lsn } from '../core/lsn.js';
import { SchemaVersionHistory, type ColumnType, type SchemaVersionEntry, type SchemaVersionRegistry } from '../core/schema-version.js';
import { quoteIdent, quoteQualified } from '../core/sql.js';

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

  constructor(private readonly client: pg.ClientBase, private readonly schema: string, private readonly slot: string) {
    this.table = quoteQualified(schema, 'schema_versions');
  }

  async prepare(): Promise<void> {
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
    const columns = (e.columns ?? []).map((c) => ({ name: c.name, type_oid: c.typeOid, typmod: c.typeMod }));
    // Only the slot's leader (leader-lock.ts) writes, after loading: a row is never contested.
    // The columns' type names come from format_type; attnum, NOT NULL and the primary key from
    // the catalog as it is when recorded (just after capture met the definition).
    this.writes = this.writes.then(async () => {
      await this.client.query(
        `INSERT INTO ${this.table} (slot_name, table_schema, table_name, version, signature, first_lsn, columns)
         SELECT $1, $2, $3, $4, $5, $6::pg_lsn,
                coalesce(jsonb_agg(jsonb_build_object('name', c.name, 'type', format_type(c.type_oid, c.typmod), 'type_oid', c.type_oid, 'typmod', c.typmod,
                  'attnum', a.attnum, 'not_null', coalesce(a.attnotnull, false), 'key', coalesce(a.attnum = ANY (pk.indkey::int2[]), false)) ORDER BY c.ord), '[]'::jsonb)
           FROM ROWS FROM (jsonb_to_recordset($7::jsonb) AS (name text, type_oid oid, typmod int)) WITH ORDINALITY AS c(name, type_oid, typmod, ord)
           LEFT JOIN pg_attribute a ON a.attrelid = to_regclass(format('%I.%I', $2::text, $3::text)) AND a.attname = c.name AND NOT a.attisdropped
           LEFT JOIN pg_index pk ON pk.indrelid = a.attrelid AND pk.indisprimary
         ON CONFLICT (slot_name, table_schema, table_name, version) DO NOTHING`,
        [this.slot, e.schema, e.table, e.version, e.signature, formatLsn(e.lsn), JSON.stringify(columns)],
      );
    });
    // Reported through stored(); not an unhandled rejection meanwhile.
    this.writes.catch(() => undefined);
  }
}
