/**
 * `syncline verify` of a table whose target table does not exist: under `sink.create_tables`
 * apply creates it with the table's first row, so an empty source table (pgbench_history
 * right after `pgbench -i`) has none, and verify stopped with exit 2. Now an empty source
 * table with no target table is identical, with a note; one with rows waits for apply (the
 * barrier) and is an error only if the table is still missing then.
 */
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { describeVerification } from '../../src/cli/commands/verify.js';
import { verifyTable } from '../../src/verify/compare.js';
import { machinePg15, sourceAndTarget, uniqueName } from '../helpers/postgres.js';

describe('verify: a target table apply has not created', () => {
  let source: pg.Client;
  let target: pg.Client;

  beforeAll(async () => {
    ({ source, target } = await sourceAndTarget(await machinePg15(), uniqueName('syncline_verify_missing')));
    await source.query('CREATE TABLE empty_t (a int, b int, v text, PRIMARY KEY (b, a))');
    await source.query('CREATE TABLE hist (v text)');
    await source.query('CREATE TABLE full_t (id int PRIMARY KEY, v text)');
    await source.query(`INSERT INTO full_t SELECT i, 'v' || i FROM generate_series(1, 100) i`);
  }, 60_000);

  afterAll(async () => {
    await source?.end();
    await target?.end();
  });

  it('an empty source table is identical, with a note saying why there is no target table', async () => {
    for (const table of ['empty_t', 'hist']) {
      const r = await verifyTable([{ source, target }], { schema: 'public', table }, undefined);
      expect(r).toMatchObject({ table: `public.${table}`, sourceRows: 0, targetRows: 0, differing: 0, missing: [], extra: [], different: [] });
      expect(r.keyColumns).toEqual(table === 'empty_t' ? ['b', 'a'] : []);
      expect(describeVerification(r)).toContain(`target table public.${table} does not exist: the source table is empty`);
    }
  });

  it('a source table with rows and no target table is an error naming both', async () => {
    await expect(verifyTable([{ source, target }], { schema: 'public', table: 'full_t' }, undefined)).rejects.toThrow(
      'target table public.full_t does not exist, but the source table public.full_t has rows: is apply running',
    );
    // Still missing after apply caught up: the same error.
    const waited: string[] = [];
    await expect(verifyTable([{ source, target }], { schema: 'public', table: 'full_t' }, undefined, { barrier: async (lsn) => (waited.push(lsn), 'reached') })).rejects.toThrow('has rows');
    expect(waited).toHaveLength(1);
  });

  it('a table whose first rows are on their way is compared once apply caught up', async () => {
    const barrier = async (): Promise<'reached'> => {
      // What apply does meanwhile: creates the table with its first rows.
      await target.query('CREATE TABLE full_t (id int PRIMARY KEY, v text)');
      await target.query(`INSERT INTO full_t SELECT i, 'v' || i FROM generate_series(1, 100) i`);
      return 'reached';
    };
    const r = await verifyTable([{ source, target }], { schema: 'public', table: 'full_t' }, undefined, { barrier });
    expect(r).toMatchObject({ sourceRows: 100, targetRows: 100, differing: 0 });
  });
});
