import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { compareTable, verifyTable } from '../../src/verify/compare.js';
import { embeddedPg17, freshDatabase, machinePg15, sourceAndTarget, type PgServer } from '../helpers/postgres.js';

/**
 * Red-team findings against verify's range sums of value hashes (`hash_record_extended`,
 * shape.ts rowHash) and its rate limit hook: each case is a difference the rows' text shows
 * (with the pinned output settings) that a range checksum must not miss, or an accounting the
 * throttle must get right. Every edit is made in a rolled-back transaction at the target, so
 * the range sum alone has to notice it (compareTable has no other way to find a row).
 */
describe('verify red team: range sums of value hashes (PostgreSQL 15)', () => {
  let source: pg.Client;
  let target: pg.Client;
  const urls = { source: '', target: '' };
  const both = async (sql: string): Promise<void> => {
    await source.query(sql);
    await target.query(sql);
  };
  /** The keys compareTable reports as different after `edit` at the target (rolled back after). */
  const differentAfter = async (table: string, edit: string): Promise<string[]> => {
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
    const pair = await sourceAndTarget(server, 'syncline_redteam_verify');
    ({ source, target } = pair);
    urls.source = pair.sourceUrl;
    urls.target = pair.targetUrl;
  });

  afterAll(async () => {
    await source?.end();
    await target?.end();
  });

  it('jsonb: {} and [] and NULL and [[]] all hash to 0 (jsonb_hash_extended returns the seed for an empty container), and 1.0 hashes as 1', async () => {
    await both(`CREATE TABLE rt_json (id int PRIMARY KEY, j jsonb)`);
    await both(`INSERT INTO rt_json SELECT i, '{}' FROM generate_series(1, 100) i`);
    await both(`UPDATE rt_json SET j = '{"price": 1.0}' WHERE id = 50`);
    expect(await differentAfter('rt_json', `SELECT 1`)).toEqual([]);
    const found: string[] = [];
    for (const [id, value] of [[7, `NULL`], [8, `'[]'`], [9, `'[[]]'`], [50, `'{"price": 1}'`]] as const) {
      found.push(`${id} ${value}: ${(await differentAfter('rt_json', `UPDATE rt_json SET j = ${value} WHERE id = ${id}`)).join(',')}`);
    }
    expect(found).toEqual([`7 NULL: ["7"]`, `8 '[]': ["8"]`, `9 '[[]]': ["9"]`, `50 '{"price": 1}': ["50"]`]);
  });

  it('numeric(p,s): the sign is not hashed (5.00 vs -5.00) and NaN hashes like NULL', async () => {
    await both(`CREATE TABLE rt_money (id int PRIMARY KEY, amount numeric(12,2))`);
    await both(`INSERT INTO rt_money SELECT i, i * 1.25 FROM generate_series(1, 100) i`);
    await both(`UPDATE rt_money SET amount = 'NaN' WHERE id = 20`);
    const found = [
      `sign: ${(await differentAfter('rt_money', `UPDATE rt_money SET amount = -amount WHERE id = 10`)).join(',')}`,
      `NaN→NULL: ${(await differentAfter('rt_money', `UPDATE rt_money SET amount = NULL WHERE id = 20`)).join(',')}`,
    ];
    expect(found).toEqual([`sign: ["10"]`, `NaN→NULL: ["20"]`]);
  });

  it('64-bit types hash a 32-bit fold (lo ^ hi): bigint 0 vs 4294967297, -1 vs 4294967295, timestamps and times 2^32+1 µs apart', async () => {
    await both(`CREATE TABLE rt_fold (id int PRIMARY KEY, n bigint, ts timestamp, tz timestamptz, tm time)`);
    await both(`INSERT INTO rt_fold SELECT i, 0, '2000-01-01 00:00:00', '2000-01-01 00:00:00+00', '00:00' FROM generate_series(1, 100) i`);
    await both(`UPDATE rt_fold SET n = -1 WHERE id = 2`);
    const edits = [
      [1, `n = 4294967297`],
      [2, `n = 4294967295`],
      [3, `ts = '2000-01-01 01:11:34.967297'`],
      [4, `tz = '2000-01-01 01:11:34.967297+00'`],
      [5, `tm = '01:11:34.967297'`],
    ] as const;
    const found: string[] = [];
    for (const [id, edit] of edits) found.push(`${edit}: ${(await differentAfter('rt_fold', `UPDATE rt_fold SET ${edit} WHERE id = ${id}`)).join(',')}`);
    expect(found).toEqual(edits.map(([id, edit]) => `${edit}: ["${id}"]`));
  });

  it('values swapped between two rows of a range: the row hash is linear in its fields (h = 31·h1 + h2), so the range sum is unchanged', async () => {
    await both(`CREATE TABLE rt_swap (id bigint PRIMARY KEY, owner text, balance int)`);
    await both(`INSERT INTO rt_swap SELECT i, 'owner' || i, i * 10 FROM generate_series(1, 1000) i`);
    // The owners of accounts 2 and 3 swapped at the target (e.g. updates applied to the wrong keys). The row
    // hashes wrap at 64 bits before the exact numeric sum, so a swap is missed when the wraps agree: for 24 of
    // the 40 adjacent pairs (i, i+1) of this table, 2 and 3 among them.
    const swapped = await differentAfter('rt_swap', `UPDATE rt_swap SET owner = CASE id WHEN 2 THEN 'owner3' ELSE 'owner2' END WHERE id IN (2, 3)`);
    expect(swapped).toEqual(['["2"]', '["3"]']);
  });

  it('a nondeterministic collation reaches the hash through a text cast (domain over text, array of text): a case-only change is missed', async () => {
    await both(`CREATE COLLATION IF NOT EXISTS rt_nocase (provider = icu, locale = 'und-u-ks-level2', deterministic = false)`);
    await both(`CREATE DOMAIN rt_name AS text COLLATE rt_nocase`);
    await both(`CREATE TABLE rt_ci (id int PRIMARY KEY, name rt_name, tags text[] COLLATE rt_nocase)`);
    await both(`INSERT INTO rt_ci SELECT i, 'name' || i, ARRAY['tag' || i] FROM generate_series(1, 100) i`);
    const found = [
      `domain: ${(await differentAfter('rt_ci', `UPDATE rt_ci SET name = upper(name) WHERE id = 3`)).join(',')}`,
      `array: ${(await differentAfter('rt_ci', `UPDATE rt_ci SET tags = ARRAY['TAG4'] WHERE id = 4`)).join(',')}`,
    ];
    expect(found).toEqual([`domain: ["3"]`, `array: ["4"]`]);
  });
});

describe('verify red team: the rate limit hook (PostgreSQL 15)', () => {
  let source: pg.Client;
  let target: pg.Client;
  const urls = { source: '', target: '' };

  beforeAll(async () => {
    const server = await machinePg15();
    const pair = await sourceAndTarget(server, 'syncline_redteam_throttle');
    ({ source, target } = pair);
    urls.source = pair.sourceUrl;
    urls.target = pair.targetUrl;
  });

  afterAll(async () => {
    await source?.end();
    await target?.end();
  });

  it('on several connection pairs, a range that bisects is charged the rows other pairs finished meanwhile (rows = result.sourceRows - before)', async () => {
    for (const c of [source, target]) {
      await c.query(`CREATE TABLE rt_rate (id int PRIMARY KEY, v text)`);
      await c.query(`INSERT INTO rt_rate SELECT i, 'v' || i FROM generate_series(1, 20000) i`);
    }
    // The first range differs in every row: its pair bisects it for many round trips while the other pair finishes the rest.
    await target.query(`UPDATE rt_rate SET v = v || '!' WHERE id <= 1000`);
    const s2 = new pg.Client({ connectionString: urls.source });
    const t2 = new pg.Client({ connectionString: urls.target });
    await s2.connect();
    await t2.connect();
    let progress = 0;
    let charged = 0;
    const result = await verifyTable([{ source, target }, { source: s2, target: t2 }], { schema: 'public', table: 'rt_rate' }, undefined, {
      rangeRows: 1000,
      leafRows: 10,
      fanout: 2,
      onRows: (n) => {
        progress += n;
      },
      throttle: async (n) => {
        charged += n;
      },
    }).finally(async () => {
      await s2.end();
      await t2.end();
    });
    expect(result).toMatchObject({ sourceRows: 20000, differing: 1000 });
    // Progress and the rate limit see each source row once.
    expect({ progress, charged }).toEqual({ progress: 20000, charged: 20000 });
  });
});

/**
 * What held (passes before and after the fixes): equal rows whose two sides are declared
 * differently, or whose values are edge cases, are not reported as drift and raise no SQL error.
 */
describe('verify red team: equal rows of differently declared columns (PostgreSQL 15)', () => {
  let source: pg.Client;
  let target: pg.Client;

  beforeAll(async () => {
    const server = await machinePg15();
    ({ source, target } = await sourceAndTarget(server, 'syncline_redteam_equal'));
  });

  afterAll(async () => {
    await source?.end();
    await target?.end();
  });

  it('varchar(n) vs text, timestamp(3) vs timestamp(6), numeric(12,2) vs numeric(14,4), char(4) vs char(8), domains, enums, arrays, composites, citext, bytea, jsonb, -0, NaN, infinity: no drift, no error', async () => {
    for (const c of [source, target]) {
      await c.query(`CREATE EXTENSION IF NOT EXISTS citext`);
      await c.query(`CREATE TYPE rt_mood AS ENUM ('sad', 'ok', 'happy')`);
      await c.query(`CREATE TYPE rt_pair AS (a int, b text)`);
      await c.query(`CREATE DOMAIN rt_posint AS integer CHECK (VALUE > 0)`);
      await c.query(`CREATE DOMAIN rt_label AS varchar(10)`);
    }
    await source.query(`CREATE TABLE rt_eq (id bigint PRIMARY KEY, v varchar(12), t text, ts timestamp(3), n numeric(12,2), c char(4), p rt_posint, l rt_label, m rt_mood,
                          a int[], cp rt_pair, ci citext, b bytea, j jsonb, f float8, nn numeric, tz timestamptz, d date, tm time(2), u uuid)`);
    await target.query(`CREATE TABLE rt_eq (id integer PRIMARY KEY, v text, t varchar(40), ts timestamp(6), n numeric(14,4), c char(8), p integer, l text, m text,
                          a bigint[], cp rt_pair, ci citext, b bytea, j jsonb, f float8, nn numeric, tz timestamptz, d date, tm time, u text)`);
    const values = `SELECT i, 'v' || i, 't' || i, '2024-03-01 12:00:00.123'::timestamp + i * interval '1 s', i / 7.0, 'c' || (i % 10), i, 'l' || i, (ARRAY['sad','ok','happy']::rt_mood[])[1 + i % 3],
                           ARRAY[i, -i], ROW(i, 'b' || i)::rt_pair, 'Ci' || i, decode(md5(i::text), 'hex'), jsonb_build_object('i', i, 'x', 1.50, 'e', '{}'::jsonb),
                           CASE i % 4 WHEN 0 THEN '-0'::float8 WHEN 1 THEN 'NaN' WHEN 2 THEN 'Infinity' ELSE i / 3.0 END,
                           CASE WHEN i % 2 = 0 THEN 'NaN'::numeric ELSE 1.5 END,
                           CASE WHEN i % 3 = 0 THEN 'infinity'::timestamptz WHEN i % 3 = 1 THEN '-infinity' ELSE '2024-01-01 00:00:00+00' END,
                           CASE WHEN i % 2 = 0 THEN 'infinity'::date ELSE '2024-01-01' END, time '10:00:00.12' + i * interval '1 s', md5(i::text)::uuid
                      FROM generate_series(1, 2000) i`;
    await source.query(`INSERT INTO rt_eq ${values}`);
    // The target holds the source's values (what the sink writes) in its own declarations (numeric(14,4) pads 2 decimals
    // more, char(8) pads more, ...). Not i / 7.0 rounded to 4 decimals, nor an upper-case uuid in the text column: values
    // the source's columns cannot hold, which verify reports (verify-declared-types.test.ts).
    await target.query(`INSERT INTO rt_eq ${values.replace('i / 7.0', '(i / 7.0)::numeric(12,2)')}`);
    expect(await compareTable(source, target, { schema: 'public', table: 'rt_eq' })).toMatchObject({ sourceRows: 2000, targetRows: 2000, differing: 0 });
  });

  it('(before today too) a source numeric kept in a target numeric(20,5), which stores 1.5 as 1.50000: no false drift; a changed value still found', async () => {
    await source.query(`CREATE TABLE rt_scale (id int PRIMARY KEY, amount numeric)`);
    await target.query(`CREATE TABLE rt_scale (id int PRIMARY KEY, amount numeric(20,5))`);
    for (const c of [source, target]) await c.query(`INSERT INTO rt_scale SELECT i, i / 2.0 FROM generate_series(1, 100) i`);
    expect(await compareTable(source, target, { schema: 'public', table: 'rt_scale' })).toMatchObject({ sourceRows: 100, targetRows: 100, differing: 0 });
    await target.query(`UPDATE rt_scale SET amount = amount + 0.00001 WHERE id = 7`);
    expect(await compareTable(source, target, { schema: 'public', table: 'rt_scale' })).toMatchObject({ differing: 1, different: ['["7"]'] });
  });
});

describe('verify red team: PostgreSQL 15 source, PostgreSQL 17 target (value hashes alike across versions)', () => {
  let pg17: PgServer;
  let source: pg.Client;
  let target: pg.Client;

  beforeAll(async () => {
    pg17 = await embeddedPg17('replica');
    source = new pg.Client({ connectionString: await freshDatabase(await machinePg15(), 'syncline_redteam_x15') });
    target = new pg.Client({ connectionString: await freshDatabase(pg17, 'syncline_redteam_x17') });
    await source.connect();
    await target.connect();
  }, 120_000);

  afterAll(async () => {
    await source?.end();
    await target?.end();
    await pg17?.stop();
  });

  it('equal rows of every value-hashed type: no drift; one changed value found by the range sum', async () => {
    for (const c of [source, target]) {
      await c.query(`CREATE TABLE rt_x (id bigint PRIMARY KEY, s smallint, i integer, bo boolean, t text, u uuid, d date, b bytea, o oid, v varchar(20), c char(6), n numeric(10,3), j jsonb, ts timestamptz)`);
      await c.query(`INSERT INTO rt_x SELECT i * 4294967297, i % 100, -i, i % 2 = 0, 'tëxt' || i, md5(i::text)::uuid, date '2024-01-01' + i, decode(md5(i::text), 'hex'), i, 'v' || i, 'c' || (i % 10),
                       i / 7.0, jsonb_build_object('i', i), '2024-01-01 00:00:00+00'::timestamptz + i * interval '1 s' FROM generate_series(1, 3000) i`);
    }
    expect(await compareTable(source, target, { schema: 'public', table: 'rt_x' })).toMatchObject({ sourceRows: 3000, targetRows: 3000, differing: 0 });
    await target.query(`UPDATE rt_x SET t = t || 'x' WHERE id = 77 * 4294967297`);
    expect(await compareTable(source, target, { schema: 'public', table: 'rt_x' })).toMatchObject({ differing: 1, different: [`["${77n * 4294967297n}"]`] });
  });
});
