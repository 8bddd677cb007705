import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import Database from 'better-sqlite3';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { describeVerification } from '../../src/cli/commands/verify.js';
import type { ChangeEvent, Row } from '../../src/core/change.js';
import { MysqlSink } from '../../src/sink/mysql/mysql-sink.js';
import { PostgresSink } from '../../src/sink/postgres/postgres-sink.js';
import type { Sink } from '../../src/sink/sink.js';
import { SqliteSink } from '../../src/sink/sqlite/sqlite-sink.js';
import { OUTPUT_SETTINGS } from '../../src/source/replication-stream.js';
import { compareTable, verifyTable } from '../../src/verify/compare.js';
import { openVerifyTarget } from '../../src/verify/targets/open.js';
import { changeAt } from '../helpers/conflict-fixtures.js';
import { freshMysqlDatabase, type MysqlTestDatabase } from '../helpers/mysql.js';
import { machinePg15, sourceAndTarget } from '../helpers/postgres.js';

/**
 * Red-team findings (third round) against verify: source domains, arrays whose elements are
 * declared otherwise, real in double precision and date in timestamp at a postgres target;
 * domains, numeric(p,s) arrays and negative zeros at mysql and sqlite targets; and the row
 * counts `verify` prints after its lag re-check. Target rows are written by the real sinks
 * from the source's rows as capture sends them; edits are made behind the sink's back.
 */

/** The source table's rows as INSERT changes, their values the text capture sends (output functions, pinned settings). */
async function changesOf(sourceUrl: string, table: string): Promise<ChangeEvent[]> {
  const raw = new pg.Client({ connectionString: sourceUrl, types: { getTypeParser: () => (v: string) => v } });
  await raw.connect();
  try {
    await raw.query(OUTPUT_SETTINGS);
    const { rows } = await raw.query<Row>(`SELECT * FROM ${table} ORDER BY 1`);
    return rows.map((r, i) => changeAt('src', 0x1000 + i * 0x10, '2026-01-01T00:00:00Z', 'INSERT', table, { id: r.id ?? null }, r));
  } finally {
    await raw.end();
  }
}

async function writeThrough(sink: Sink, changes: ChangeEvent[]): Promise<void> {
  const outcome = await sink.apply(changes, new Map(), 'g');
  expect(outcome.applied).toBe(changes.length);
}

type Outcome = string;
const keysOf = (r: { missing: string[]; extra: string[]; different: string[] }): string => [...r.different, ...r.missing, ...r.extra].sort().join(',');

describe('verify red team 3: declarations a postgres target gives otherwise (PostgreSQL 15, rows written by the postgres sink)', () => {
  let source: pg.Client;
  let target: pg.Client;
  let sourceUrl: string;
  let sink: PostgresSink;
  /** What compareTable reports after `edit` at the target (rolled back after): the keys, or the error. */
  const after = async (table: string, edit: string): Promise<Outcome> => {
    await target.query('BEGIN');
    try {
      await target.query(edit);
      return keysOf(await compareTable(source, target, { schema: 'public', table }));
    } catch (e) {
      return `error: ${(e as Error).message}`;
    } finally {
      await target.query('ROLLBACK');
    }
  };
  /** Creates `name (id int PRIMARY KEY, v <sourceType>)` at the source, `v <targetType>` at the target, 200 rows through the sink. */
  const table = async (name: string, sourceType: string, targetType: string, values: string): Promise<void> => {
    await source.query(`CREATE TABLE ${name} (id int PRIMARY KEY, v ${sourceType})`);
    await target.query(`CREATE TABLE ${name} (id int PRIMARY KEY, v ${targetType})`);
    await source.query(`INSERT INTO ${name} SELECT i, ${values} FROM generate_series(1, 200) i`);
    await writeThrough(sink, await changesOf(sourceUrl, name));
  };

  beforeAll(async () => {
    const dbs = await sourceAndTarget(await machinePg15(), 'syncline_redteam_verify3');
    ({ source, target, sourceUrl } = dbs);
    sink = new PostgresSink({ url: dbs.targetUrl, stateSchema: 'syncline', deleteMode: 'hard', versionGate: true });
    await sink.prepare();
  });

  afterAll(async () => {
    await sink?.close();
    await source?.end();
    await target?.end();
  });

  it('SQL error on equal rows: a source column of a domain the target declares as its base type (the target lacks the domain) was read at the target cast to it', async () => {
    await source.query(`CREATE DOMAIN rt3_pos AS integer CHECK (VALUE > 0); CREATE DOMAIN rt3_pos_small AS rt3_pos CHECK (VALUE < 100000); CREATE DOMAIN rt3_amount AS numeric(12,2)`);
    await table('rt3_dom', 'rt3_pos', 'integer', 'i');
    await table('rt3_dom2', 'rt3_pos_small', 'integer', 'i');
    await table('rt3_domn', 'rt3_amount', 'numeric(14,4)', 'i / 4.0');
    await table('rt3_doma', 'rt3_pos[]', 'integer[]', 'ARRAY[i, i + 1]::rt3_pos[]');
    const found = [
      `equal: ${await after('rt3_dom', 'SELECT 1')}`,
      `equal (domain of a domain): ${await after('rt3_dom2', 'SELECT 1')}`,
      `equal (domain over numeric(12,2) in numeric(14,4)): ${await after('rt3_domn', 'SELECT 1')}`,
      `equal (array of a domain): ${await after('rt3_doma', 'SELECT 1')}`,
      // A value the source's domain rejects: a differing row, not a check violation.
      `v = -5: ${await after('rt3_dom', 'UPDATE rt3_dom SET v = -5 WHERE id = 7')}`,
      `v + 0.0001: ${await after('rt3_domn', 'UPDATE rt3_domn SET v = v + 0.0001 WHERE id = 7')}`,
      `{-1}: ${await after('rt3_doma', `UPDATE rt3_doma SET v = '{-1}' WHERE id = 7`)}`,
    ];
    expect(found).toEqual([
      'equal: ',
      'equal (domain of a domain): ',
      'equal (domain over numeric(12,2) in numeric(14,4)): ',
      'equal (array of a domain): ',
      'v = -5: ["7"]',
      'v + 0.0001: ["7"]',
      '{-1}: ["7"]',
    ]);
  });

  it('missed drift: a target domain over a wider type (numeric(14,4) for numeric(12,2)) was read cast to the source type, which rounds', async () => {
    await target.query(`CREATE DOMAIN rt3_amount4 AS numeric(14,4)`);
    await table('rt3_tdom', 'numeric(12,2)', 'rt3_amount4', 'i / 4.0');
    expect([await after('rt3_tdom', 'SELECT 1'), await after('rt3_tdom', 'UPDATE rt3_tdom SET v = v + 0.0001 WHERE id = 7')]).toEqual(['', '["7"]']);
  });

  it('arrays of elements declared otherwise: varchar(4)[] in text[] and numeric(12,2)[] in numeric[] hid changed elements (read cast to the source type: cut, rounded); numeric[] in numeric(12,2)[] and json[] in jsonb[] reported every row', async () => {
    await table('rt3_av', 'varchar(4)[]', 'text[]', `ARRAY['v' || lpad(i::text, 3, '0'), NULL]`);
    await table('rt3_an', 'numeric(12,2)[]', 'numeric[]', 'ARRAY[i / 4.0, -i]');
    await table('rt3_an2', 'numeric[]', 'numeric(12,2)[]', `ARRAY[ARRAY[i / 2.0, 10, NULL], ARRAY[0.5, 'NaN', -i * 1.0]]`);
    await table('rt3_aj', 'json[]', 'jsonb[]', `ARRAY[('{ "a" : ' || i || ',  "a": 2 }')::json]`);
    const found = [
      `text[] equal: ${await after('rt3_av', 'SELECT 1')}`,
      `text[] longer element: ${await after('rt3_av', `UPDATE rt3_av SET v[1] = v[1] || 'XYZ' WHERE id = 7`)}`,
      `numeric[] equal: ${await after('rt3_an', 'SELECT 1')}`,
      `numeric[] one more decimal: ${await after('rt3_an', `UPDATE rt3_an SET v[1] = v[1] + 0.001 WHERE id = 7`)}`,
      `numeric(12,2)[] equal: ${await after('rt3_an2', 'SELECT 1')}`,
      `numeric(12,2)[] changed: ${await after('rt3_an2', `UPDATE rt3_an2 SET v[1][2] = 10.01 WHERE id = 7`)}`,
      `jsonb[] equal: ${await after('rt3_aj', 'SELECT 1')}`,
      `jsonb[] changed: ${await after('rt3_aj', `UPDATE rt3_aj SET v = ARRAY['{"a": 3}'::jsonb] WHERE id = 7`)}`,
    ];
    expect(found).toEqual([
      'text[] equal: ',
      'text[] longer element: ["7"]',
      'numeric[] equal: ',
      'numeric[] one more decimal: ["7"]',
      'numeric(12,2)[] equal: ',
      'numeric(12,2)[] changed: ["7"]',
      'jsonb[] equal: ',
      'jsonb[] changed: ["7"]',
    ]);
  });

  it('missed drift: real in double precision (the target read as real: neighbouring doubles alike) and date in timestamp (read as date: the time of day cut)', async () => {
    await table('rt3_real', 'real', 'double precision', `CASE i % 4 WHEN 0 THEN i / 3.0 WHEN 1 THEN 0.1 WHEN 2 THEN '-0' ELSE 'Infinity' END`);
    await table('rt3_date', 'date', 'timestamp', `CASE WHEN i % 10 = 0 THEN 'infinity' ELSE date '2024-01-01' + i END`);
    const found = [
      `real equal: ${await after('rt3_real', 'SELECT 1')}`,
      `real next double: ${await after('rt3_real', `UPDATE rt3_real SET v = '0.10000000000000002' WHERE id = 5`)}`,
      `real + 1e-12: ${await after('rt3_real', `UPDATE rt3_real SET v = v + 1e-12 WHERE id = 4`)}`,
      `date equal: ${await after('rt3_date', 'SELECT 1')}`,
      `date + 1 hour: ${await after('rt3_date', `UPDATE rt3_date SET v = v + interval '1 hour' WHERE id = 7`)}`,
    ];
    expect(found).toEqual(['real equal: ', 'real next double: ["5"]', 'real + 1e-12: ["4"]', 'date equal: ', 'date + 1 hour: ["7"]']);
  });

  it('the printed row counts: after the lag re-check cleared a backlog, `source 66, target 5, identical` is said to be counted before apply caught up', async () => {
    await source.query(`CREATE TABLE rt3_backlog (id int PRIMARY KEY, v text)`);
    await target.query(`CREATE TABLE rt3_backlog (id int PRIMARY KEY, v text)`);
    await source.query(`INSERT INTO rt3_backlog SELECT i, 'v' || i FROM generate_series(1, 66) i`);
    await target.query(`INSERT INTO rt3_backlog SELECT i, 'v' || i FROM generate_series(1, 5) i`);
    // Apply catching up with the backlog while verify waits at its barrier.
    const barrier = async (): Promise<'reached'> => {
      await target.query(`INSERT INTO rt3_backlog SELECT i, 'v' || i FROM generate_series(6, 66) i ON CONFLICT DO NOTHING`);
      return 'reached';
    };
    const r = await verifyTable([{ source, target }], { schema: 'public', table: 'rt3_backlog' }, undefined, { barrier });
    expect(r).toMatchObject({ sourceRows: 66, targetRows: 5, differing: 0, lagChecked: true });
    expect(describeVerification(r).replace(/\(\d+ rows\/s\)/, '(N rows/s)')).toBe('public.rt3_backlog: source 66, target 5 (counted before apply caught up), identical (N rows/s)\n');
    // Read again: no re-check needed, the counts are the verdict's.
    const again = await verifyTable([{ source, target }], { schema: 'public', table: 'rt3_backlog' }, undefined, { barrier });
    expect(describeVerification(again).replace(/\(\d+ rows\/s\)/, '(N rows/s)')).toBe('public.rt3_backlog: source 66, target 66, identical (N rows/s)\n');
  });
});

describe.each(['mysql', 'sqlite'] as const)('verify red team 3: a %s target (rows written by its sink)', (type) => {
  let source: pg.Client;
  let sourceUrl: string;
  let dir: string | undefined;
  let mysql: MysqlTestDatabase | undefined;
  let sink: Sink;
  let targetUrl: string;
  const atTarget = async (sql: string): Promise<void> => {
    if (mysql) await mysql.admin.query(sql);
    else {
      const db = new Database(targetUrl);
      try {
        db.exec(sql);
      } finally {
        db.close();
      }
    }
  };
  const verify = async (table: string): Promise<Outcome> => {
    const t = await openVerifyTarget(type, targetUrl);
    try {
      return keysOf(await verifyTable([{ source, target: t }], { schema: 'public', table }, undefined, { sample: 500 }));
    } catch (e) {
      return `error: ${(e as Error).message}`;
    } finally {
      await t.close();
    }
  };
  /** `name (id, v)`: 100 rows through the sink; then `edit` at the target (row 7). */
  const check = async (name: string, sourceType: string, mysqlType: string, sqliteType: string, values: string, edit: string): Promise<string> => {
    await source.query(`CREATE TABLE ${name} (id int PRIMARY KEY, v ${sourceType})`);
    await atTarget(`CREATE TABLE ${name} (id INTEGER PRIMARY KEY, v ${type === 'mysql' ? mysqlType : sqliteType})`);
    await source.query(`INSERT INTO ${name} SELECT i, ${values} FROM generate_series(1, 100) i`);
    await writeThrough(sink, await changesOf(sourceUrl, name));
    const equal = await verify(name);
    await atTarget(`UPDATE ${name} SET ${edit} WHERE id = 7`);
    return `${name}: equal [${equal}], edited [${await verify(name)}]`;
  };

  beforeAll(async () => {
    const dbs = await sourceAndTarget(await machinePg15(), `syncline_redteam_verify3_${type}`);
    ({ source, sourceUrl } = dbs);
    await dbs.target.end();
    if (type === 'mysql') {
      mysql = await freshMysqlDatabase('syncline_redteam_verify3');
      targetUrl = mysql.url;
      sink = new MysqlSink({ url: targetUrl, stateSchema: 'syncline', versionGate: true });
    } else {
      dir = await mkdtemp(path.join(os.tmpdir(), 'syncline-redteam-verify3-'));
      targetUrl = path.join(dir, 'target.db');
      new Database(targetUrl).close();
      sink = new SqliteSink({ url: targetUrl, stateSchema: 'syncline', versionGate: true });
    }
    await sink.prepare();
  });

  afterAll(async () => {
    await sink?.close();
    await source?.end();
    await mysql?.drop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('false drift on every row: source domains (over numeric, boolean, timestamptz) were compared by their name, not as their base type', async () => {
    await source.query(`CREATE DOMAIN rt3_amount AS numeric(12,2); CREATE DOMAIN rt3_flag AS boolean; CREATE DOMAIN rt3_at AS timestamptz`);
    const found = [
      await check('rt3_damt', 'rt3_amount', 'DECIMAL(14,4)', 'NUMERIC(14,4)', 'i / 4.0', 'v = v + 1'),
      await check('rt3_dflag', 'rt3_flag', 'TINYINT(1)', 'BOOLEAN', 'i % 2 = 0', 'v = 1 - v'),
      await check('rt3_dat', 'rt3_at', 'DATETIME(6)', 'TIMESTAMPTZ', `timestamptz '2024-01-01 00:00:00+00' + i * interval '1 s'`, `v = '2020-01-01 00:00:00'`),
    ];
    expect(found).toEqual(['rt3_damt: equal [], edited [["7"]]', 'rt3_dflag: equal [], edited [["7"]]', 'rt3_dat: equal [], edited [["7"]]']);
  });

  it('SQL error on equal rows: a numeric(p,s)[] column was given to trim_scale, which takes no array', async () => {
    expect(await check('rt3_numarr', 'numeric(10,2)[]', 'JSON', 'JSON', `ARRAY[i / 4.0, NULL, 10]`, `v = '["1.5", null, "10.00"]'`)).toBe('rt3_numarr: equal [], edited [["7"]]');
  });

  it('false drift: a float -0 (the target keeps 0: neither keeps the sign of a zero) was a differing row that repair cannot fix', async () => {
    expect(await check('rt3_negz', 'float8', 'DOUBLE', 'DOUBLE PRECISION', `CASE i % 3 WHEN 0 THEN '-0'::float8 WHEN 1 THEN 0 ELSE 1e-300 END`, `v = 1e-300`)).toBe('rt3_negz: equal [], edited [["7"]]');
    expect(await check('rt3_negz4', 'real', 'FLOAT', 'REAL', `CASE i % 2 WHEN 0 THEN '-0'::real ELSE 0.1 END`, `v = 0.5`)).toBe('rt3_negz4: equal [], edited [["7"]]');
  });
});
