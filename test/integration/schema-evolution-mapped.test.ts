/**
 * sink.schema_evolution through a `sink.tables` route: the definitions are read for the
 * route's source table and the columns take their target names; an excluded column is never
 * added.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runPipeline } from '../../src/api/run-pipeline.js';
import { parseConfig } from '../../src/config/load.js';
import { machinePg15, slotStreaming, sourceAndTarget, testLogger, uniqueName, waitFor } from '../helpers/postgres.js';

const SLOT = uniqueName('syncline_evolve_mapped');

describe('sink.schema_evolution full with a sink.tables route (postgres)', () => {
  let dir: string;
  let source: pg.Client;
  let target: pg.Client;
  let stop: () => Promise<void>;

  beforeAll(async () => {
    const server = await machinePg15();
    dir = await mkdtemp(path.join(os.tmpdir(), 'syncline-evolve-mapped-'));
    const pair = await sourceAndTarget(server, 'syncline_evolve_mapped');
    ({ source, target } = pair);
    await source.query('CREATE TABLE orders (id integer PRIMARY KEY, total integer NOT NULL, note text, secret text)');
    await target.query('CREATE SCHEMA reporting; CREATE TABLE reporting.orders_v2 (order_id integer PRIMARY KEY, total_amount integer NOT NULL, note text)');
    const config = parseConfig(
      `source:
  url: ${pair.sourceUrl}
  slots: [{ name: ${SLOT}, publication: ${SLOT}_pub, tables: [orders] }]
stream: { path: ${path.join(dir, 'stream')}, partitions: 2 }
consumer: { group_id: mapped, retry: { backoff_base_ms: 20, backoff_max_ms: 200, held_table_interval_ms: 200 } }
sink:
  url: ${pair.targetUrl}
  schema_evolution: full
  drop_columns: drop
  tables:
    public.orders:
      target: reporting.orders_v2
      columns: { id: order_id, total: total_amount }
      exclude_columns: [secret]
monitoring: { enabled: false }
dead_letter: { enabled: false }
`,
      {},
    );
    const ctl = new AbortController();
    const running = runPipeline(config, 'run', await testLogger(), ctl.signal);
    running.catch(() => undefined);
    stop = async () => {
      ctl.abort();
      await running;
    };
    await waitFor('streaming', () => slotStreaming(source, SLOT), 60_000);
  }, 120_000);

  afterAll(async () => {
    await stop?.();
    await source?.end();
    await target?.end();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('adds, renames and widens the target columns under their target names', { timeout: 90_000 }, async () => {
    await source.query(`INSERT INTO orders SELECT g, g, 'n' || g, 's' FROM generate_series(1, 20) g`);
    await source.query('ALTER TABLE orders ADD COLUMN extra text, ALTER COLUMN total TYPE bigint');
    await source.query(`INSERT INTO orders SELECT g, g + 3000000000, 'n' || g, 's', 'e' || g FROM generate_series(21, 40) g`);
    await source.query('ALTER TABLE orders RENAME COLUMN note TO remark');
    await source.query(`UPDATE orders SET remark = 'r' || id WHERE id <= 5`);
    const expected = (await source.query(`SELECT id::text, total::text, remark, extra FROM orders ORDER BY orders.id`)).rows.map((r: Record<string, string | null>) => Object.values(r));
    let last = '';
    await waitFor(
      'target equals source',
      async () => {
        try {
          const { rows } = await target.query(`SELECT order_id::text, total_amount::text, remark, extra FROM reporting.orders_v2 t ORDER BY t.order_id`);
          last = JSON.stringify(rows.map((r: Record<string, string | null>) => Object.values(r)));
          return last === JSON.stringify(expected);
        } catch (err) {
          last = (err as Error).message;
          return false; // not evolved yet
        }
      },
      60_000,
      200,
    ).catch((err: unknown) => {
      throw new Error(`${(err as Error).message}: target ${last}`);
    });
    const { rows } = await target.query(
      `SELECT attname AS name, format_type(atttypid, atttypmod) AS type FROM pg_attribute
        WHERE attrelid = 'reporting.orders_v2'::regclass AND attnum > 0 AND NOT attisdropped AND attname NOT LIKE '\\_syncline%' ORDER BY attnum`,
    );
    expect(rows).toEqual([
      { name: 'order_id', type: 'integer' },
      { name: 'total_amount', type: 'bigint' },
      { name: 'remark', type: 'text' },
      { name: 'extra', type: 'text' },
    ]);
  });
});
