import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { compareTable, verifyTable } from '../../src/verify/compare.js';
import { machinePg15, sourceAndTarget } from '../helpers/postgres.js';

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
