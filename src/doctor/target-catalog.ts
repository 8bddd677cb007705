import Database from 'better-sqlite3';
import mysql from 'mysql2/promise';
import { errorMessage } from '../core/errors.js';
import { quoteIdent, quoteQualified, type TableName } from '../core/sql.js';
import { connectPostgres, describeClient, serverVersion } from '../ops/connect.js';
import { quoteSqliteIdent, sqlitePathOf, sqliteTableName } from '../sink/sqlite/sqlite-sink.js';

/** A target table as doctor compares it with its source table. */
export interface TargetTableShape {
  /** Primary key columns in key order; empty when the table has none. */
  readonly primaryKey: readonly string[];
  /** The primary key constraint's name, where the dialect names it (postgres). */
  readonly primaryKeyName: string | null;
  readonly columns: readonly string[];
  /** Columns the target computes itself (generated there); a SQLite table's are not listed at all. */
  readonly generated?: readonly string[];
  /**
   * Key columns under a collation that calls different texts equal (case- or
   * accent-insensitive, or PAD SPACE): two source keys could share one target row (mysql).
   */
  readonly looseKeys?: readonly { column: string; type: string; collation: string }[];
}

/**
 * The target database, read-only, as doctor needs it: a table's key and columns, and the SQL
 * a user runs to fix each mismatch, in the target's own dialect (each sink names and quotes
 * its tables as the sink does: see the sinks' table naming).
 */
export interface TargetCatalog {
  /** `user@host:port/db (Server version)` or the file: never a password. */
  readonly description: string;
  /** What sets the sink to create a missing table itself. */
  readonly createsTablesWith: string;
  /** The table as written in this dialect's SQL. */
  qualified(name: TableName): string;
  /** Column names quoted in this dialect, comma-separated. */
  quoteList(columns: readonly string[]): string;
  describeTable(name: TableName): Promise<TargetTableShape | undefined>;
  addPrimaryKey(name: TableName, columns: readonly string[], replacing?: TargetTableShape): string;
  dropPrimaryKey(name: TableName, shape: TargetTableShape): string;
  addColumns(name: TableName, columns: readonly string[]): string;
  close(): Promise<void>;
}

/** Opens the catalog of a postgres, mysql or sqlite sink; throws with the driver's message when unreachable. */
export async function openTargetCatalog(type: 'postgres' | 'mysql' | 'sqlite', url: string): Promise<TargetCatalog> {
  switch (type) {
    case 'postgres':
      return postgresCatalog(url);
    case 'mysql':
      return mysqlCatalog(url);
    case 'sqlite':
      return sqliteCatalog(url);
  }
}

const list = (quote: (name: string) => string, columns: readonly string[]): string => columns.map(quote).join(', ');

async function postgresCatalog(url: string): Promise<TargetCatalog> {
  const client = await connectPostgres({ connectionString: url });
  const description = `${describeClient(client)} (PostgreSQL ${await serverVersion(client).catch(() => '?')})`;
  const qualified = (n: TableName): string => quoteQualified(n.schema, n.table);
  const constraint = (shape: TargetTableShape): string => (shape.primaryKeyName === null ? '<its primary key constraint>' : quoteIdent(shape.primaryKeyName));
  return {
    description,
    createsTablesWith: 'sink.create_tables: true',
    qualified,
    quoteList: (columns) => list(quoteIdent, columns),
    async describeTable(name) {
      const { rows } = await client.query<{ pk: string[] | null; pk_name: string | null; columns: string[] | null; generated: string[] | null }>(
        `SELECT (SELECT conname::text FROM pg_constraint WHERE conrelid = c.oid AND contype = 'p') AS pk_name,
                (SELECT array_agg(a.attname::text ORDER BY array_position(i.indkey::int2[], a.attnum))
                   FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
                  WHERE i.indrelid = c.oid AND i.indisprimary) AS pk,
                (SELECT array_agg(a.attname::text ORDER BY a.attnum) FROM pg_attribute a
                  WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped) AS columns,
                (SELECT array_agg(a.attname::text) FROM pg_attribute a
                  WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated <> '') AS generated
           FROM pg_class c WHERE c.oid = to_regclass($1) AND c.relkind IN ('r', 'p')`,
        [qualified(name)],
      );
      const r = rows[0];
      return r && { primaryKey: r.pk ?? [], primaryKeyName: r.pk_name, columns: r.columns ?? [], generated: r.generated ?? [] };
    },
    addPrimaryKey: (name, columns, replacing) =>
      `ALTER TABLE ${qualified(name)} ${replacing ? `DROP CONSTRAINT ${constraint(replacing)}, ` : ''}ADD PRIMARY KEY (${list(quoteIdent, columns)});`,
    dropPrimaryKey: (name, shape) => `ALTER TABLE ${qualified(name)} DROP CONSTRAINT ${constraint(shape)};`,
    addColumns: (name, columns) => `ALTER TABLE ${qualified(name)} ${columns.map((c) => `ADD COLUMN ${quoteIdent(c)} <type as at the source>`).join(', ')};`,
    close: () => client.end().catch(() => undefined),
  };
}

const mysqlQuote = (name: string): string => `\`${name.replace(/`/g, '``')}\``;

async function mysqlCatalog(url: string): Promise<TargetCatalog> {
  const conn = await mysql.createConnection({ uri: url, connectTimeout: 5000 });
  conn.on('error', () => undefined);
  const [[server]] = await conn.query<mysql.RowDataPacket[]>('SELECT VERSION() AS version, DATABASE() AS db, CURRENT_USER() AS user');
  const database = String(server?.['db'] ?? '');
  const u = new URL(url);
  const description = `${decodeURIComponent(u.username) || '?'}@${u.hostname}:${u.port || '3306'}/${database || '?'} (MySQL ${String(server?.['version'] ?? '?')})`;
  // The mysql sink's naming: schema `public` is the URL's database, another schema the database of its name.
  const databaseOf = (n: TableName): string => (n.schema === 'public' ? database : n.schema);
  const qualified = (n: TableName): string => (n.schema === 'public' ? mysqlQuote(n.table) : `${mysqlQuote(n.schema)}.${mysqlQuote(n.table)}`);
  return {
    description,
    createsTablesWith: 'sink.schema_evolution: full',
    qualified,
    quoteList: (columns) => list(mysqlQuote, columns),
    async describeTable(name) {
      const [columns] = await conn.query<mysql.RowDataPacket[]>(
        `SELECT COLUMN_NAME AS name, COLUMN_TYPE AS type, DATA_TYPE AS data_type, COLLATION_NAME AS collation,
                COALESCE(GENERATION_EXPRESSION, '') <> '' AS is_generated
           FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? ORDER BY ORDINAL_POSITION`,
        [databaseOf(name), name.table],
      );
      if (columns.length === 0) return undefined;
      const [key] = await conn.query<mysql.RowDataPacket[]>(
        `SELECT COLUMN_NAME AS name FROM information_schema.KEY_COLUMN_USAGE
          WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? AND CONSTRAINT_NAME = 'PRIMARY' ORDER BY ORDINAL_POSITION`,
        [databaseOf(name), name.table],
      );
      const primaryKey = key.map((r) => String(r['name']));
      const looseKeys = columns
        .filter((r) => primaryKey.includes(String(r['name'])) && r['collation'] !== null && !exactCollation(String(r['collation']), String(r['data_type'])))
        .map((r) => ({ column: String(r['name']), type: String(r['type']), collation: String(r['collation']) }));
      const generated = columns.filter((r) => Number(r['is_generated']) === 1).map((r) => String(r['name']));
      return { primaryKey, primaryKeyName: null, columns: columns.map((r) => String(r['name'])), generated, looseKeys };
    },
    addPrimaryKey: (name, columns, replacing) => `ALTER TABLE ${qualified(name)} ${replacing ? 'DROP PRIMARY KEY, ' : ''}ADD PRIMARY KEY (${list(mysqlQuote, columns)});`,
    dropPrimaryKey: (name) => `ALTER TABLE ${qualified(name)} DROP PRIMARY KEY;`,
    addColumns: (name, columns) => `ALTER TABLE ${qualified(name)} ${columns.map((c) => `ADD COLUMN ${mysqlQuote(c)} <type as at the source>`).join(', ')};`,
    close: () => conn.end().catch(() => undefined),
  };
}

/**
 * Whether a MySQL / MariaDB collation tells every two different texts apart: binary, and NO
 * PAD (MariaDB's `utf8mb4_bin` is PAD SPACE: 'b' = 'b '; `utf8mb4_nopad_bin` and MySQL 8's
 * `utf8mb4_0900_bin` are not). CHAR(n) pads by its type anyway, as a source char(n) does.
 */
function exactCollation(collation: string, dataType: string): boolean {
  if (!collation.endsWith('_bin')) return false;
  return dataType === 'char' || collation.includes('nopad') || collation.includes('0900');
}

function sqliteCatalog(url: string): TargetCatalog {
  const file = sqlitePathOf(url);
  let db: Database.Database;
  try {
    // Read-only, and the file must exist: doctor creates nothing (the sink creates the file on its first run).
    db = new Database(file, { readonly: true, fileMustExist: true, timeout: 5000 });
  } catch (err) {
    throw new Error(`cannot open SQLite file ${file}: ${errorMessage(err)} (the sink creates it on its first run)`);
  }
  const qualified = (n: TableName): string => quoteSqliteIdent(sqliteTableName(n.schema, n.table));
  // SQLite cannot add or drop a primary key in place: the table is rebuilt.
  const rebuild = (name: TableName, key: string): string =>
    `rebuild ${qualified(name)} ${key} (SQLite cannot change a primary key in place: CREATE TABLE new ..., INSERT INTO new SELECT ... FROM old, DROP TABLE old, ALTER TABLE new RENAME TO ...)`;
  return {
    description: `${file} (SQLite ${String((db.prepare('SELECT sqlite_version() AS v').get() as { v: string }).v)})`,
    createsTablesWith: 'sink.schema_evolution: full',
    qualified,
    quoteList: (columns) => list(quoteSqliteIdent, columns),
    async describeTable(name) {
      const rows = db.prepare('SELECT name, pk FROM pragma_table_info(?)').all(sqliteTableName(name.schema, name.table)) as { name: string; pk: number | bigint }[];
      if (rows.length === 0) return undefined;
      const primaryKey = rows.filter((r) => Number(r.pk) > 0).sort((a, b) => Number(a.pk) - Number(b.pk)).map((r) => r.name);
      return { primaryKey, primaryKeyName: null, columns: rows.map((r) => r.name) };
    },
    addPrimaryKey: (name, columns) => rebuild(name, `with PRIMARY KEY (${list(quoteSqliteIdent, columns)})`),
    dropPrimaryKey: (name) => rebuild(name, 'without its primary key'),
    addColumns: (name, columns) => columns.map((c) => `ALTER TABLE ${qualified(name)} ADD COLUMN ${quoteSqliteIdent(c)} <type as at the source>;`).join(' '),
    close: async () => {
      db.close();
    },
  };
}
