import type pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { compareTable } from '../../src/verify/compare.js';
import { machinePg15, sourceAndTarget } from '../helpers/postgres.js';

/**
 * Red-team findings (second round) against verify's column reading (shape.ts `col`, the
 * `trim_scale` rule) and its range sums of value hashes (`rowHash`, `hashedValue`). Edits are
 * made in a rolled-back transaction at the target, as in redteam-verify.test.ts.
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
});
