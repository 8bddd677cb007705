import { tableLabelOf, type ChangeEvent } from '../../core/change.js';
import type { PoolConnection, RowDataPacket } from 'mysql2/promise';
import { PrerequisiteError, SynclineError } from '../../core/errors.js';
import { CLOCK_COLUMN, DELETED_AT_COLUMN, SOURCE_COLUMN, VERSION_LSN_COLUMN, VERSION_SEQ_COLUMN } from '../sql/bookkeeping.js';
import { decimalLiteral, integerLiteral, isPgByteaHex, pgBoolToDigit, pgByteaToBuffer, pgTextToJson, pgTimestampToUtc } from '../pg-text.js';

/** Backtick-quotes a MySQL identifier (embedded backticks doubled). */
export function quoteMysqlIdent(name: string): string {
  return `\`${name.replace(/`/g, '``')}\``;
}

/**
 * How a change event value (PostgreSQL text output) becomes a MySQL value, by the target
 * column's type. See README "Sinks" for the table.
 */
export type ValueKind = 'text' | 'integer' | 'decimal' | 'bit' | 'datetime' | 'binary' | 'json';

export interface MysqlColumn {
  name: string;
  kind: ValueKind;
  /** information_schema DATA_TYPE, lower case (`varchar`, `float`, ...); absent when unknown. */
  type?: string;
  /** Character set of a character column (`utf8mb4`, `latin1`, ...); absent for other types. */
  charset?: string;
  /** Digits after the point of a DECIMAL column; absent for other types. */
  scale?: number;
}

export interface MysqlTable {
  /** `schema.table` of the source, for bookkeeping rows and messages. */
  label: string;
  /** The table's database (undefined: the connection's) and name there. */
  database: string | undefined;
  table: string;
  /** Quoted target name, `db`.`table` or `table` (the connection's database). */
  qualified: string;
  columns: Map<string, MysqlColumn>;
  primaryKey: string[];
}

const KINDS: Record<string, ValueKind> = {
  tinyint: 'integer', smallint: 'integer', mediumint: 'integer', int: 'integer', integer: 'integer', bigint: 'integer',
  decimal: 'decimal', numeric: 'decimal', float: 'decimal', double: 'decimal', real: 'decimal',
  bit: 'bit',
  datetime: 'datetime', timestamp: 'datetime',
  binary: 'binary', varbinary: 'binary', tinyblob: 'binary', blob: 'binary', mediumblob: 'binary', longblob: 'binary',
  json: 'json',
};

/**
 * A value for an INSERT (sent as a bind parameter). MySQL converts strings to the column's
 * type exactly on assignment, so most values pass as text.
 */
/** PostgreSQL's text of the numeric and float values MySQL has no number for. */
const NOT_A_NUMBER = new Set(['NaN', 'Infinity', '-Infinity']);

export function toMysqlParam(column: MysqlColumn, text: string | null): string | number | Buffer | null {
  if (text === null) return null;
  switch (column.kind) {
    case 'integer':
      return pgBoolToDigit(text);
    case 'decimal':
      // MySQL's DECIMAL, FLOAT and DOUBLE hold no NaN or infinity: named here as the value it
      // is (SINK_VALUE), not left to the server's "Incorrect decimal value" (errno 1366).
      if (NOT_A_NUMBER.has(text)) throw new SynclineError('SINK_VALUE', `column ${column.name}: ${text} has no ${(column.type ?? 'number').toUpperCase()} value at a MySQL target`, { retriable: false });
      if (column.type === 'float') return singleFloat(text);
      if (column.scale !== undefined) checkScale(column, text);
      return pgBoolToDigit(text);
    case 'bit': {
      // A string assigned to BIT is taken as bytes ('1' = 0x31): send a number.
      const digits = pgBoolToDigit(text);
      const n = /^[01]+$/.test(digits) && digits.length > 1 ? parseInt(digits, 2) : Number(digits);
      return Number.isSafeInteger(n) ? n : text;
    }
    case 'datetime':
      return pgTimestampToUtc(text, column.name);
    case 'binary':
      return isPgByteaHex(text) ? pgByteaToBuffer(text) : Buffer.from(text, 'utf8');
    case 'json':
      return pgTextToJson(text);
    case 'text':
      return text;
  }
}

/**
 * A `real` for a FLOAT column, as the exact value of the single it is. PostgreSQL prints the
 * shortest text that reads back as the same single (`3.4028235e+38` for the largest), which
 * as a double is above FLT_MAX: MariaDB refused it (out of range) where the single fits.
 */
function singleFloat(text: string): string {
  const n = Number(text);
  return Number.isFinite(n) && text.trim() !== '' ? String(Math.fround(n)) : text;
}

/**
 * A DECIMAL(p,s) rounds a value with more than `s` digits after the point with only a note
 * (strict mode too: 1265 "Data truncated"), so such a value is refused here: the change goes
 * to the dead-letter queue with the reason instead of reaching the target altered. (Too many
 * digits before the point is an error of the server's own.) Trailing zeros lose nothing.
 */
function checkScale(column: MysqlColumn, text: string): void {
  const point = text.indexOf('.');
  // (PostgreSQL prints numeric without an exponent; a float's text is left to the server.)
  if (point < 0 || text.includes('e') || text.includes('E')) return;
  let end = text.length;
  while (end > point + 1 && text.charCodeAt(end - 1) === 48) end--;
  const digits = end - point - 1;
  if (digits > (column.scale as number)) {
    const shown = text.length > 80 ? `${text.slice(0, 80)}…` : text;
    throw new SynclineError(
      'SINK_VALUE',
      `column ${column.name}: ${shown} has ${digits} digits after the point; the target's DECIMAL keeps ${column.scale as number} and would round it silently (widen the column, or make it text)`,
      { retriable: false },
    );
  }
}

/**
 * A key value for a WHERE comparison. Numbers go into the SQL text as validated literals:
 * MySQL compares an integer column with a string parameter as doubles, which cannot tell
 * apart keys above 2^53. Everything else is a bind parameter ('?').
 */
export function keyComparand(column: MysqlColumn, text: string | null, params: unknown[]): string {
  if (text === null) return 'NULL';
  switch (column.kind) {
    case 'integer':
      return integerLiteral(pgBoolToDigit(text));
    case 'decimal':
      return decimalLiteral(text);
    default:
      params.push(toMysqlParam(column, text));
      return '?';
  }
}

/**
 * The condition "this row has `change`'s key". Key values are compared as constants
 * (numbers as literals, see `keyComparand`), so MySQL compares them in the column's type;
 * parameters are appended to `params` in text order.
 */
export function keyMatch(target: MysqlTable, keyColumns: string[], change: ChangeEvent, params: unknown[]): string {
  return keyColumns
    .map((col) => {
      const v = keyComparand(target.columns.get(col) as MysqlColumn, change.key[col] ?? null, params);
      return v === 'NULL' ? `${quoteMysqlIdent(col)} IS NULL` : `${quoteMysqlIdent(col)} = ${v}`;
    })
    .join(' AND ');
}

/**
 * A NULL-safe SQL condition "the stored `column` holds exactly `text`", for finding one row of
 * a keyless table by its whole image (parameters appended to `params` in text order).
 * Character columns are compared as bytes in the column's character set as well, so a
 * case- or accent-insensitive or PAD SPACE collation cannot match a different value ('a'
 * vs 'A', 'a' vs 'a '); `CHAR(n)` drops trailing spaces on read, so the value is compared
 * without them. Floats are compared in the column's precision (a FLOAT holds 0.1 as a
 * single, which no double literal equals); integers and decimals as exact literals.
 */
export function rowMatch(column: MysqlColumn, text: string | null, params: unknown[]): string {
  const col = quoteMysqlIdent(column.name);
  if (text === null) return `${col} IS NULL`;
  const value = toMysqlParam(column, text);
  switch (column.kind) {
    case 'integer':
    case 'decimal':
      if (column.type === 'float' || column.type === 'double' || column.type === 'real') {
        params.push(value);
        return `${col} = CAST(? AS ${column.type === 'float' ? 'FLOAT' : 'DOUBLE'})`;
      }
      return `${col} = ${keyComparand(column, text, params)}`;
    case 'json':
      if (column.type === 'json') {
        // MySQL's native JSON compares as JSON values, not as text.
        params.push(value);
        return `${col} = CAST(? AS JSON)`;
      }
      break;
    default:
      break;
  }
  params.push(value);
  if (column.charset === undefined || typeof value !== 'string') return `${col} = ?`;
  const cs = column.charset.replace(/[^A-Za-z0-9_]/g, '');
  params.push(value);
  const bytes = column.type === 'char' ? `TRIM(TRAILING ' ' FROM CONVERT(? USING ${cs}))` : `CONVERT(? USING ${cs})`;
  return `(${col} = ? AND CAST(${col} AS BINARY) = CAST(${bytes} AS BINARY))`;
}

/** Where a source table lives on the target: `public` → the URL's database, else the database named like the schema. */
export function targetDatabase(schema: string): string | undefined {
  return schema === 'public' ? undefined : schema;
}

/**
 * The first character of `name` that MariaDB and MySQL identifiers cannot hold, or undefined:
 * they hold the Basic Multilingual Plane but U+0000 (an emoji is outside it). Such a name
 * failed deep in a catalog query with a collation error (information_schema is utf8mb3),
 * which named neither the cause nor the fix.
 */
export function unholdableIdentifierChar(name: string): string | undefined {
  for (const ch of name) {
    const cp = ch.codePointAt(0) ?? 0;
    if (cp === 0 || cp > 0xffff) return ch;
  }
  return undefined;
}

/** A PrerequisiteError (the table is held, like a missing one) when the target's name cannot exist on MySQL. */
export function assertMysqlTableName(label: string, database: string | undefined, table: string): void {
  for (const name of [database, table]) {
    const ch = name === undefined ? undefined : unholdableIdentifierChar(name);
    if (ch === undefined) continue;
    const code = `U+${(ch.codePointAt(0) ?? 0).toString(16).toUpperCase().padStart(4, '0')}`;
    throw new PrerequisiteError(
      `target table ${label} cannot exist in the MySQL sink: MariaDB and MySQL identifiers cannot hold ${JSON.stringify(ch)} (${code}), only characters of the Basic Multilingual Plane`,
      `route the table to a name they can hold with sink.tables (${JSON.stringify(label)}: { target: ... }); its changes wait in order until then`,
    );
  }
}

/**
 * Reads a target table's columns and primary key, adding syncline's version columns (and
 * `_deleted_at` for soft deletes, the writer columns for conflict tracking) when missing.
 * ALTER TABLE commits implicitly in MySQL, so this runs outside the batch transaction.
 */
export async function loadMysqlTable(conn: PoolConnection, schema: string, table: string, softDelete = false, writerColumns = false): Promise<MysqlTable> {
  const database = targetDatabase(schema);
  const qualified = database === undefined ? quoteMysqlIdent(table) : `${quoteMysqlIdent(database)}.${quoteMysqlIdent(table)}`;
  const label = tableLabelOf({ schema, table });
  assertMysqlTableName(label, database, table);
  let meta = await readTable(conn, database, table, label, qualified);
  if (!meta) {
    throw new PrerequisiteError(
      `target table ${label} does not exist in the MySQL sink database${database === undefined ? '' : ` ${database}`}`,
      `create ${qualified} on the target with the source's columns and primary key (a keyless source table: its columns, without a unique key; source schema public maps to the sink URL's database, other schemas to the database of the same name)`,
    );
  }
  const wanted = [VERSION_LSN_COLUMN, VERSION_SEQ_COLUMN, ...(softDelete ? [DELETED_AT_COLUMN] : []), ...(writerColumns ? [SOURCE_COLUMN, CLOCK_COLUMN] : [])];
  const missing = wanted.filter((c) => !meta?.columns.has(c));
  if (missing.length > 0) {
    // DATETIME(6), not TIMESTAMP: no 2038 limit, and the session's UTC time zone is stored as
    // is. The writer's clock (its source commit time, UTC) too: microseconds like PostgreSQL's
    // timestamptz, and it compares as a time, which text would only do in one fixed format.
    // (No writer xid column: MySQL rows have no xmin to compare it with.)
    const defs = {
      [VERSION_LSN_COLUMN]: 'BIGINT UNSIGNED NULL',
      [VERSION_SEQ_COLUMN]: 'INT NULL',
      [DELETED_AT_COLUMN]: 'DATETIME(6) NULL',
      [SOURCE_COLUMN]: 'VARCHAR(255) NULL',
      [CLOCK_COLUMN]: 'DATETIME(6) NULL',
    } as Record<string, string>;
    try {
      await conn.query(`ALTER TABLE ${qualified} ${missing.map((c) => `ADD COLUMN ${quoteMysqlIdent(c)} ${defs[c]}`).join(', ')}`);
    } catch (err) {
      // 1060 duplicate column: another apply process added it first.
      if ((err as { errno?: unknown }).errno !== 1060) throw err;
    }
    meta = await readTable(conn, database, table, label, qualified);
    if (!meta) throw new Error(`target table ${label} vanished`);
  }
  return meta;
}

interface ColumnRow extends RowDataPacket {
  name: string;
  data_type: string;
  column_key: string;
  charset: string | null;
  scale: number | string | null;
}

async function readTable(conn: PoolConnection, database: string | undefined, table: string, label: string, qualified: string): Promise<MysqlTable | undefined> {
  const [rows] = await conn.query<ColumnRow[]>(
    `SELECT COLUMN_NAME AS name, LOWER(DATA_TYPE) AS data_type, COLUMN_KEY AS column_key, CHARACTER_SET_NAME AS charset, NUMERIC_SCALE AS scale
       FROM information_schema.COLUMNS
      WHERE TABLE_SCHEMA = COALESCE(?, DATABASE()) AND TABLE_NAME = ?
      ORDER BY ORDINAL_POSITION`,
    [database ?? null, table],
  );
  if (rows.length === 0) return undefined;
  const json = await mariadbJsonColumns(conn, database, table);
  const columns = new Map<string, MysqlColumn>();
  const primaryKey: string[] = [];
  for (const r of rows) {
    const column: MysqlColumn = { name: r.name, kind: json.has(r.name) ? 'json' : (KINDS[r.data_type] ?? 'text'), type: r.data_type };
    if (r.charset !== null && r.charset !== '') column.charset = r.charset;
    if ((r.data_type === 'decimal' || r.data_type === 'numeric') && r.scale !== null) column.scale = Number(r.scale);
    columns.set(r.name, column);
    if (r.column_key === 'PRI') primaryKey.push(r.name);
  }
  return { label, database, table, qualified, columns, primaryKey };
}

interface CheckRow extends RowDataPacket {
  clause: string;
}

/**
 * MariaDB's JSON type is LONGTEXT with a `json_valid(col)` CHECK constraint; find those
 * columns. (MySQL reports DATA_TYPE json and its CHECK_CONSTRAINTS lacks TABLE_NAME, so the
 * query fails there and nothing is added.)
 */
async function mariadbJsonColumns(conn: PoolConnection, database: string | undefined, table: string): Promise<Set<string>> {
  const out = new Set<string>();
  try {
    const [rows] = await conn.query<CheckRow[]>(
      'SELECT CHECK_CLAUSE AS clause FROM information_schema.CHECK_CONSTRAINTS WHERE CONSTRAINT_SCHEMA = COALESCE(?, DATABASE()) AND TABLE_NAME = ?',
      [database ?? null, table],
    );
    for (const r of rows) {
      const m = /^json_valid\(`((?:[^`]|``)+)`\)$/i.exec(r.clause.trim());
      if (m?.[1]) out.add(m[1].replace(/``/g, '`'));
    }
  } catch {
    // Not MariaDB.
  }
  return out;
}

interface ColumnTypeRow extends RowDataPacket {
  name: string;
  column_type: string;
  is_nullable: string;
}

/** The target table's columns with their full types (`varchar(20)`, `int(11)`) and nullability. */
export async function mysqlColumnTypes(conn: PoolConnection, target: MysqlTable): Promise<ColumnTypeRow[]> {
  const [rows] = await conn.query<ColumnTypeRow[]>(
    `SELECT COLUMN_NAME AS name, COLUMN_TYPE AS column_type, IS_NULLABLE AS is_nullable FROM information_schema.COLUMNS
      WHERE TABLE_SCHEMA = COALESCE(?, DATABASE()) AND TABLE_NAME = ?`,
    [target.database ?? null, target.table],
  );
  return rows;
}

/** A COLUMN_TYPE as mysqlTypeFor spells it: lower case, without integer display widths. */
export function normalizeMysqlType(columnType: string): string {
  return columnType.toLowerCase().replace(/^(tinyint|smallint|mediumint|int|bigint)\(\d+\)/, '$1');
}

/**
 * The MySQL type of a column syncline adds or widens for a source column (`format_type`
 * text); see README "Schema evolution at the sink" for the table.
 */
export function mysqlTypeFor(pgType: string): string {
  const simple: Record<string, string> = {
    smallint: 'smallint', integer: 'int', bigint: 'bigint', boolean: 'tinyint', real: 'float', 'double precision': 'double',
    numeric: 'decimal(65,30)', text: 'longtext', 'character varying': 'longtext', date: 'date', bytea: 'longblob', json: 'json', jsonb: 'json', uuid: 'char(36)',
  };
  const known = simple[pgType];
  if (known) return known;
  let m = /^numeric\((\d+),(\d+)\)$/.exec(pgType);
  // DECIMAL holds at most 65 digits, 30 after the point: a wider numeric made CREATE TABLE
  // fail (ER_TOO_BIG_PRECISION/SCALE), and with it every change of the table; its text fits.
  if (m) return Number(m[1]) <= 65 && Number(m[2]) <= 30 ? `decimal(${m[1]},${m[2]})` : 'longtext';
  m = /^character varying\((\d+)\)$/.exec(pgType);
  if (m) return `varchar(${m[1]})`;
  m = /^character\((\d+)\)$/.exec(pgType);
  if (m) return `char(${m[1]})`;
  if (pgType.startsWith('timestamp')) return 'datetime(6)';
  if (pgType.startsWith('time')) return 'time(6)';
  return 'longtext';
}
