/**
 * A held table (its target missing) whose name has a dot in its schema and a double quote in
 * its name: `"Odd.Schema"."T ""q"""`. An acceptance pass (4) found apply stopping for good
 * ("not a table name: ...", the process exits, and again at every restart) as soon as it
 * retried the held table: it looked the table's entries up in the dead-letter queue by its
 * printed label through the command line's table-argument parser, which reads a label with a
 * double quote as SQL (and one with a dot in the schema as another table). Internal look-ups
 * now match the stored label exactly.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runPipeline } from '../../src/api/run-pipeline.js';
import { parseConfig } from '../../src/config/load.js';
import { compareTable } from '../../src/verify/compare.js';
import { freePort, machinePg15, slotStreaming, sourceAndTarget, testLogger, uniqueName, waitFor } from '../helpers/postgres.js';

const T = '"Odd.Schema"."T ""q"""';

describe('a held table with a dot in its schema and a double quote in its name', () => {
  const name = uniqueName('syncline_acc4_heldname');
  let dir: string;
  let source: pg.Client;
  let target: pg.Client;
  const ctl = new AbortController();
  let running: Promise<unknown> = Promise.resolve();
  let failure: unknown;

  beforeAll(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'syncline-acc4-heldname-'));
    const pair = await sourceAndTarget(await machinePg15(), name);
    ({ source, target } = pair);
    await source.query(`CREATE SCHEMA "Odd.Schema"; CREATE TABLE ${T} (id int PRIMARY KEY, v int NOT NULL)`);
    await target.query('CREATE SCHEMA "Odd.Schema"');
    const yaml = `source:
  url: ${pair.sourceUrl}
  slots: [{ name: ${name}, publication: ${name}_pub, tables: ['${T.replace(/'/g, "''")}'] }]
  snapshot: never
stream: { path: ${path.join(dir, 'stream')}, partitions: 2 }
consumer: { retry: { backoff_base_ms: 50, backoff_max_ms: 500, held_table_interval_ms: 500 } }
sink: { url: ${pair.targetUrl} }
monitoring: { port: ${await freePort()} }
`;
    running = runPipeline(parseConfig(yaml), 'run', await testLogger(), ctl.signal);
    running.catch((err: unknown) => {
      failure = err;
    });
    await waitFor('streaming', () => slotStreaming(source, name));
  }, 120_000);

  afterAll(async () => {
    ctl.abort();
    await running.catch(() => undefined);
    await source?.query('SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1 AND NOT active', [name]).catch(() => undefined);
    await source?.end();
    await target?.end();
    if (dir) await rm(dir, { recursive: true, force: true });
  }, 60_000);

  it('is held without stopping apply, and flows again once its target exists', async () => {
    await source.query(`INSERT INTO ${T} SELECT i, 0 FROM generate_series(1, 20) i`);
    await source.query(`UPDATE ${T} SET v = v + 1 WHERE id <= 10`);
    // Long enough for apply to hold the table and retry it a few times.
    await new Promise((r) => setTimeout(r, 3000));
    expect(failure).toBeUndefined();
    await target.query(`CREATE TABLE ${T} (id int PRIMARY KEY, v int NOT NULL)`);
    const t = { schema: 'Odd.Schema', table: 'T "q"' };
    await waitFor('target equals source', async () => (failure === undefined ? (await compareTable(source, target, t)).differing === 0 : true), 30_000, 500);
    expect(failure).toBeUndefined();
    expect(Number((await target.query(`SELECT count(*) AS n FROM ${T}`)).rows[0]?.n)).toBe(20);
  }, 90_000);
});
