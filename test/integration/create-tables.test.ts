import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runPipeline } from '../../src/api/run-pipeline.js';
import { parseConfig } from '../../src/config/load.js';
import { compareTable } from '../../src/verify/compare.js';
import { machinePg15, slotStreaming, testLogger, waitFor, sourceAndTarget, uniqueName } from '../helpers/postgres.js';

const SLOT = uniqueName('syncline_create');

describe('sink.create_tables: a target without the tables gets them from the source definition', () => {
  let dir: string;
  let source: pg.Client;
  let target: pg.Client;
  let stop: () => Promise<void>;

  beforeAll(async () => {
    const server = await machinePg15();
    dir = await mkdtemp(path.join(os.tmpdir(), 'syncline-create-'));
    const pair = await sourceAndTarget(server, 'syncline_create');
    ({ source, target } = pair);
    const { sourceUrl, targetUrl } = pair;
    await source.query(`CREATE SCHEMA "Sales";
      CREATE TABLE "Sales"."Order Lines" (order_id bigint, line smallint, sku varchar(32) NOT NULL, price numeric(10,2),
        tags text[], placed timestamptz(3), PRIMARY KEY (order_id, line))`);
    await source.query(`INSERT INTO "Sales"."Order Lines" SELECT g / 3, g % 3, 'sku-' || g, g * 1.25, ARRAY['a', 'b'], now() FROM generate_series(1, 300) g`);
    const config = parseConfig(
      `source:
  url: ${sourceUrl}
  slots: [{ name: ${SLOT}, publication: syncline_create_pub, tables: ['"Sales"."Order Lines"'] }]
stream: { path: ${path.join(dir, 'stream')}, partitions: 2 }
sink: { url: ${targetUrl}, create_tables: true }
monitoring: { enabled: false }
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
    await waitFor('streaming', () => slotStreaming(source, SLOT));
  }, 60_000);

  afterAll(async () => {
    await stop?.();
    await source?.end();
    await target?.end();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('creates the table (columns, types, NOT NULL, primary key) and fills it by snapshot and stream', async () => {
    await source.query(`UPDATE "Sales"."Order Lines" SET price = price + 1 WHERE line = 0`);
    await source.query(`DELETE FROM "Sales"."Order Lines" WHERE order_id = 7`);
    const t = { schema: 'Sales', table: 'Order Lines' };
    await waitFor('target equals source', async () => {
      try {
        return (await compareTable(source, target, t)).differing === 0;
      } catch {
        return false; // the table does not exist yet
      }
    }, 60_000, 300);
    const { rows } = await target.query(
      `SELECT a.attname, format_type(a.atttypid, a.atttypmod) AS type, a.attnotnull
         FROM pg_attribute a WHERE a.attrelid = '"Sales"."Order Lines"'::regclass AND a.attnum > 0 AND NOT a.attisdropped AND a.attname NOT LIKE '\\_syncline%' ORDER BY a.attnum`,
    );
    expect(rows).toEqual([
      { attname: 'order_id', type: 'bigint', attnotnull: true },
      { attname: 'line', type: 'smallint', attnotnull: true },
      { attname: 'sku', type: 'character varying(32)', attnotnull: true },
      { attname: 'price', type: 'numeric(10,2)', attnotnull: false },
      { attname: 'tags', type: 'text[]', attnotnull: false },
      { attname: 'placed', type: 'timestamp(3) with time zone', attnotnull: false },
    ]);
  });
});
