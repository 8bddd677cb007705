import Database from 'better-sqlite3';
import mysql from 'mysql2/promise';
import pg from 'pg';
import { normalize, type Column, type TableSpec } from './schema.js';

/**
 * The harness's own comparison, independent of syncline's verify: every row of the source's
 * own columns (as the source has them now, so a column the target has in advance is left out
 * until the source adds it), normalized by column kind, compared as a multiset (duplicates
 * kept, so keyless tables compare as multisets too).
 */
export interface TableDiff {
  table: string;
  sourceRows: number;
  targetRows: number;
  missing: string[];
  extra: string[];
}

export type SinkType = 'postgres' | 'mysql' | 'sqlite';

export interface Target {
  type: SinkType;
  readRows(table: string, columns: Column[]): Promise<string[][]>;
  /** Versions written more than once (a change applied twice), at most 10. */
  doubles(): Promise<{ tbl: string; row_key: string; lsn: string; seq: number; n: number }[]>;
  auditRows(): Promise<number>;
  close(): Promise<void>;
}

export async function sourceColumns(source: pg.ClientBase, spec: TableSpec): Promise<Column[]> {
  const { rows } = await source.query<{ attname: string }>('SELECT attname FROM pg_attribute WHERE attrelid = to_regclass($1) AND attnum > 0 AND NOT attisdropped ORDER BY attnum', [spec.name]);
  const present = new Set(rows.map((r) => r.attname));
  return spec.columns.filter((c) => present.has(c.name));
}

async function readPg(c: pg.ClientBase, table: string, columns: Column[]): Promise<string[][]> {
  const list = columns.map((k) => `"${k.name}"::text`).join(', ');
  const r = await c.query<string[]>({ text: `SELECT ${list} FROM "${table}"`, rowMode: 'array' });
  return r.rows;
}

function keyOf(row: readonly unknown[], columns: Column[]): string {
  return JSON.stringify(columns.map((c, i) => normalize(c.kind, row[i])));
}

export async function diffTable(source: pg.ClientBase, target: Target, spec: TableSpec, limit = 5): Promise<TableDiff> {
  const columns = await sourceColumns(source, spec);
  const [a, b] = await Promise.all([readPg(source, spec.name, columns), target.readRows(spec.name, columns)]);
  const counts = new Map<string, number>();
  for (const r of a) {
    const k = keyOf(r, columns);
    counts.set(k, (counts.get(k) ?? 0) + 1);
  }
  for (const r of b) {
    const k = keyOf(r, columns);
    counts.set(k, (counts.get(k) ?? 0) - 1);
  }
  const missing: string[] = [];
  const extra: string[] = [];
  let missingN = 0;
  let extraN = 0;
  for (const [k, n] of counts) {
    if (n > 0) missingN += n;
    if (n < 0) extraN -= n;
    const shown = k.length > 300 ? `${k.slice(0, 300)}…(${k.length} chars)` : k;
    for (let i = 0; i < n && missing.length < limit; i++) missing.push(shown);
    for (let i = 0; i < -n && extra.length < limit; i++) extra.push(shown);
  }
  if (missingN > missing.length) missing.push(`… ${missingN} rows missing at the target in all`);
  if (extraN > extra.length) extra.push(`… ${extraN} rows only at the target in all`);
  return { table: spec.name, sourceRows: a.length, targetRows: b.length, missing, extra };
}

export function isEqual(d: TableDiff): boolean {
  return d.missing.length === 0 && d.extra.length === 0;
}

const DOUBLES_SQL = `SELECT tbl, row_key, CAST(lsn AS CHAR) AS lsn, seq, count(*) AS n FROM chaos_audit WHERE op <> 'D'
  GROUP BY tbl, row_key, lsn, seq HAVING count(*) > 1 LIMIT 10`;

export async function postgresTarget(url: string): Promise<Target> {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  await c.query("SET TimeZone = 'UTC'");
  return {
    type: 'postgres',
    readRows: (table, columns) => readPg(c, table, columns),
    doubles: async () => (await c.query(DOUBLES_SQL.replace('CAST(lsn AS CHAR)', 'lsn::text'))).rows,
    auditRows: async () => Number((await c.query<{ n: string }>('SELECT count(*) AS n FROM chaos_audit')).rows[0]?.n ?? 0),
    close: () => c.end(),
  };
}

export async function mysqlTarget(url: string): Promise<Target> {
  const c = await mysql.createConnection({ uri: url, supportBigNumbers: true, bigNumberStrings: true, dateStrings: true, charset: 'utf8mb4' });
  await c.query("SET time_zone = '+00:00'");
  return {
    type: 'mysql',
    readRows: async (table, columns) => {
      const [rows] = await c.query({ sql: `SELECT ${columns.map((k) => `CAST(\`${k.name}\` AS CHAR)`).join(', ')} FROM \`${table}\``, rowsAsArray: true });
      return rows as string[][];
    },
    doubles: async () => {
      const [rows] = await c.query(DOUBLES_SQL);
      return rows as { tbl: string; row_key: string; lsn: string; seq: number; n: number }[];
    },
    auditRows: async () => {
      const [rows] = await c.query('SELECT count(*) AS n FROM chaos_audit');
      return Number((rows as { n: string }[])[0]?.n ?? 0);
    },
    close: () => c.end(),
  };
}

export async function sqliteTarget(file: string): Promise<Target> {
  const db = new Database(file, { readonly: true, fileMustExist: true });
  db.pragma('busy_timeout = 5000');
  return {
    type: 'sqlite',
    readRows: async (table, columns) => db.prepare(`SELECT ${columns.map((k) => `CAST("${k.name}" AS TEXT)`).join(', ')} FROM "${table}"`).raw(true).all() as string[][],
    doubles: async () => db.prepare(DOUBLES_SQL.replace('CAST(lsn AS CHAR)', 'CAST(lsn AS TEXT)')).all() as { tbl: string; row_key: string; lsn: string; seq: number; n: number }[],
    auditRows: async () => Number((db.prepare('SELECT count(*) AS n FROM chaos_audit').get() as { n: number }).n),
    close: async () => {
      db.close();
    },
  };
}
