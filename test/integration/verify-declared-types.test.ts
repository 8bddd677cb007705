import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import Database from 'better-sqlite3';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ChangeEvent, Row } from '../../src/core/change.js';
import { MysqlSink } from '../../src/sink/mysql/mysql-sink.js';
import { PostgresSink } from '../../src/sink/postgres/postgres-sink.js';
import type { Sink } from '../../src/sink/sink.js';
import { SqliteSink } from '../../src/sink/sqlite/sqlite-sink.js';
import { OUTPUT_SETTINGS } from '../../src/source/replication-stream.js';
import { columnForm, formValue } from '../../src/verify/column-form.js';
import { compareTable, verifyTable } from '../../src/verify/compare.js';
import { readShape, postgresColumns, SideSql } from '../../src/verify/shape.js';
import { openVerifyTarget } from '../../src/verify/targets/open.js';
import { changeAt } from '../helpers/conflict-fixtures.js';
import { freshMysqlDatabase, type MysqlTestDatabase } from '../helpers/mysql.js';
import { machinePg15, sourceAndTarget } from '../helpers/postgres.js';

/**
 * Verify with target columns declared otherwise than the source's (column-form.ts): rows
 * the real sinks wrote compare equal, and every value only the target's declaration can
 * hold is a differing row, never an SQL error.
 */

/** The source table's rows as INSERT changes, their values the text capture sends (output functions, pinned settings). */
async function changesOf(sourceUrl: string, table: string, key: string[]): Promise<ChangeEvent[]> {
  const raw = new pg.Client({ connectionString: sourceUrl, types: { getTypeParser: () => (v: string) => v } });
  await raw.connect();
  try {
    await raw.query(OUTPUT_SETTINGS);
    const { rows } = await raw.query<Row>(`SELECT * FROM ${table} ORDER BY 1`);
    return rows.map((r, i) => changeAt('src', 0x1000 + i * 0x10, '2026-01-01T00:00:00Z', 'INSERT', table, Object.fromEntries(key.map((k) => [k, r[k] ?? null])), r));
  } finally {
    await raw.end();
  }
}

async function writeThrough(sink: Sink, changes: ChangeEvent[]): Promise<void> {
  for (let i = 0; i < changes.length; i += 500) {
    const outcome = await sink.apply(changes.slice(i, i + 500), new Map(), 'g');
    expect(outcome.applied).toBe(changes.slice(i, i + 500).length);
  }
}

describe('verify with columns declared otherwise at a postgres target (PostgreSQL 15, rows written by the postgres sink)', () => {
  let source: pg.Client;
  let target: pg.Client;
  let sourceUrl: string;
  let sink: PostgresSink;
  /** The keys compareTable reports after `edit` at the target (rolled back after). */
  const reportedAfter = async (table: string, edit: string): Promise<string[]> => {
    await target.query('BEGIN');
    try {
      await target.query(edit);
      const drift = await compareTable(source, target, { schema: 'public', table }, 5000);
      return [...drift.different, ...drift.missing, ...drift.extra].sort();
    } finally {
      await target.query('ROLLBACK');
    }
  };

  beforeAll(async () => {
    const dbs = await sourceAndTarget(await machinePg15(), 'syncline_verify_decl');
    ({ source, target, sourceUrl } = dbs);
    sink = new PostgresSink({ url: dbs.targetUrl, stateSchema: 'syncline', deleteMode: 'hard', versionGate: true });
    await sink.prepare();
  });

  afterAll(async () => {
    await sink?.close();
    await source?.end();
    await target?.end();
  });

  it('wider, float, text and trimmed declarations: equal rows compare equal; each edit only the target can hold is found', async () => {
    await source.query(`CREATE TYPE mood AS ENUM ('sad', 'ok')`);
    await source.query(`CREATE TABLE dt (id numeric PRIMARY KEY, n integer, u uuid, b boolean, c char(4), c8 char(4), v varchar(4), nm numeric(12,2),
      nf numeric, ni integer, ts timestamp(3), tz timestamptz(0), tm time(0), bv bit varying(4), bb bit(4), j jsonb, arr integer[], ip inet, sm smallint, mo mood, jx json)`);
    await target.query(`CREATE TABLE dt (id numeric(20,5) PRIMARY KEY, n bigint, u text, b text, c text, c8 char(8), v text, nm numeric(14,4),
      nf float8, ni float8, ts timestamp(6), tz timestamptz, tm time, bv bit varying, bb bit varying, j text, arr text, ip text, sm numeric(10,2), mo text, jx jsonb)`);
    // nf: numerics a double holds exactly, ones it rounds (the sink writes the nearest double), a subnormal, huge, NaN.
    await source.query(`INSERT INTO dt SELECT i / 2.0, i, md5(i::text)::uuid, CASE i % 3 WHEN 0 THEN NULL ELSE i % 3 = 1 END, 'c' || lpad(i::text, 3, '0'), 'd' || (i % 10),
      'v' || lpad(i::text, 3, '0'),
      i / 4.0, CASE i % 8 WHEN 0 THEN 0.1 WHEN 1 THEN i / 3.0 WHEN 2 THEN 0.12345678901234567 WHEN 3 THEN 1e-310 WHEN 4 THEN 1e300 * i WHEN 5 THEN 'NaN' WHEN 6 THEN NULL ELSE -i * 1.5e-7 END,
      i * 7, '2024-03-01 12:00:00.123'::timestamp + i * interval '1 s', '2024-03-01 12:00:00+02'::timestamptz + i * interval '1 h', time '10:00' + i * interval '1 s', B'1010', B'0110',
      jsonb_build_object('i', i, 'a', ARRAY[1, 2]), ARRAY[i, NULL, -i], ('10.0.' || (i % 250) || '.1')::inet, i, CASE WHEN i % 2 = 0 THEN 'ok'::mood ELSE 'sad' END,
      -- json keeps its text (spaces, a repeated key); the jsonb target normalizes it as the sink writes it.
      ('{ "i" : ' || i || ',  "i": ' || (i + 1) || ', "a": [1, 2] }')::json
      FROM generate_series(1, 400) i`);
    await writeThrough(sink, await changesOf(sourceUrl, 'dt', ['id']));
    expect(await compareTable(source, target, { schema: 'public', table: 'dt' })).toMatchObject({ sourceRows: 400, targetRows: 400, differing: 0 });
    const edits = [
      ['5', `n = 5000000000`],
      ['6', `u = 'garbage'`],
      ['7', `b = 'true'`],
      ['8', `c = c || 'X'`],
      ['9', `c8 = c8 || 'XYZ'`],
      ['10', `v = v || 'XYZ'`],
      ['11', `nm = nm + 0.0001`],
      ['16', `nf = '0.10000000000000002'`],
      ['17', `nf = nf * (1 + 1e-15)`],
      ['21.5', `nf = nf * 1.5`],
      ['12', `ni = ni + 0.5`],
      ['13', `ts = ts + interval '1 microsecond'`],
      ['14', `tz = tz + interval '0.5 s'`],
      ['15', `tm = tm + interval '0.1 second'`],
      ['20', `bv = bv || B'1'`],
      ['21', `bb = bb || B'1'`],
      ['22', `j = j || ' '`],
      ['23', `arr = '{23,NULL,-23 }'`],
      ['24', `ip = ip || '/32'`],
      ['25', `sm = sm + 0.5`],
      ['26', `mo = 'garbage'`],
      ['27', `jx = jx || '{"z": 1}'::jsonb`],
    ] as const;
    const found: string[] = [];
    for (const [half, edit] of edits) found.push(`${edit}: ${(await reportedAfter('dt', `UPDATE dt SET ${edit} WHERE id = ${half}`)).join(',')}`);
    expect(found).toEqual(edits.map(([half, edit]) => `${edit}: ["${half}"]`));
    // A source value no float8 holds: the sink could not write it (here the target kept NULL). Named, no SQL error.
    await source.query(`INSERT INTO dt (id, nf) VALUES (1000, 1e400), (1001, 1e-400)`);
    await target.query(`INSERT INTO dt (id, nf) VALUES (1000, NULL), (1001, 0)`);
    expect(await compareTable(source, target, { schema: 'public', table: 'dt' })).toMatchObject({ differing: 2, different: ['["1000"]', '["1001"]'] });
  });

  it('keys declared wider (integer → bigint, varchar(8) → text, timestamp(3) → timestamp(6)): target keys the source type cannot hold are extra rows, bisected along the target, on both key indexes', async () => {
    await source.query(`CREATE TABLE dk (k integer, s varchar(8), ts timestamp(3), v text, PRIMARY KEY (k, s, ts))`);
    await target.query(`CREATE TABLE dk (k bigint, s text, ts timestamp(6), v text, PRIMARY KEY (k, s, ts))`);
    await source.query(`INSERT INTO dk SELECT i % 1000, 's' || (i / 1000), '2024-01-01 00:00:00.5'::timestamp + i * interval '1 ms', 'v' || i FROM generate_series(1, 3000) i`);
    await source.query('ANALYZE dk');
    await writeThrough(sink, await changesOf(sourceUrl, 'dk', ['k', 's', 'ts']));
    await target.query('ANALYZE dk');
    expect(await compareTable(source, target, { schema: 'public', table: 'dk' })).toMatchObject({ sourceRows: 3000, targetRows: 3000, differing: 0 });
    // 1,500 extra rows with keys past integer (the target the larger side: ranges split along its keys), one with a longer s, one a microsecond off.
    const extra = await reportedAfter(
      'dk',
      `INSERT INTO dk SELECT 5000000000 + i, 'x', '2024-01-01', 'e' FROM generate_series(1, 1500) i;
       INSERT INTO dk VALUES (1, 'abcdefghijk', '2024-01-01', 'e'), (1, 's0', '2024-01-01 00:00:00.501001', 'e');
       DELETE FROM dk WHERE k = 2 AND s = 's0'`,
    );
    expect(extra).toHaveLength(1503);
    expect(extra).toEqual(expect.arrayContaining(['["1","abcdefghijk","2024-01-01 00:00:00"]', '["1","s0","2024-01-01 00:00:00.501001"]', '["2","s0","2024-01-01 00:00:00.502"]', '["5000000001","x","2024-01-01 00:00:00"]']));
    // Ranges keep to the key indexes on both sides: a bound is cast to the wider type, in the source key's operator family.
    const shape = await readShape(source, postgresColumns(target), { schema: 'public', table: 'dk' }, undefined, 'record');
    for (const [client, side] of [[source, 'source'], [target, 'target']] as const) {
      const sql = new SideSql(shape, side);
      const params: unknown[] = [];
      const where = sql.range(['5', 's1', '2024-01-01 00:00:01'], ['900', 's2', '2024-01-01 00:00:02'], params);
      await client.query('BEGIN; SET LOCAL enable_seqscan = off');
      try {
        const { rows } = await client.query<{ 'QUERY PLAN': string }>(`EXPLAIN SELECT ${sql.keyTexts()} FROM ${sql.from} WHERE ${where} ORDER BY ${sql.keyList()} OFFSET 10 LIMIT 1`, params);
        expect(rows.map((r) => r['QUERY PLAN']).join('\n')).toMatch(/Index (Only )?Scan using dk_pkey/);
      } finally {
        await client.query('ROLLBACK');
      }
    }
  });

  it('the float guard casts exactly the numerics float8in / float4in accept (the sink could write) and no other', async () => {
    for (const [type, values] of [
      ['double precision', ['1e-400', '1e-310', '1.7976931348623157e308', '1.7976931348623158e308', '1.797693134862315807e308', '1e309', '0', 'NaN', '-1e-320', '0.12345678901234567']],
      ['real', ['1e-46', '1.4e-45', '3.4028234e38', '3.40282357e38', '3.4028236e38', '0', 'NaN', '-1e-44']],
    ] as const) {
      const expr = formValue(columnForm('numeric', type, false), 'source', 'x', 'numeric', type);
      for (const v of values) {
        // What the sink does with the numeric's text: float8in / float4in, or an error (the row is dead-lettered).
        const cast = await source.query<{ t: string }>(`SELECT $1::numeric::text::${type}::text AS t`, [v]).then((r) => r.rows[0]?.t, () => undefined);
        const { rows } = await source.query<{ t: string; n: string }>(`SELECT ${expr} AS t, x::text AS n FROM (SELECT $1::numeric AS x) s`, [v]);
        expect(`${type} ${v}: ${rows[0]?.t}`).toBe(`${type} ${v}: ${cast ?? rows[0]?.n}`);
      }
    }
  });
});

describe.each(['mysql', 'sqlite'] as const)('verify with columns declared wider at a %s target (rows written by its sink)', (type) => {
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
  const verify = async (table: string) => {
    const t = await openVerifyTarget(type, targetUrl);
    try {
      return await verifyTable([{ source, target: t }], { schema: 'public', table }, undefined, { sample: 50 });
    } finally {
      await t.close();
    }
  };

  beforeAll(async () => {
    const dbs = await sourceAndTarget(await machinePg15(), `syncline_verify_decl_${type}`);
    ({ source, sourceUrl } = dbs);
    await dbs.target.end();
    if (type === 'mysql') {
      mysql = await freshMysqlDatabase(`syncline_verify_decl`);
      targetUrl = mysql.url;
      sink = new MysqlSink({ url: targetUrl, stateSchema: 'syncline', versionGate: true });
    } else {
      dir = await mkdtemp(path.join(os.tmpdir(), 'syncline-verify-decl-'));
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

  it('equal rows compare equal; values only the wider target column can hold are differing rows, not errors', async () => {
    await source.query(`CREATE TABLE dw (id integer PRIMARY KEY, n integer, u uuid, v varchar(4), c char(4), nm numeric(12,2), nf numeric, ts timestamp(3), tm time(0))`);
    await atTarget(
      type === 'mysql'
        ? 'CREATE TABLE dw (id BIGINT PRIMARY KEY, n BIGINT, u TEXT, v TEXT, c CHAR(8), nm DECIMAL(14,4), nf DOUBLE, ts DATETIME(6), tm TIME(6))'
        : 'CREATE TABLE dw (id BIGINT PRIMARY KEY, n BIGINT, u TEXT, v TEXT, c CHAR(8), nm NUMERIC(14,4), nf DOUBLE PRECISION, ts TIMESTAMP, tm TIME)',
    );
    await source.query(`INSERT INTO dw SELECT i, i, md5(i::text)::uuid, 'v' || lpad(i::text, 3, '0'), 'c' || lpad(i::text, 3, '0'), i / 4.0,
      CASE i % 3 WHEN 0 THEN 0.1 WHEN 1 THEN i / 8.0 ELSE -i * 1.5e-7 END, '2024-03-01 12:00:00.123'::timestamp + i * interval '1 s', time '10:00' + i * interval '1 s'
      FROM generate_series(1, 300) i`);
    await writeThrough(sink, await changesOf(sourceUrl, 'dw', ['id']));
    expect(await verify('dw')).toMatchObject({ sourceRows: 300, targetRows: 300, differing: 0 });
    const text = type === 'mysql' ? (a: string, b: string) => `CONCAT(${a}, ${b})` : (a: string, b: string) => `${a} || ${b}`;
    await atTarget(`UPDATE dw SET n = 5000000000 WHERE id = 5`);
    await atTarget(`UPDATE dw SET u = 'garbage' WHERE id = 6`);
    await atTarget(`UPDATE dw SET v = ${text('v', `'XYZ'`)} WHERE id = 7`);
    await atTarget(`UPDATE dw SET c = ${text('c', `'XYZ'`)} WHERE id = 8`);
    await atTarget(`UPDATE dw SET nm = nm + 0.0001 WHERE id = 9`);
    await atTarget(`UPDATE dw SET nf = 0.10000000000000002 WHERE id = 12`);
    await atTarget(type === 'mysql' ? `UPDATE dw SET ts = ts + INTERVAL 1 MICROSECOND WHERE id = 13` : `UPDATE dw SET ts = '2024-03-01 12:00:13.123001' WHERE id = 13`);
    await atTarget(type === 'mysql' ? `UPDATE dw SET tm = tm + INTERVAL 100000 MICROSECOND WHERE id = 14` : `UPDATE dw SET tm = '10:00:14.1' WHERE id = 14`);
    // A key the source's integer cannot hold: an extra row.
    await atTarget(`INSERT INTO dw (id, n) VALUES (5000000000, 1)`);
    const r = await verify('dw');
    expect([...r.different, ...r.missing, ...r.extra].sort()).toEqual(['["12"]', '["13"]', '["14"]', '["5"]', '["5000000000"]', '["6"]', '["7"]', '["8"]', '["9"]']);
  });

  it('target keys the source key type rejects (not a uuid) are extra rows, found among the others', async () => {
    await source.query(`CREATE TABLE du (u uuid PRIMARY KEY, v integer)`);
    await atTarget(`CREATE TABLE du (u VARCHAR(64) PRIMARY KEY, v BIGINT)`);
    await source.query(`INSERT INTO du SELECT md5(i::text)::uuid, i FROM generate_series(1, 200) i`);
    await writeThrough(sink, await changesOf(sourceUrl, 'du', ['u']));
    expect(await verify('du')).toMatchObject({ sourceRows: 200, targetRows: 200, differing: 0 });
    await atTarget(`INSERT INTO du (u, v) VALUES ('garbage', 1), ('0000000-0000-0000-0000-000000000000', 2), ('00000000-0000-0000-0000-000000000001', 3)`);
    expect(await verify('du')).toMatchObject({ differing: 3, missing: [], different: [], extra: ['["0000000-0000-0000-0000-000000000000"]', '["00000000-0000-0000-0000-000000000001"]', '["garbage"]'] });
  });
});
