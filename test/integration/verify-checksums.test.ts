import type pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { compareTable, verifyTable } from '../../src/verify/compare.js';
import type { ApplyBarrier } from '../../src/verify/recheck.js';
import { machinePg15, sourceAndTarget } from '../helpers/postgres.js';

/**
 * verify's checksums (issue 14) against real PostgreSQL 15 databases: output settings
 * pinned (F8), keys matched exactly whatever their byte and UTF-16 orders (F9), bisection
 * down to the differing rows naming exactly them, keyless tables as multisets.
 */
describe('verify by range checksums (PostgreSQL 15)', () => {
  let source: pg.Client;
  let target: pg.Client;
  const urls = { source: '', target: '' };
  const both = async (sql: string): Promise<void> => {
    await source.query(sql);
    await target.query(sql);
  };

  beforeAll(async () => {
    const server = await machinePg15();
    const pair = await sourceAndTarget(server, 'syncline_verify14_sums');
    ({ source, target } = pair);
    urls.source = pair.sourceUrl;
    urls.target = pair.targetUrl;
    // The target database prints values differently by default (F8).
    const db = (await target.query<{ d: string }>('SELECT current_database() AS d')).rows[0]?.d ?? '';
    await target.query(`ALTER DATABASE ${db} SET timezone = 'America/New_York'`);
    await target.query(`ALTER DATABASE ${db} SET datestyle = 'SQL, DMY'`);
    await target.query(`ALTER DATABASE ${db} SET intervalstyle = 'sql_standard'`);
    await target.query(`ALTER DATABASE ${db} SET extra_float_digits = 0`);
    await target.query(`ALTER DATABASE ${db} SET bytea_output = 'escape'`);
    await target.end();
    const pg = (await import('pg')).default;
    target = new pg.Client({ connectionString: server.url(db) });
    await target.connect();
  });

  afterAll(async () => {
    await source?.end();
    await target?.end();
  });

  it('no false drift when the target database has other TimeZone/DateStyle/IntervalStyle/extra_float_digits/bytea_output defaults', async () => {
    await both(`CREATE TABLE typed (id int PRIMARY KEY, ts timestamptz, d date, f float8, iv interval, b bytea, n numeric(12,3))`);
    // Values written as literals with an explicit zone, so both databases store the same.
    await both(`INSERT INTO typed SELECT i, '2024-03-01 12:00:00+00'::timestamptz + i * interval '1 hour 7 min', date '2024-01-01' + i,
                  i / 7.0::float8, make_interval(days => i, secs => i * 1.5), decode(md5(i::text), 'hex'), i / 3.0 FROM generate_series(1, 5000) i`);
    const drift = await compareTable(source, target, { schema: 'public', table: 'typed' });
    expect(drift).toMatchObject({ sourceRows: 5000, targetRows: 5000, differing: 0 });
    // The comparison did not leave the caller's sessions changed.
    expect((await target.query<{ tz: string }>("SELECT current_setting('timezone') AS tz")).rows[0]?.tz).toBe('America/New_York');
    // A real difference is still found.
    await target.query(`UPDATE typed SET f = f + 1e-12 WHERE id = 77`);
    const after = await compareTable(source, target, { schema: 'public', table: 'typed' });
    expect(after).toMatchObject({ differing: 1, different: ['["77"]'], missing: [], extra: [] });
  });

  it('range sums over value hashes miss no difference the row text shows (one per column type, including 1.5 vs 1.50, 1 day vs 24 hours, 0 vs -0)', async () => {
    await both(`CREATE COLLATION IF NOT EXISTS nocase (provider = icu, locale = 'und-u-ks-level2', deterministic = false)`);
    await both(`CREATE TABLE hashed (id bigint PRIMARY KEY, ci text COLLATE nocase, ts timestamptz, t timestamp(3), d date, s smallint, bo boolean, u uuid, v varchar(20), c char(4), nd numeric(8,2), tm time,
                                     b bytea, j jsonb, js json, n numeric, iv interval, f float8, tx text)`);
    await both(`INSERT INTO hashed SELECT i, 'name' || i, '2024-03-01 12:00:00+00'::timestamptz + i * interval '1 min', '2024-03-01 12:00:00.123'::timestamp + i * interval '1 s',
                  date '2024-01-01' + i, (i % 100)::smallint, i % 2 = 0, md5(i::text)::uuid, 'v' || i, 'c' || (i % 10), i / 7.0, time '10:00' + i * interval '1 s', decode(md5(i::text), 'hex'),
                  jsonb_build_object('i', i), json_build_object('i', i), 1.5, interval '1 day', 0, 'x' || i FROM generate_series(1, 3000) i`);
    expect(await compareTable(source, target, { schema: 'public', table: 'hashed' })).toMatchObject({ sourceRows: 3000, targetRows: 3000, differing: 0 });
    const edits = [
      `ci = upper(ci)`, `ts = ts + interval '1 microsecond'`, `t = t + interval '1 millisecond'`, `d = d + 1`, `s = s + 1`, `bo = NOT bo`, `u = md5('other')::uuid`,
      `v = v || ' '`, `c = 'z'`, `nd = nd + 0.01`, `tm = tm + interval '1 microsecond'`, `b = b || '\\x00'::bytea`, `j = jsonb_build_object('i', '1')`, `js = '{"i" : 1}'::json`, `n = 1.50`, `iv = interval '24 hours'`,
      `f = '-0'::float8`, `tx = NULL`,
    ];
    // One edit at a time (rolled back after), so the range sum alone must notice it.
    const found: string[] = [];
    for (const [i, edit] of edits.entries()) {
      await target.query('BEGIN');
      await target.query(`UPDATE hashed SET ${edit} WHERE id = ${(i + 1) * 101}`);
      const drift = await compareTable(source, target, { schema: 'public', table: 'hashed' });
      await target.query('ROLLBACK');
      found.push(`${edit}: ${drift.different.join(',')}`);
    }
    expect(found).toEqual(edits.map((edit, i) => `${edit}: ["${(i + 1) * 101}"]`));
  });

  it('keys with emoji and U+FFFD: exact counts (UTF-8 and UTF-16 orders differ)', async () => {
    await both(`CREATE TABLE utf (k text PRIMARY KEY, v int)`);
    await source.query(`INSERT INTO utf VALUES ('x\uFFFD', 1), ('x😀', 2), ('y', 3), ('a😀b', 4), ('a\uFFFDb', 5)`);
    await target.query(`INSERT INTO utf VALUES ('x😀', 2), ('y', 3), ('a😀b', 4), ('a\uFFFDb', 5), ('z😀', 6)`);
    const drift = await compareTable(source, target, { schema: 'public', table: 'utf' });
    expect(drift).toMatchObject({ sourceRows: 5, targetRows: 5, differing: 2, missing: ['["x\uFFFD"]'], extra: ['["z😀"]'], different: [] });
  });

  it('bisects ranges down to rows: 5 changed, 3 deleted, 2 added among 30,000 names exactly those 10 keys (composite key, on 2 connection pairs)', async () => {
    await both(`CREATE TABLE wide (region text, id bigint, payload text, amount numeric, PRIMARY KEY (region, id))`);
    await both(`INSERT INTO wide SELECT 'r' || (i % 7), i, repeat(md5(i::text), 3), i * 1.25 FROM generate_series(1, 30000) i`);
    await target.query(`UPDATE wide SET amount = amount + 1 WHERE id IN (5, 6000, 12001, 20000, 29999)`);
    await target.query(`DELETE FROM wide WHERE id IN (1, 15000, 30000)`);
    await target.query(`INSERT INTO wide VALUES ('r0', 40000, 'x', 1), ('zz', 1, 'y', 2)`);
    const pg = (await import('pg')).default;
    const s2 = new pg.Client({ connectionString: urls.source });
    const t2 = new pg.Client({ connectionString: urls.target });
    await s2.connect();
    await t2.connect();
    const pairs = [{ source, target }, { source: s2, target: t2 }];
    const result = await verifyTable(pairs, { schema: 'public', table: 'wide' }, undefined, { rangeRows: 4000, leafRows: 100, fanout: 4 }).finally(async () => {
      await s2.end();
      await t2.end();
    });
    const key = (id: number): string => JSON.stringify([`r${id % 7}`, String(id)]);
    expect(result.keyColumns).toEqual(['region', 'id']);
    expect(result.differing).toBe(10);
    expect([...result.different].sort()).toEqual([5, 6000, 12001, 20000, 29999].map(key).sort());
    expect([...result.missing].sort()).toEqual([1, 15000, 30000].map(key).sort());
    expect([...result.extra].sort()).toEqual(['["r0","40000"]', '["zz","1"]'].sort());
    expect(result).toMatchObject({ sourceRows: 30000, targetRows: 29999 });
  });

  it('a keyless table is compared as a multiset (duplicates count)', async () => {
    await both(`CREATE TABLE bag (a int, b text)`);
    await both(`INSERT INTO bag SELECT i % 100, 'v' || (i % 100) FROM generate_series(1, 3000) i`);
    await target.query(`DELETE FROM bag WHERE ctid IN (SELECT ctid FROM bag WHERE a = 5 LIMIT 2)`);
    await target.query(`INSERT INTO bag VALUES (7, 'v7'), (1000, 'new')`);
    const drift = await compareTable(source, target, { schema: 'public', table: 'bag' });
    expect(drift).toMatchObject({ sourceRows: 3000, targetRows: 3000, differing: 4, different: [], keyColumns: [] });
    expect(drift.missing).toEqual(['["5","v5"]', '["5","v5"]']);
    expect([...drift.extra].sort()).toEqual(['["1000","new"]', '["7","v7"]']);
  });

  it('a keyless table under lag: only what persists after the barrier is drift; a group changing in every round is unsettled, not drift', async () => {
    await both(`CREATE TABLE bag2 (a int, b text)`);
    await both(`INSERT INTO bag2 SELECT i % 100, 'v' || (i % 100) FROM generate_series(1, 2000) i`);
    // Real drift: behind syncline's back at the target.
    await target.query(`DELETE FROM bag2 WHERE ctid IN (SELECT ctid FROM bag2 WHERE a = 5 LIMIT 2)`);
    await target.query(`INSERT INTO bag2 VALUES (1000, 'new')`);
    // Lag: source changes (duplicates added and one copy removed) that apply has not made yet.
    const lagging = [`INSERT INTO bag2 VALUES (7, 'v7'), (7, 'v7'), (7, 'v7')`, `DELETE FROM bag2 WHERE ctid IN (SELECT ctid FROM bag2 WHERE a = 9 LIMIT 1)`];
    for (const q of lagging) await source.query(q);
    // A hot row: one more copy inserted at the source every time verify waits, never applied.
    await source.query(`INSERT INTO bag2 VALUES (1, 'hot')`);
    const t = { schema: 'public', table: 'bag2' };

    const asRead = await compareTable(source, target, t);
    expect(asRead).toMatchObject({ differing: 8, lagChecked: false, unsettled: 0 });

    let waits = 0;
    const barrier: ApplyBarrier = async () => {
      if (waits++ === 0) for (const q of lagging) await target.query(q);
      await source.query(`INSERT INTO bag2 VALUES (1, 'hot')`);
      return 'reached';
    };
    const result = await verifyTable([{ source, target }], t, undefined, { barrier });
    expect(result).toMatchObject({ differing: 3, different: [], unsettled: 1, lagChecked: true, keyColumns: [] });
    expect(result.missing).toEqual(['["5","v5"]', '["5","v5"]']);
    expect(result.extra).toEqual(['["1000","new"]']);
    expect(waits).toBe(4);

    // Nothing streams the slot: one round, reported as read.
    await source.query(`DELETE FROM bag2 WHERE b = 'hot'`);
    const unavailable = await verifyTable([{ source, target }], t, undefined, { barrier: () => Promise.resolve('unavailable') });
    expect(unavailable).toMatchObject({ differing: 3, unsettled: 0, lagChecked: false });
  });
});
