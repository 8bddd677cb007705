import Database from 'better-sqlite3';
import { quoteLiteral, type TableName } from '../../core/sql.js';
import { isPgByteaHex, pgBoolToDigit, pgByteaToBuffer, pgTextToJson, pgTimestampToUtc } from '../../sink/pg-text.js';
import { sqlitePathOf, sqliteTableName } from '../../sink/sqlite/sqlite-sink.js';
import type { VerifyColumn, VerifyShape } from '../shape.js';
import type { TargetValue } from './source-text.js';
import { keyIndexes, keyOf, resultOf, rowDigest, rowTargetLive, scansOf, sourceTexts, type RowTarget } from './target.js';

const q = (name: string): string => `"${name.replace(/"/g, '""')}"`;
const qualified = (t: TableName): string => q(sqliteTableName(t.schema, t.table));
const INT64 = 1n << 63n;
/** Keys per `IN (...)` lookup of a single-column key. */
const IN_BATCH = 500;

/**
 * A source key value (PostgreSQL text) as the sqlite sink stored it (by declared type, as in
 * src/sink/sqlite/sqlite-sink.ts toSqliteValue), for an `=` lookup.
 */
function keyParam(c: VerifyColumn, text: string): string | bigint | Buffer {
  const t = c.targetType.toUpperCase();
  if (t.includes('INT') || t.includes('BOOL')) {
    const digits = pgBoolToDigit(text);
    if (!/^-?\d+$/.test(digits)) return digits;
    const n = BigInt(digits);
    return n < INT64 && n >= -INT64 ? n : digits;
  }
  if (t.includes('BLOB') || t.includes('BYTEA')) return isPgByteaHex(text) ? pgByteaToBuffer(text) : Buffer.from(text, 'utf8');
  if (t.includes('JSON')) return pgTextToJson(text);
  if (t.includes('TIMESTAMP') || t.includes('DATETIME')) return /[+-]\d\d(:?\d\d)*$/.test(text) ? pgTimestampToUtc(text) : text;
  return text;
}

/**
 * SQLite target (better-sqlite3, its own handle on the sink's file; WAL mode, so reading does
 * not block apply). Integers come back as bigint (exact past 2^53), reals as numbers, blobs
 * as bytes, the rest as the text stored; turned back into source text in Node
 * (source-text.ts). Key lookups are one prepared `=` statement per key: in-process, there is
 * no round trip to batch away.
 */
export function openSqliteTarget(url: string): RowTarget {
  const db = new Database(sqlitePathOf(url), { fileMustExist: true, timeout: 5000 });
  db.defaultSafeIntegers(true);
  const live = (shape: VerifyShape): string => rowTargetLive(shape, q, quoteLiteral);
  const select = (cols: readonly VerifyColumn[]): string => cols.map((c) => q(c.to)).join(', ');
  const state = (stateSchema: string, name: string): string => q(`${stateSchema}_${name}`);
  const statements = new Map<string, Database.Statement>();
  const cached = (sql: string): Database.Statement => {
    let stmt = statements.get(sql);
    if (!stmt) {
      stmt = db.prepare(sql).raw(true);
      statements.set(sql, stmt);
    }
    return stmt;
  };
  const noTable = (err: unknown): boolean => err instanceof Error && /no such table/i.test(err.message);

  return {
    type: 'sqlite',
    columns: async (t) => {
      // table_xinfo lists generated columns too (hidden 2: virtual, 3: stored); table_info leaves them out.
      const rows = db
        .prepare('SELECT name, type, hidden IN (2, 3) FROM pragma_table_xinfo(?) WHERE hidden <> 1 ORDER BY cid')
        .raw(true)
        .all(sqliteTableName(t.schema, t.table)) as [string, string, number][];
      if (rows.length === 0) return undefined;
      return { types: new Map(rows.map(([n, type]) => [n, type.toLowerCase()])), generated: new Set(rows.filter(([, , g]) => g === 1).map(([n]) => n)) };
    },
    readKeys: async (shape, keys) => {
      const out = new Map<string, string>();
      const at = keyIndexes(shape);
      const wanted = new Set(keys.map((c) => c.key));
      const from = `SELECT ${select(shape.columns)} FROM ${qualified(shape.target)} WHERE ${live(shape)} AND`;
      const take = (rows: TargetValue[][]): void => {
        for (const row of rows) {
          const texts = sourceTexts(shape, row);
          const { key } = keyOf(at, texts);
          // A NOCASE or RTRIM column collation may call other keys equal: keep exact matches only.
          if (wanted.has(key)) out.set(key, rowDigest(texts));
        }
      };
      const [single] = shape.key;
      if (shape.key.length === 1 && single) {
        // One `IN (...)` of up to 500 keys per call: a third of the cost of a lookup per key.
        for (let i = 0; i < keys.length; i += IN_BATCH) {
          const batch = keys.slice(i, i + IN_BATCH);
          const stmt = cached(`${from} ${q(single.to)} IN (${batch.map(() => '?').join(', ')})`);
          take(stmt.all(...batch.map((c) => keyParam(single, c.values[0] ?? ''))) as TargetValue[][]);
        }
        return out;
      }
      const stmt = cached(`${from} ${shape.key.map((c) => `${q(c.to)} = ?`).join(' AND ')}`);
      for (const c of keys) take(stmt.all(...shape.key.map((k, j) => keyParam(k, c.values[j] ?? ''))) as TargetValue[][]);
      return out;
    },
    // The statement stays open between pages (a WAL read snapshot); nothing else uses this handle meanwhile.
    ...scansOf((shape, columns) => db.prepare(`SELECT ${select(columns)} FROM ${qualified(shape.target)} WHERE ${live(shape)}`).raw(true).iterate() as IterableIterator<TargetValue[]>),
    positions: async (stateSchema, group) => {
      try {
        const rows = db.prepare(`SELECT stream_partition, next_offset FROM ${state(stateSchema, 'positions')} WHERE group_id = ?`).raw(true).all(group) as [bigint, bigint][];
        return new Map(rows.map(([p, o]) => [Number(p), BigInt(o)]));
      } catch (err) {
        if (noTable(err)) return new Map(); // the sink never ran here
        throw err;
      }
    },
    recordResults: async (stateSchema, results) => {
      const table = state(stateSchema, 'verify_results');
      db.exec(`CREATE TABLE IF NOT EXISTS ${table} (
        table_name TEXT NOT NULL PRIMARY KEY, differing INTEGER NOT NULL, source_rows INTEGER NOT NULL, target_rows INTEGER NOT NULL,
        verified_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%d %H:%M:%f', 'now')))`);
      const put = db.prepare(
        `INSERT INTO ${table} (table_name, differing, source_rows, target_rows) VALUES (?, ?, ?, ?)
         ON CONFLICT (table_name) DO UPDATE SET differing = excluded.differing, source_rows = excluded.source_rows,
           target_rows = excluded.target_rows, verified_at = strftime('%Y-%m-%d %H:%M:%f', 'now')`,
      );
      db.transaction(() => {
        for (const r of results) put.run(r.table, r.differing, r.sourceRows, r.targetRows);
      })();
    },
    readResults: async (stateSchema) => {
      try {
        const rows = db.prepare(`SELECT table_name, differing, source_rows, target_rows, verified_at FROM ${state(stateSchema, 'verify_results')}`).raw(true).all() as [string, bigint, bigint, bigint, string][];
        return rows.map(resultOf);
      } catch (err) {
        if (noTable(err)) return []; // never verified
        throw err;
      }
    },
    close: async () => {
      statements.clear();
      db.close();
    },
  };
}
