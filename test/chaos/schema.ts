/**
 * The chaos workload's tables, chosen to stress identity and types:
 * - `comp`: a composite key declared in another order than its columns (PRIMARY KEY (b, a));
 * - `keyless`: no key, REPLICA IDENTITY FULL (a multiset; duplicate rows on purpose);
 * - `toast`: a wide value (> 2 kB, STORAGE EXTERNAL so it is never compressed inline) that
 *   most updates leave unchanged, and key changes under it;
 * - `items`: the table large transactions write, with columns x1..x4 added by
 *   ALTER TABLE in the middle of a streamed transaction (pre-created at the target).
 * Each column has a kind, which says how its text is normalized before source and target are
 * compared (a MySQL DATETIME(6) and a PostgreSQL timestamptz print the same instant differently).
 */
export type Kind = 'int' | 'text' | 'num' | 'bool' | 'ts';

export interface Column {
  name: string;
  kind: Kind;
  pg: string;
  mysql: string;
  sqlite: string;
}

export interface TableSpec {
  name: string;
  columns: Column[];
  /** Primary key in declaration order; empty for a keyless table. */
  key: string[];
  /** Columns only the target has from the start (the source adds them by DDL later). */
  addedLater: string[];
}

const col = (name: string, kind: Kind, pg: string, mysql: string, sqlite: string): Column => ({ name, kind, pg, mysql, sqlite });

export const X_COLUMNS = ['x1', 'x2', 'x3', 'x4'];

export const TABLES: TableSpec[] = [
  {
    name: 'comp',
    columns: [
      col('a', 'int', 'integer NOT NULL', 'INT NOT NULL', 'INTEGER NOT NULL'),
      col('b', 'text', 'varchar(40) NOT NULL', 'VARCHAR(40) NOT NULL', 'TEXT NOT NULL'),
      col('v', 'int', 'integer', 'INT', 'INTEGER'),
      col('note', 'text', 'text', 'TEXT', 'TEXT'),
      col('ts', 'ts', 'timestamptz', 'DATETIME(6)', 'TIMESTAMP'),
      col('flag', 'bool', 'boolean', 'TINYINT(1)', 'BOOLEAN'),
    ],
    key: ['b', 'a'],
    addedLater: [],
  },
  {
    name: 'keyless',
    columns: [col('g', 'int', 'integer', 'INT', 'INTEGER'), col('v', 'text', 'text', 'TEXT', 'TEXT'), col('n', 'num', 'numeric(12,3)', 'DECIMAL(12,3)', 'TEXT')],
    key: [],
    addedLater: [],
  },
  {
    name: 'toast',
    columns: [col('id', 'int', 'integer NOT NULL', 'INT NOT NULL', 'INTEGER NOT NULL'), col('small', 'int', 'integer', 'INT', 'INTEGER'), col('big', 'text', 'text', 'LONGTEXT', 'TEXT')],
    key: ['id'],
    addedLater: [],
  },
  {
    name: 'items',
    columns: [
      col('id', 'int', 'bigint NOT NULL', 'BIGINT NOT NULL', 'INTEGER NOT NULL'),
      col('grp', 'int', 'integer', 'INT', 'INTEGER'),
      col('val', 'text', 'text', 'TEXT', 'TEXT'),
      col('amount', 'num', 'numeric(12,3)', 'DECIMAL(12,3)', 'TEXT'),
      col('flag', 'bool', 'boolean', 'TINYINT(1)', 'BOOLEAN'),
      col('ts', 'ts', 'timestamptz', 'DATETIME(6)', 'TIMESTAMP'),
      ...X_COLUMNS.map((x) => col(x, 'text', 'text', 'TEXT', 'TEXT')),
    ],
    key: ['id'],
    addedLater: X_COLUMNS,
  },
];

export function tableSpec(name: string): TableSpec {
  const t = TABLES.find((x) => x.name === name);
  if (!t) throw new Error(`unknown chaos table ${name}`);
  return t;
}

const q = (s: string): string => `"${s}"`;
const bq = (s: string): string => `\`${s}\``;

/** Source DDL (PostgreSQL): the tables without their later columns. */
export function sourceDdl(tables: TableSpec[]): string {
  return tables
    .map((t) => {
      const cols = t.columns.filter((c) => !t.addedLater.includes(c.name)).map((c) => `${q(c.name)} ${c.pg}`);
      if (t.key.length > 0) cols.push(`PRIMARY KEY (${t.key.map(q).join(', ')})`);
      let ddl = `CREATE TABLE ${q(t.name)} (${cols.join(', ')});`;
      if (t.key.length === 0) ddl += ` ALTER TABLE ${q(t.name)} REPLICA IDENTITY FULL;`;
      if (t.name === 'toast') ddl += ` ALTER TABLE ${q(t.name)} ALTER COLUMN big SET STORAGE EXTERNAL;`;
      return ddl;
    })
    .join('\n');
}

/**
 * Target DDL for a PostgreSQL sink: every column (also those the source adds later), the
 * version columns the sink would add, and an audit trigger recording every row version
 * written (insert or update), so a version written twice shows up as a duplicate.
 * The audit key of a keyless row is the whole row.
 */
export function postgresTargetDdl(tables: TableSpec[]): string {
  const parts = [
    `CREATE TABLE chaos_audit (tbl text NOT NULL, row_key text, op text NOT NULL, lsn pg_lsn, seq integer, at timestamptz NOT NULL DEFAULT clock_timestamp());`,
    `CREATE FUNCTION chaos_audit() RETURNS trigger LANGUAGE plpgsql AS $$
     DECLARE k text;
     BEGIN
       IF TG_NARGS = 0 THEN k := (to_jsonb(NEW) - '_syncline_lsn' - '_syncline_seq')::text;
       ELSE SELECT string_agg(to_jsonb(NEW)->>a, '|') INTO k FROM unnest(TG_ARGV) a; END IF;
       INSERT INTO chaos_audit (tbl, row_key, op, lsn, seq) VALUES (TG_TABLE_NAME, k, left(TG_OP, 1), NEW._syncline_lsn, NEW._syncline_seq);
       RETURN NEW;
     END $$;`,
  ];
  for (const t of tables) {
    const cols = t.columns.map((c) => `${q(c.name)} ${c.pg}`);
    if (t.key.length > 0) cols.push(`PRIMARY KEY (${t.key.map(q).join(', ')})`);
    cols.push('_syncline_lsn pg_lsn', '_syncline_seq integer');
    parts.push(`CREATE TABLE ${q(t.name)} (${cols.join(', ')});`);
    parts.push(`CREATE TRIGGER chaos_audit AFTER INSERT OR UPDATE ON ${q(t.name)} FOR EACH ROW EXECUTE FUNCTION chaos_audit(${t.key.map((k) => `'${k}'`).join(', ')});`);
  }
  return parts.join('\n');
}

/**
 * Target DDL for MariaDB/MySQL, one statement per entry. An `INSERT … ON DUPLICATE KEY
 * UPDATE` fires the update trigger even when the version gate keeps the old values, so the
 * update trigger records only when the row's version changed: a replay that writes an older
 * version over a newer one still shows up (the older version twice).
 */
export function mysqlTargetDdl(tables: TableSpec[]): string[] {
  const out = ['CREATE TABLE chaos_audit (tbl VARCHAR(64) NOT NULL, row_key LONGTEXT, op CHAR(1) NOT NULL, lsn BIGINT UNSIGNED, seq INT)'];
  for (const t of tables) {
    const cols = t.columns.map((c) => `${bq(c.name)} ${c.mysql}`);
    if (t.key.length > 0) cols.push(`PRIMARY KEY (${t.key.map(bq).join(', ')})`);
    cols.push('_syncline_lsn BIGINT UNSIGNED NULL', '_syncline_seq INT NULL');
    out.push(`CREATE TABLE ${bq(t.name)} (${cols.join(', ')}) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4`);
    const keyCols = t.key.length > 0 ? t.key : t.columns.map((c) => c.name);
    const key = (row: string): string => `CONCAT_WS('|', ${keyCols.map((k) => `IFNULL(CAST(${row}.${bq(k)} AS CHAR), '<null>')`).join(', ')})`;
    out.push(`CREATE TRIGGER ${bq(`chaos_ai_${t.name}`)} AFTER INSERT ON ${bq(t.name)} FOR EACH ROW INSERT INTO chaos_audit VALUES ('${t.name}', ${key('NEW')}, 'I', NEW._syncline_lsn, NEW._syncline_seq)`);
    out.push(
      `CREATE TRIGGER ${bq(`chaos_au_${t.name}`)} AFTER UPDATE ON ${bq(t.name)} FOR EACH ROW BEGIN IF NOT (NEW._syncline_lsn <=> OLD._syncline_lsn AND NEW._syncline_seq <=> OLD._syncline_seq) THEN INSERT INTO chaos_audit VALUES ('${t.name}', ${key('NEW')}, 'U', NEW._syncline_lsn, NEW._syncline_seq); END IF; END`,
    );
  }
  return out;
}

/** Target DDL for SQLite (its upsert's WHERE gate fires no trigger for a stale change). */
export function sqliteTargetDdl(tables: TableSpec[]): string {
  const parts = ['CREATE TABLE chaos_audit (tbl TEXT NOT NULL, row_key TEXT, op TEXT NOT NULL, lsn INTEGER, seq INTEGER);'];
  for (const t of tables) {
    // SQLite wants table constraints after every column.
    const cols = [...t.columns.map((c) => `${q(c.name)} ${c.sqlite}`), '_syncline_lsn INTEGER', '_syncline_seq INTEGER'];
    if (t.key.length > 0) cols.push(`PRIMARY KEY (${t.key.map(q).join(', ')})`);
    parts.push(`CREATE TABLE ${q(t.name)} (${cols.join(', ')});`);
    const keyCols = t.key.length > 0 ? t.key : t.columns.map((c) => c.name);
    const key = keyCols.map((k) => `coalesce(CAST(NEW.${q(k)} AS TEXT), '<null>')`).join(` || '|' || `);
    for (const [ev, op] of [['INSERT', 'I'], ['UPDATE', 'U']] as const) {
      parts.push(`CREATE TRIGGER ${q(`chaos_${op}_${t.name}`)} AFTER ${ev} ON ${q(t.name)} BEGIN INSERT INTO chaos_audit VALUES ('${t.name}', ${key}, '${op}', NEW._syncline_lsn, NEW._syncline_seq); END;`);
    }
  }
  return parts.join('\n');
}

/** A value's text, normalized by its column's kind, so equal values compare equal across sinks. */
export function normalize(kind: Kind, v: unknown): string | null {
  if (v === null || v === undefined) return null;
  let s = Buffer.isBuffer(v) ? v.toString('utf8') : String(v);
  switch (kind) {
    case 'bool':
      return s === 't' || s === 'true' || s === '1' ? '1' : s === 'f' || s === 'false' || s === '0' ? '0' : `?${s}`;
    case 'ts': {
      const m = /^(\d{4}-\d\d-\d\d)[ T](\d\d:\d\d:\d\d)(?:\.(\d{1,6}))?(?:Z|[+-]00(?::?00)?)?$/.exec(s);
      if (!m) return `?${s}`;
      return `${m[1]} ${m[2]}.${(m[3] ?? '').padEnd(6, '0')}`;
    }
    case 'int':
      s = s.trim();
      return s;
    default:
      return s;
  }
}
