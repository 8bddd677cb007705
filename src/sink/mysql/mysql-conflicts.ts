import mysql, { type RowDataPacket } from 'mysql2/promise';
import { formatLsn } from '../../core/lsn.js';
import { firstPresent } from '../../core/table-arg.js';
import type { RecordedConflictRow } from '../conflicts/recorded-conflict.js';
import { quoteMysqlIdent as q } from './mysql-table.js';

/**
 * The newest `limit` conflicts a MySQL sink recorded in `<stateSchema>_conflicts` of the
 * URL's database (of the first of `tables`, `schema.table` labels best first, that has conflicts, when
 * given: see tableArgLabels), newest first; empty when
 * the table does not exist (no conflict was ever tracked there).
 */
export async function readMysqlConflicts(url: string, stateSchema: string, filter: { tables?: readonly string[]; limit: number }): Promise<RecordedConflictRow[]> {
  const c = await mysql.createConnection({ uri: url, supportBigNumbers: true, bigNumberStrings: true, dateStrings: true, charset: 'utf8mb4', connectTimeout: 10_000 });
  try {
    const name = `${stateSchema}_conflicts`;
    const [exists] = await c.query<RowDataPacket[]>('SELECT 1 FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ?', [name]);
    if (exists.length === 0) return [];
    let table: string | undefined;
    if (filter.tables !== undefined) {
      if (filter.tables.length === 0) return [];
      const [recorded] = await c.query<(RowDataPacket & { t: string })[]>(`SELECT DISTINCT table_name AS t FROM ${q(name)} WHERE table_name IN (?)`, [filter.tables]);
      table = firstPresent(filter.tables, new Set(recorded.map((r) => r.t)));
      if (table === undefined) return [];
    }
    // detected_at is the sink session's UTC time.
    const [rows] = await c.query<(RowDataPacket & Omit<RecordedConflictRow, 'incoming_version' | 'stored_version' | 'written'> & { incoming_version: string | null; stored_version: string | null; written: string | null })[]>(
      `SELECT CAST(id AS CHAR) AS id, DATE_FORMAT(detected_at, '%Y-%m-%d %H:%i:%s.%f+00') AS detected_at, table_name, row_key, strategy, winner,
              incoming_source, stored_source, CAST(incoming_lsn AS CHAR) AS incoming_lsn, incoming_clock, stored_clock, incoming_version, stored_version, written
         FROM ${q(name)} WHERE (? IS NULL OR table_name = ?) ORDER BY id DESC LIMIT ?`,
      [table ?? null, table ?? null, filter.limit],
    );
    const json = (text: string | null): unknown => (text === null ? null : (JSON.parse(text) as unknown));
    return rows.map((r) => ({
      id: r.id,
      detected_at: r.detected_at,
      table_name: r.table_name,
      row_key: r.row_key,
      strategy: r.strategy,
      winner: r.winner,
      incoming_source: r.incoming_source,
      stored_source: r.stored_source,
      incoming_lsn: formatLsn(BigInt(r.incoming_lsn)),
      incoming_clock: r.incoming_clock,
      stored_clock: r.stored_clock,
      incoming_version: json(r.incoming_version),
      stored_version: json(r.stored_version),
      written: json(r.written),
    }));
  } finally {
    await c.end().catch(() => undefined);
  }
}
