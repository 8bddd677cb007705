import { createConnection } from 'mysql2';
import type { RowDataPacket } from 'mysql2/promise';
import { tableLabelOf } from '../../core/change.js';
import type { TableName } from '../../core/sql.js';
import { assertMysqlTableName } from '../../sink/mysql/mysql-table.js';
import { decimalLiteral, integerLiteral, isPgByteaHex, pgBoolToDigit, pgByteaToBuffer, pgTextToJson, pgTimestampToUtc } from '../../sink/pg-text.js';
import type { VerifyColumn, VerifyShape } from '../shape.js';
import type { TargetValue } from './source-text.js';
import { keyIndexes, keyOf, resultOf, rowDigest, rowTargetLive, scansOf, sourceTexts, type RowTarget } from './target.js';

/** Keys per `IN (...)` lookup: one round trip per this many source rows. */
const LOOKUP_BATCH = 2000;

const q = (name: string): string => `\`${name.replace(/`/g, '``')}\``;

/** The mysql sink's naming: schema `public` is the URL's database, another schema the database of its name. */
function qualified(t: TableName): string {
  return t.schema === 'public' ? q(t.table) : `${q(t.schema)}.${q(t.table)}`;
}

const INTEGER_TYPES = new Set(['tinyint', 'smallint', 'mediumint', 'int', 'integer', 'bigint', 'bit']);
const DECIMAL_TYPES = new Set(['decimal', 'numeric']);
const DATETIME_TYPES = new Set(['datetime', 'timestamp']);
const BINARY_TYPES = new Set(['binary', 'varbinary', 'tinyblob', 'blob', 'mediumblob', 'longblob']);

/**
 * A source key value (PostgreSQL text) as the mysql sink stored it, for `WHERE key IN (...)`:
 * integers and decimals as validated literals (a string parameter would be compared as a
 * double, which cannot tell BIGINT keys above 2^53 apart), the rest as parameters converted
 * as the sink converts them (src/sink/mysql/mysql-table.ts toMysqlParam).
 */
function comparand(c: VerifyColumn, text: string, params: unknown[]): string {
  const type = c.targetType;
  if (INTEGER_TYPES.has(type)) return integerLiteral(pgBoolToDigit(text));
  if (DECIMAL_TYPES.has(type)) return decimalLiteral(text);
  if (DATETIME_TYPES.has(type)) params.push(pgTimestampToUtc(text));
  else if (BINARY_TYPES.has(type)) params.push(isPgByteaHex(text) ? pgByteaToBuffer(text) : Buffer.from(text, 'utf8'));
  else if (type === 'json') params.push(pgTextToJson(text));
  else params.push(text);
  return '?';
}

/**
 * MySQL / MariaDB target (one connection). Values come back as the server's text (dates,
 * decimals, BIGINT and JSON as strings; binary columns and BIT as bytes; other integers and
 * floats as numbers parsed from the server's shortest round-trip text) and are turned back
 * into source text in Node (source-text.ts). The session runs in UTC, as the sink's, so
 * TIMESTAMP columns read back what was written.
 */
export async function openMysqlTarget(url: string): Promise<RowTarget> {
  const core = createConnection({
    uri: url,
    rowsAsArray: true,
    dateStrings: true,
    supportBigNumbers: true,
    bigNumberStrings: true,
    jsonStrings: true,
    charset: 'utf8mb4',
    connectTimeout: 10_000,
    // mysql2 parses a DOUBLE's text by its own arithmetic, not always to the nearest double
    // ('90.33333333333333' read as 90.33333333333331): verify called rows stored exactly
    // different (red team, 18 of 277). Number() of the server's text is exact.
    typeCast: (field, next) => {
      if (field.type !== 'DOUBLE' && field.type !== 'FLOAT') return next();
      const text = field.string();
      return text === null ? null : Number(text);
    },
  });
  core.on('error', () => undefined);
  const conn = core.promise();
  try {
    await conn.connect();
  } catch (err) {
    core.destroy();
    throw err;
  }
  // The key scan streams one result set while the source is asked about each page.
  await conn.query("SET SESSION time_zone = '+00:00', SESSION net_write_timeout = 3600");
  // A string literal under either backslash mode (NO_BACKSLASH_ESCAPES or not): at worst a mismatch, never an escape.
  const live = (shape: VerifyShape): string => rowTargetLive(shape, q, (v) => `'${v.replace(/\\/g, '\\\\').replace(/'/g, "''")}'`);
  // FLOAT prints only 6 digits; as DOUBLE it reads back the exact single-precision value.
  const select = (columns: readonly VerifyColumn[]): string => columns.map((c) => (c.targetType === 'float' ? `CAST(${q(c.to)} AS DOUBLE)` : q(c.to))).join(', ');
  const state = (stateSchema: string, name: string): string => q(`${stateSchema}_${name}`);

  return {
    type: 'mysql',
    columns: async (t) => {
      // A name MySQL cannot hold fails its catalog query with a collation error: say why instead.
      assertMysqlTableName(tableLabelOf(t), t.schema === 'public' ? undefined : t.schema, t.table);
      // GENERATION_EXPRESSION: '' (MySQL) or NULL (MariaDB) for a column that is not generated.
      const [rows] = await conn.query<RowDataPacket[]>(
        `SELECT COLUMN_NAME, LOWER(DATA_TYPE), COALESCE(GENERATION_EXPRESSION, '') <> '' FROM information_schema.COLUMNS
          WHERE TABLE_SCHEMA = COALESCE(?, DATABASE()) AND TABLE_NAME = ? ORDER BY ORDINAL_POSITION`,
        [t.schema === 'public' ? null : t.schema, t.table],
      );
      if (rows.length === 0) return undefined;
      const columns = rows as unknown as [string, string, number | string][];
      return { types: new Map(columns.map(([n, type]) => [n, type])), generated: new Set(columns.filter(([, , g]) => Number(g) === 1).map(([n]) => n)) };
    },
    readKeys: async (shape, keys) => {
      const out = new Map<string, string>();
      const at = keyIndexes(shape);
      const wanted = new Set(keys.map((c) => c.key));
      const cols = shape.key.map((c) => q(c.to));
      for (let i = 0; i < keys.length; i += LOOKUP_BATCH) {
        const params: unknown[] = [];
        const tuples = keys.slice(i, i + LOOKUP_BATCH).map((c) => `(${shape.key.map((k, j) => comparand(k, c.values[j] ?? '', params)).join(', ')})`);
        const [rows] = await conn.query<RowDataPacket[]>(
          `SELECT ${select(shape.columns)} FROM ${qualified(shape.target)} WHERE ${live(shape)} AND (${cols.join(', ')}) IN (${tuples.join(', ')})`,
          params,
        );
        for (const row of rows as unknown as TargetValue[][]) {
          const texts = sourceTexts(shape, row);
          const { key } = keyOf(at, texts);
          // A collation may call other keys equal ('A' = 'a', 'a ' = 'a'): keep exact matches only.
          if (wanted.has(key)) out.set(key, rowDigest(texts));
        }
      }
      return out;
    },
    // The scan streams one result set (the socket pauses while a page is checked at the source).
    ...scansOf((shape, columns) => core.query(`SELECT ${select(columns)} FROM ${qualified(shape.target)} WHERE ${live(shape)}`).stream({ highWaterMark: 1024 }) as AsyncIterable<TargetValue[]>),
    positions: async (stateSchema, group) => {
      try {
        const [rows] = await conn.query<RowDataPacket[]>(`SELECT stream_partition, CAST(next_offset AS CHAR) FROM ${state(stateSchema, 'positions')} WHERE group_id = ?`, [group]);
        return new Map((rows as unknown as [number | string, string][]).map(([p, o]) => [Number(p), BigInt(o)]));
      } catch (err) {
        if ((err as { errno?: number }).errno === 1146) return new Map(); // the sink never ran here
        throw err;
      }
    },
    recordResults: async (stateSchema, results) => {
      const table = state(stateSchema, 'verify_results');
      await conn.query(`CREATE TABLE IF NOT EXISTS ${table} (
        table_name VARCHAR(255) NOT NULL PRIMARY KEY, differing BIGINT NOT NULL, source_rows BIGINT NOT NULL, target_rows BIGINT NOT NULL,
        verified_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6)) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin`);
      if (results.length === 0) return;
      await conn.query(
        `INSERT INTO ${table} (table_name, differing, source_rows, target_rows) VALUES ${results.map(() => '(?, ?, ?, ?)').join(', ')}
         ON DUPLICATE KEY UPDATE differing = VALUES(differing), source_rows = VALUES(source_rows), target_rows = VALUES(target_rows), verified_at = CURRENT_TIMESTAMP(6)`,
        results.flatMap((r) => [r.table, r.differing, r.sourceRows, r.targetRows]),
      );
    },
    readResults: async (stateSchema) => {
      try {
        const [rows] = await conn.query<RowDataPacket[]>(`SELECT table_name, differing, source_rows, target_rows, verified_at FROM ${state(stateSchema, 'verify_results')}`);
        return (rows as unknown as [string, string, string, string, string][]).map(resultOf);
      } catch (err) {
        if ((err as { errno?: number }).errno === 1146) return []; // never verified
        throw err;
      }
    },
    close: async () => {
      await conn.end().catch(() => undefined);
    },
  };
}
