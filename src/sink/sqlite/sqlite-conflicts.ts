import { existsSync } from 'node:fs';
import Database from 'better-sqlite3';
import { formatLsn } from '../../core/lsn.js';
import { quoteSqliteIdent, sqlitePathOf } from './sqlite-table.js';

/** One conflict recorded by an SQLite sink, as `syncline conflicts list` shows it (its ConflictEntry). */
export interface SqliteConflict {
  id: number;
  detectedAt: string;
  table: string;
  key: unknown;
  strategy: string;
  winner: string;
  loser: string;
  incomingSource: string;
  storedSource: string;
  incomingLsn: string;
  incomingClock: string | null;
  storedClock: string | null;
  incoming: unknown;
  stored: unknown;
  written: unknown;
}

interface ConflictRow {
  id: bigint;
  detected_at: string;
  table_name: string;
  row_key: string;
  strategy: string;
  winner: string;
  incoming_source: string;
  stored_source: string;
  incoming_lsn: bigint;
  incoming_clock: string | null;
  stored_clock: string | null;
  incoming_version: string | null;
  stored_version: string | null;
  written: string | null;
}

/**
 * The newest `limit` conflicts recorded in the SQLite sink at `url` (`<stateSchema>_conflicts`),
 * of table `label` when given, newest first; empty when the file or the table does not exist
 * (no conflict was ever recorded). Opened read-only: WAL mode lets it read while apply writes.
 */
export function listSqliteConflicts(url: string, stateSchema: string, filter: { label?: string; limit: number }): SqliteConflict[] {
  const file = sqlitePathOf(url);
  if (file !== ':memory:' && !existsSync(file)) return [];
  const db = new Database(file, { readonly: true, fileMustExist: true });
  try {
    db.defaultSafeIntegers(true);
    const name = `${stateSchema}_conflicts`;
    if (db.prepare(`SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?`).get(name) === undefined) return [];
    const rows = db
      .prepare(
        `SELECT id, detected_at, table_name, row_key, strategy, winner, incoming_source, stored_source, incoming_lsn,
                incoming_clock, stored_clock, incoming_version, stored_version, written
           FROM ${quoteSqliteIdent(name)} WHERE (? IS NULL OR table_name = ?) ORDER BY id DESC LIMIT ?`,
      )
      .all(filter.label ?? null, filter.label ?? null, filter.limit) as ConflictRow[];
    return rows.map((r) => {
      const incomingWon = r.winner === 'incoming';
      return {
        id: Number(r.id),
        detectedAt: r.detected_at,
        table: r.table_name,
        key: JSON.parse(r.row_key) as unknown,
        strategy: r.strategy,
        winner: incomingWon ? r.incoming_source : r.stored_source,
        loser: incomingWon ? r.stored_source : r.incoming_source,
        incomingSource: r.incoming_source,
        storedSource: r.stored_source,
        incomingLsn: formatLsn(BigInt(r.incoming_lsn)),
        incomingClock: r.incoming_clock,
        storedClock: r.stored_clock,
        incoming: jsonOf(r.incoming_version),
        stored: jsonOf(r.stored_version),
        written: jsonOf(r.written),
      };
    });
  } finally {
    db.close();
  }
}

/** The versions are stored as JSON text; NULL (nothing written) stays null. */
function jsonOf(text: string | null): unknown {
  return text === null ? null : (JSON.parse(text) as unknown);
}
