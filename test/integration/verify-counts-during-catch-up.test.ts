/**
 * `syncline verify` while apply catches up (a fresh pipeline's snapshot): an acceptance pass
 * got `public.t_big: source 196734, target 194370, identical` with no word on why the counts
 * differ. A range's counts are read once, at the top; where they differ the range is split,
 * and by the time its parts were compared apply had written the missing rows, so no key was
 * a candidate and the "counted before apply caught up" note (countsBeforeCatchUp) stayed off.
 * Here the target's missing rows arrive right after its first count, as apply's would.
 */
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { describeVerification } from '../../src/cli/commands/verify.js';
import { verifyTable } from '../../src/verify/compare.js';
import { machinePg15, sourceAndTarget, uniqueName } from '../helpers/postgres.js';

describe('verify: counts read before apply caught up, no differing key left', () => {
  let source: pg.Client;
  let target: pg.Client;
  let writer: pg.Client;

  beforeAll(async () => {
    const pair = await sourceAndTarget(await machinePg15(), uniqueName('syncline_acc2_counts'));
    ({ source, target } = pair);
    writer = new pg.Client({ connectionString: pair.targetUrl });
    await writer.connect();
    for (const c of [source, target]) await c.query('CREATE TABLE t (id int PRIMARY KEY, v text)');
    await source.query(`INSERT INTO t SELECT i, 'v' || i FROM generate_series(1, 3000) i`);
    await target.query(`INSERT INTO t SELECT i, 'v' || i FROM generate_series(1, 2990) i`);
  }, 60_000);

  afterAll(async () => {
    await writer?.end();
    await source?.end();
    await target?.end();
  });

  it('says the counts are from before apply caught up', async () => {
    let caughtUp = false;
    // The target as apply would leave it: the missing rows land right after the first count.
    const lagging = new Proxy(target, {
      get(obj, prop) {
        if (prop !== 'query') {
          const v = Reflect.get(obj, prop) as unknown;
          return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(obj) : v;
        }
        return async (...args: Parameters<pg.Client['query']>) => {
          const r = await (obj.query as (...a: unknown[]) => Promise<unknown>)(...args);
          const text = typeof args[0] === 'string' ? args[0] : (args[0] as { text?: string }).text;
          if (!caughtUp && text?.includes('count(*)::text AS n')) {
            caughtUp = true;
            await writer.query(`INSERT INTO t SELECT i, 'v' || i FROM generate_series(2991, 3000) i`);
          }
          return r;
        };
      },
    });
    const r = await verifyTable([{ source, target: lagging }], { schema: 'public', table: 't' }, undefined);
    expect(caughtUp).toBe(true);
    expect(r).toMatchObject({ sourceRows: 3000, targetRows: 2990, differing: 0, countsBeforeCatchUp: true });
    expect(describeVerification(r)).toContain('source 3000, target 2990 (counted before apply caught up), identical');
  }, 60_000);
});
