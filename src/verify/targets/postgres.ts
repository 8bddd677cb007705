import type pg from 'pg';
import { quoteQualified } from '../../core/sql.js';
import { isDataException, readKeys, sourceHoldable } from '../recheck.js';
import { postgresColumns, SideSql } from '../shape.js';
import { readVerifyResults, recordVerifyResults } from '../verify-results.js';
import type { VerifyTarget } from './target.js';

/** A postgres target: checksums computed in the server (checksum.ts) on `client`. */
export interface PostgresTarget extends VerifyTarget {
  readonly type: 'postgres';
  readonly client: pg.ClientBase;
}

export function isPostgresTarget(t: VerifyTarget): t is PostgresTarget {
  return t.type === 'postgres' && 'client' in t;
}

/** `owned`: close() ends the client (verify opened it); otherwise the caller's client stays open. */
export function postgresTarget(client: pg.ClientBase & { end?: () => Promise<void> }, owned = false): PostgresTarget {
  return {
    type: 'postgres',
    client,
    columns: postgresColumns(client),
    readKeys: async (shape, keys) => {
      const sql = new SideSql(shape, 'target');
      const read = await readKeys(client, sql, keys).catch(async (err: unknown) => {
        // A source key the target cannot hold (its type, or its encoding: 'œ' at a LATIN1
        // target, 22P05) fails the look-up: it is absent there, the others are asked for.
        if (!isDataException(err)) throw err;
        return readKeys(client, sql, (await sourceHoldable(client, sql, keys)).held);
      });
      return new Map([...read].map(([k, d]) => [k, d.h]));
    },
    deletedByOthers: async (shape, keys) => {
      const writer = shape.writer;
      if (!writer || keys.length === 0) return new Set();
      // Keys as the changes name them (rowKeyOf: the JSON array of the key's text), as verify's candidates do.
      const { rows } = await client.query<{ k: string }>(
        `SELECT row_key AS k FROM ${quoteQualified(writer.stateSchema, 'source_tombstones')} WHERE table_name = $1 AND row_key = ANY($2::text[]) AND source <> $3`,
        [`${shape.target.schema}.${shape.target.table}`, keys.map((c) => c.key), writer.source],
      ).catch((err: unknown) => {
        // No tombstones recorded yet (the sink creates the table with its bookkeeping).
        if ((err as { code?: unknown }).code === '42P01') return { rows: [] };
        throw err;
      });
      return new Set(rows.map((r) => r.k));
    },
    positions: async (stateSchema, group) => {
      // Written by the postgres sink in the same transaction as the rows.
      const { rows } = await client.query<{ p: number; o: string }>(
        `SELECT stream_partition AS p, next_offset::text AS o FROM ${quoteQualified(stateSchema, 'positions')} WHERE group_id = $1`,
        [group],
      );
      return new Map(rows.map((r) => [r.p, BigInt(r.o)]));
    },
    recordResults: (stateSchema, results) => recordVerifyResults(client, stateSchema, results),
    readResults: (stateSchema) => readVerifyResults(client, stateSchema),
    close: async () => {
      if (owned) await client.end?.().catch(() => undefined);
    },
  };
}
