import type pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { compareTable } from '../../src/verify/compare.js';
import { machinePg15, sourceAndTarget } from '../helpers/postgres.js';

/**
 * Red-team findings (second round) against verify's column reading (shape.ts `col`, the
 * `trim_scale` rule; since, column-form.ts) and its range sums of value hashes (`rowHash`,
 * `hashedValue`). Edits are made in a rolled-back transaction at the target, as in
 * redteam-verify.test.ts. Rows written by the sinks themselves: verify-declared-types.test.ts.
 */
describe('verify red team 2: columns declared differently on the two sides (PostgreSQL 15)', () => {
  let source: pg.Client;
  let target: pg.Client;
  /** The keys compareTable reports after `edit` at the target (rolled back after). */
  const reportedAfter = async (table: string, edit: string): Promise<string[]> => {
    await target.query('BEGIN');
    try {
      await target.query(edit);
      const drift = await compareTable(source, target, { schema: 'public', table });
      return [...drift.different, ...drift.missing, ...drift.extra].sort();
    } finally {
      await target.query('ROLLBACK');
    }
  };

  beforeAll(async () => {
    const server = await machinePg15();
    ({ source, target } = await sourceAndTarget(server, 'syncline_redteam_verify2'));
  });

  afterAll(async () => {
    await source?.end();
    await target?.end();
  });

  it('SQL error on equal data: a wide table of 840 bigint columns hashes as 1680+ ROW fields (bigint halves), over the 1664-entry limit of a ROW expression', async () => {
    const cols = Array.from({ length: 840 }, (_, i) => `b${i} bigint`).join(', ');
    const values = Array.from({ length: 840 }, (_, i) => `i + ${i}`).join(', ');
    for (const c of [source, target]) {
      await c.query(`CREATE TABLE rt_many (id int PRIMARY KEY, ${cols})`);
      await c.query(`INSERT INTO rt_many SELECT i, ${values} FROM generate_series(1, 50) i`);
    }
    const result = await compareTable(source, target, { schema: 'public', table: 'rt_many' }).catch((e: Error) => ({ error: e.message }));
    expect(result).toMatchObject({ sourceRows: 50, targetRows: 50, differing: 0 });
  });

  it('(held) column order differing between the sides, boolean NULL vs false, NaN in a source numeric kept in numeric(12,3), smallint source in an integer target: no false drift, each edit found', async () => {
    await source.query(`CREATE TABLE rt_held (id int PRIMARY KEY, f boolean, n numeric, s smallint, t text)`);
    await target.query(`CREATE TABLE rt_held (t text, s integer, n numeric(12,3), f boolean, id int PRIMARY KEY)`);
    const rows = `SELECT i, CASE i % 3 WHEN 0 THEN NULL WHEN 1 THEN false ELSE true END, CASE WHEN i % 5 = 0 THEN 'NaN'::numeric ELSE i / 8.0 END, i % 100, 't' || i FROM generate_series(1, 500) i`;
    await source.query(`INSERT INTO rt_held (id, f, n, s, t) ${rows}`);
    await target.query(`INSERT INTO rt_held (id, f, n, s, t) ${rows}`);
    expect(await compareTable(source, target, { schema: 'public', table: 'rt_held' })).toMatchObject({ sourceRows: 500, targetRows: 500, differing: 0 });
    const edits = [
      [3, `f = false`],
      [4, `f = NULL`],
      [10, `n = NULL`],
      [11, `n = n + 0.001`],
      [12, `s = -s`],
    ] as const;
    const found: string[] = [];
    for (const [id, edit] of edits) found.push(`${edit}: ${(await reportedAfter('rt_held', `UPDATE rt_held SET ${edit} WHERE id = ${id}`)).join(',')}`);
    expect(found).toEqual(edits.map(([id, edit]) => `${edit}: ["${id}"]`));
  });

  it('false drift: an unconstrained numeric KEY kept in a numeric(20,5) (or integer) target column: the trim_scale rule skips keys, so 1.5 vs 1.50000 reads as one missing and one extra row', async () => {
    await source.query(`CREATE TABLE rt_nkey (id numeric PRIMARY KEY, v text)`);
    await target.query(`CREATE TABLE rt_nkey (id numeric(20,5) PRIMARY KEY, v text)`);
    for (const c of [source, target]) await c.query(`INSERT INTO rt_nkey SELECT i / 2.0, 'v' || i FROM generate_series(1, 100) i`);
    await source.query(`CREATE TABLE rt_ikey (id numeric PRIMARY KEY, v text)`);
    await target.query(`CREATE TABLE rt_ikey (id integer PRIMARY KEY, v text)`);
    // 2.0 is what a source writing `numeric` values computed as i * 1.0 keeps; the integer target keeps 2.
    await source.query(`INSERT INTO rt_ikey SELECT i * 1.0, 'v' || i FROM generate_series(1, 100) i`);
    await target.query(`INSERT INTO rt_ikey SELECT i, 'v' || i FROM generate_series(1, 100) i`);
    const results = [await compareTable(source, target, { schema: 'public', table: 'rt_nkey' }), await compareTable(source, target, { schema: 'public', table: 'rt_ikey' })];
    expect(results.map((r) => `${r.table}: ${r.differing}`)).toEqual(['public.rt_nkey: 0', 'public.rt_ikey: 0']);
  });

  it('missed drift: the target column is cast to the narrower source type, which rounds or truncates (varchar(4), char(4), numeric(12,2), timestamp(3), time(0), bit varying(4))', async () => {
    await source.query(`CREATE TABLE rt_narrow (id int PRIMARY KEY, v varchar(4), c char(4), n numeric(12,2), ts timestamp(3), tm time(0), b bit varying(4))`);
    await target.query(`CREATE TABLE rt_narrow (id int PRIMARY KEY, v text, c char(8), n numeric(14,4), ts timestamp(6), tm time, b bit varying)`);
    for (const c of [source, target]) {
      await c.query(`INSERT INTO rt_narrow SELECT i, 'v' || lpad((i % 1000)::text, 3, '0'), 'c' || lpad((i % 1000)::text, 3, '0'), i / 4.0, '2024-03-01 12:00:00.123'::timestamp + i * interval '1 s', time '10:00' + i * interval '1 s', B'1010'
                       FROM generate_series(1, 1000) i`);
    }
    expect(await compareTable(source, target, { schema: 'public', table: 'rt_narrow' })).toMatchObject({ differing: 0 });
    // Each edit gives the target a value the source's declaration could not hold (values fill the source's
    // width, so truncation keeps them whole): a row that differs, read back as the source's value.
    const edits = [
      [11, `v = v || 'XYZ'`],
      [12, `c = c || 'XYZ'`],
      [13, `n = n + 0.0001`],
      [14, `ts = ts + interval '1 microsecond'`],
      [15, `tm = tm + interval '0.1 second'`],
      [16, `b = b || B'1111'`],
    ] as const;
    const found: string[] = [];
    for (const [id, edit] of edits) found.push(`${edit}: ${(await reportedAfter('rt_narrow', `UPDATE rt_narrow SET ${edit} WHERE id = ${id}`)).join(',')}`);
    expect(found).toEqual(edits.map(([id, edit]) => `${edit}: ["${id}"]`));
  });

  it('missed drift: a source numeric kept in a float8 target column is read as float8::numeric (15 significant digits), so neighbouring doubles compare alike', async () => {
    await source.query(`CREATE TABLE rt_float (id int PRIMARY KEY, x numeric)`);
    await target.query(`CREATE TABLE rt_float (id int PRIMARY KEY, x float8)`);
    for (const c of [source, target]) await c.query(`INSERT INTO rt_float SELECT i, 0.1 FROM generate_series(1, 100) i`);
    expect(await compareTable(source, target, { schema: 'public', table: 'rt_float' })).toMatchObject({ differing: 0 });
    // 0.10000000000000002 is the next double after 0.1: a different value at the target.
    expect(await reportedAfter('rt_float', `UPDATE rt_float SET x = '0.10000000000000002'::float8 WHERE id = 40`)).toEqual(['["40"]']);
  });

  it('a drifted target value the source type cannot hold (bigint target of an integer source, text target of a uuid source) fails the whole verify with an SQL error instead of being reported', async () => {
    await source.query(`CREATE TABLE rt_wide_type (id int PRIMARY KEY, n integer, u uuid)`);
    await target.query(`CREATE TABLE rt_wide_type (id int PRIMARY KEY, n bigint, u text)`);
    for (const c of [source, target]) await c.query(`INSERT INTO rt_wide_type SELECT i, i, md5(i::text)::uuid FROM generate_series(1, 100) i`);
    expect(await compareTable(source, target, { schema: 'public', table: 'rt_wide_type' })).toMatchObject({ differing: 0 });
    const outcome = async (edit: string): Promise<string> => reportedAfter('rt_wide_type', edit).then((keys) => keys.join(','), (e: Error) => `error: ${e.message}`);
    expect([await outcome(`UPDATE rt_wide_type SET n = 5000000000 WHERE id = 5`), await outcome(`UPDATE rt_wide_type SET u = 'garbage' WHERE id = 6`)]).toEqual(['["5"]', '["6"]']);
  });
});
