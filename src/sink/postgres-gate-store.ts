import pg from 'pg';
import { SynclineError } from '../core/errors.js';
import { isRetriablePgError } from '../core/sqlstate.js';
import { quoteIdent } from '../core/sql.js';
import type { GateStore, RowMark, RowVersion } from './version-gated-sink.js';
import { serializedDdl, STATE_DDL_LOCK } from '../postgres/serialized-ddl.js';

/** Options of PostgresGateStore. */
export interface PostgresGateStoreOptions {
  /** A PostgreSQL database for the bookkeeping (it may be the dead-letter queue's). */
  url: string;
  /** Schema of the store's tables; default `syncline_gate`. */
  schema?: string;
  /** Name of this sink, so several gated sinks can share a schema; default `default`. */
  sink?: string;
}

/**
 * A GateStore in three PostgreSQL tables (`<schema>.gate_rows`, `gate_truncations`,
 * `gate_positions`), written in one transaction per batch: marks, watermarks and positions
 * move together, and a version only ever goes up.
 */
export class PostgresGateStore implements GateStore {
  private readonly pool: pg.Pool;
  private readonly schema: string;
  private readonly sink: string;

  constructor(options: PostgresGateStoreOptions) {
    this.pool = new pg.Pool({ connectionString: options.url, max: 2 });
    // A dropped idle connection fails the next query (retried), not the process.
    this.pool.on('error', () => undefined);
    this.schema = quoteIdent(options.schema ?? 'syncline_gate');
    this.sink = options.sink ?? 'default';
  }

  async prepare(): Promise<void> {
    const s = this.schema;
    await this.run((c) =>
      serializedDdl(c, STATE_DDL_LOCK, () => c.query(`
        CREATE SCHEMA IF NOT EXISTS ${s};
        CREATE TABLE IF NOT EXISTS ${s}.gate_rows (sink text NOT NULL, table_name text NOT NULL, row_key text NOT NULL, version numeric NOT NULL, deleted boolean NOT NULL, PRIMARY KEY (sink, table_name, row_key));
        CREATE TABLE IF NOT EXISTS ${s}.gate_truncations (sink text NOT NULL, table_name text NOT NULL, version numeric NOT NULL, PRIMARY KEY (sink, table_name));
        CREATE TABLE IF NOT EXISTS ${s}.gate_positions (sink text NOT NULL, group_id text NOT NULL, partition integer NOT NULL, next_offset numeric NOT NULL, PRIMARY KEY (sink, group_id, partition));`)),
    );
  }

  async versions(rows: readonly { table: string; key: string }[]): Promise<(RowVersion | undefined)[]> {
    if (rows.length === 0) return [];
    const { rows: found } = await this.run((c) =>
      c.query<{ i: number; version: string; deleted: boolean }>(
        `SELECT q.i, r.version::text AS version, r.deleted
           FROM unnest($2::text[], $3::text[]) WITH ORDINALITY AS q(table_name, row_key, i)
           JOIN ${this.schema}.gate_rows r ON r.sink = $1 AND r.table_name = q.table_name AND r.row_key = q.row_key`,
        [this.sink, rows.map((r) => r.table), rows.map((r) => r.key)],
      ),
    );
    const out: (RowVersion | undefined)[] = new Array<RowVersion | undefined>(rows.length).fill(undefined);
    for (const r of found) out[Number(r.i) - 1] = { version: BigInt(r.version), deleted: r.deleted };
    return out;
  }

  async watermarks(tables: readonly string[]): Promise<Map<string, bigint>> {
    const { rows } = await this.run((c) =>
      c.query<{ table_name: string; version: string }>(`SELECT table_name, version::text AS version FROM ${this.schema}.gate_truncations WHERE sink = $1 AND table_name = ANY($2::text[])`, [this.sink, [...tables]]),
    );
    return new Map(rows.map((r) => [r.table_name, BigInt(r.version)]));
  }

  async commit(marks: readonly RowMark[], watermarks: ReadonlyMap<string, bigint>, positions: ReadonlyMap<number, bigint>, group: string): Promise<void> {
    const s = this.schema;
    await this.run(async (c) => {
      await c.query('BEGIN');
      try {
        if (marks.length > 0) {
          await c.query(
            `INSERT INTO ${s}.gate_rows (sink, table_name, row_key, version, deleted)
             SELECT $1, * FROM unnest($2::text[], $3::text[], $4::numeric[], $5::boolean[])
             ON CONFLICT (sink, table_name, row_key) DO UPDATE SET version = EXCLUDED.version, deleted = EXCLUDED.deleted
             WHERE gate_rows.version < EXCLUDED.version`,
            [this.sink, marks.map((m) => m.table), marks.map((m) => m.key), marks.map((m) => m.version.toString()), marks.map((m) => m.deleted)],
          );
        }
        for (const [table, version] of watermarks) {
          await c.query(
            `INSERT INTO ${s}.gate_truncations (sink, table_name, version) VALUES ($1, $2, $3::numeric)
             ON CONFLICT (sink, table_name) DO UPDATE SET version = EXCLUDED.version WHERE gate_truncations.version < EXCLUDED.version`,
            [this.sink, table, version.toString()],
          );
        }
        if (positions.size > 0) {
          await c.query(
            `INSERT INTO ${s}.gate_positions (sink, group_id, partition, next_offset)
             SELECT $1, $2, * FROM unnest($3::integer[], $4::numeric[])
             ON CONFLICT (sink, group_id, partition) DO UPDATE SET next_offset = EXCLUDED.next_offset`,
            [this.sink, group, [...positions.keys()], [...positions.values()].map(String)],
          );
        }
        await c.query('COMMIT');
      } catch (err) {
        await c.query('ROLLBACK').catch(() => undefined);
        throw err;
      }
    });
  }

  async positions(group: string): Promise<Map<number, bigint>> {
    const { rows } = await this.run((c) =>
      c.query<{ partition: number; next_offset: string }>(`SELECT partition, next_offset::text AS next_offset FROM ${this.schema}.gate_positions WHERE sink = $1 AND group_id = $2`, [this.sink, group]),
    );
    return new Map(rows.map((r) => [r.partition, BigInt(r.next_offset)]));
  }

  async close(): Promise<void> {
    await this.pool.end();
  }

  /** Runs `fn` on a pooled connection; connection losses and serialization failures are retriable. */
  private async run<T>(fn: (c: pg.PoolClient) => Promise<T>): Promise<T> {
    let client: pg.PoolClient;
    try {
      client = await this.pool.connect();
    } catch (err) {
      throw new SynclineError('GATE_STORE_UNAVAILABLE', `gate store: ${(err as Error).message}`, { retriable: true, cause: err });
    }
    try {
      return await fn(client);
    } catch (err) {
      if (err instanceof SynclineError) throw err;
      throw new SynclineError('GATE_STORE_FAILED', `gate store: ${(err as Error).message}`, { retriable: isRetriablePgError(err), cause: err });
    } finally {
      client.release();
    }
  }
}
