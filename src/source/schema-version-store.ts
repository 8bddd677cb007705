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

  private record(e: SchemaVersionEntry): void {
    // Only the slot's leader (leader-lock.ts) writes, after loading: a row is never contested.
    this.writes = this.writes.then(async () => {
      await this.client.query(
        `INSERT INTO ${this.table} (slot_name, table_schema, table_name, version, signature, first_lsn) VALUES ($1, $2, $3, $4, $5, $6::pg_lsn)
         ON CONFLICT (slot_name, table_schema, table_name, version) DO NOTHING`,
        [this.slot, e.schema, e.table, e.version, e.signature, formatLsn(e.lsn)],
      );
    });
    // Reported through stored(); not an unhandled rejection meanwhile.
    this.writes.catch(() => undefined);
  }
}
