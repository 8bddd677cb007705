import type pg from 'pg';
import { afterAll, describe, expect, it } from 'vitest';
import { silentLogger } from '../../src/log/logger.js';
import { Metrics } from '../../src/metrics/metrics.js';
import { freshMysqlDatabase, mysqlRows, type MysqlTestDatabase } from '../helpers/mysql.js';
import { pipelineFixture, type PipelineFixture } from '../helpers/pipeline-fixture.js';
import { uniqueName, waitFor } from '../helpers/postgres.js';

// A row inserted and deleted at the source is no duplicate: on a clean run (no restart, no
// replay) sync_events_stale_total stays 0 and sync_duplicate_rate 0. A delete whose insert the
// batch folded away (or that arrives after the insert's row is gone) removes nothing at the
// target but advances the key's tombstone: the version gate accepted it, so it is applied.
// Before, the SQL sinks counted it stale, and the folded insert with it, so a queue-like
// workload read as ~75 % duplicates with sync_events_duplicate_total 0.

const PAIRS_IN_ONE_TX = 200;
const PAIRS_ACROSS_TXS = 20;
const SENTINEL = 1_000_000;

/** Inserts and deletes at the source: each key once, as a queue does. */
async function queueWorkload(source: pg.Client, waitApplied: (id: number) => Promise<void>): Promise<void> {
  for (let i = 1; i <= PAIRS_IN_ONE_TX; i++) await source.query(`BEGIN; INSERT INTO items VALUES (${i}, 'job'); DELETE FROM items WHERE id = ${i}; COMMIT`);
  for (let i = 1; i <= PAIRS_ACROSS_TXS; i++) {
    const id = 10_000 + i;
    await source.query(`INSERT INTO items VALUES (${id}, 'job')`);
    // A few of them wait until the row is at the target, so their delete removes it in a batch of its own.
    if (i <= 3) await waitApplied(id);
    await source.query(`DELETE FROM items WHERE id = ${id}`);
  }
  // One stream partition: once the sentinel has come and gone, everything before it was applied.
  await source.query(`INSERT INTO items VALUES (${SENTINEL}, 'sentinel')`);
  await waitApplied(SENTINEL);
  await source.query(`DELETE FROM items WHERE id = ${SENTINEL}`);
}

const sample = (text: string, name: string, labels = ''): number => {
  const m = new RegExp(`^${name}${labels.replace(/[{}.]/g, '\\$&')} (\\S+)$`, 'm').exec(text);
  return m ? Number(m[1]) : NaN;
};

describe('a clean run of inserts each deleted again counts no stale change and no duplicate share', () => {
  const fixtures: PipelineFixture[] = [];
  let mysqlDb: MysqlTestDatabase | undefined;

  /** A source, a target, a slot and a stream of the test's own. */
  const fixture = async (name: string): Promise<PipelineFixture> => {
    const fx = await pipelineFixture(uniqueName(name));
    fixtures.push(fx);
    for (const c of [fx.source, fx.target]) await c.query('CREATE TABLE items (id int PRIMARY KEY, v text)');
    return fx;
  };

  afterAll(async () => {
    await mysqlDb?.drop();
    for (const fx of fixtures) await fx.close();
  });

  const check = async (metrics: Metrics, targetRows: () => Promise<number>): Promise<void> => {
    await waitFor('target empty', async () => (await targetRows()) === 0, 30_000, 100);
    const text = await metrics.registry.metrics();
    const total = 2 * (PAIRS_IN_ONE_TX + PAIRS_ACROSS_TXS + 1);
    expect(sample(text, 'sync_events_consumed_total')).toBeGreaterThanOrEqual(total);
    expect(sample(text, 'sync_events_duplicate_total', '{table="public.items"}')).toBe(0);
    expect(sample(text, 'sync_events_stale_total', '{table="public.items"}')).toBe(0);
    expect(sample(text, 'sync_events_applied_total', '{table="public.items"}')).toBeGreaterThan(0);
    expect(sample(text, 'sync_duplicate_rate')).toBe(0);
  };

  it('postgres target', async () => {
    const fx = await fixture('duprate_deletes_pg');
    const metrics = new Metrics();
    const running = await fx.start(await fx.yaml({ slot: 'tables: [items]', source: ['snapshot: never'], partitions: 1 }), { metrics, logger: silentLogger() });
    try {
      const at = async (id: number): Promise<boolean> => (await fx.target.query('SELECT 1 FROM items WHERE id = $1', [id])).rowCount === 1;
      await queueWorkload(fx.source, (id) => waitFor(`row ${id} at the target`, () => at(id), 30_000, 50));
      await check(metrics, async () => (await fx.target.query<{ n: number }>('SELECT count(*)::int AS n FROM items')).rows[0]?.n ?? -1);
    } finally {
      await running.stop();
    }
  }, 120_000);

  it('mysql target (MariaDB)', async () => {
    const fx = await fixture('duprate_deletes_my');
    mysqlDb = await freshMysqlDatabase(uniqueName('duprate_deletes_my'));
    const db = mysqlDb;
    await db.admin.query('CREATE TABLE items (id INT PRIMARY KEY, v TEXT)');
    // The dead-letter queue lives in a PostgreSQL database: the (unused) postgres target's.
    const yaml = (await fx.yaml({ slot: 'tables: [items]', source: ['snapshot: never'], partitions: 1, extra: [`dead_letter: { url: '${fx.targetUrl}' }`] })).replace(`url: ${fx.targetUrl}`, `type: mysql, url: '${db.url}'`);
    expect(yaml).toContain('type: mysql');
    const metrics = new Metrics();
    const running = await fx.start(yaml, { metrics, logger: silentLogger() });
    try {
      const at = async (id: number): Promise<boolean> => (await mysqlRows(db.admin, 'SELECT 1 FROM items WHERE id = ?', [id])).length === 1;
      await queueWorkload(fx.source, (id) => waitFor(`row ${id} at the target`, () => at(id), 30_000, 50));
      await check(metrics, async () => Number((await mysqlRows<{ n: number }>(db.admin, 'SELECT count(*) AS n FROM items'))[0]?.n ?? -1));
    } finally {
      await running.stop();
    }
  }, 120_000);
});
