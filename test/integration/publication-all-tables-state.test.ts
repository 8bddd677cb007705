/**
 * A `FOR ALL TABLES` publication (made by hand, `slots[0].tables` empty: the publication's
 * tables are replicated) also holds syncline's own state tables in the source
 * (`<state_schema>.snapshots`, `schema_versions`, `ddl_history`). Their changes are ignored
 * while streaming, but the initial snapshot read them: each had a job, and the target got
 * `syncline.snapshots`, `syncline.schema_versions` and `syncline.ddl_history` tables holding
 * copies of the source's bookkeeping, beside (and under the names of) the sink's own state.
 * Found by red17b (a slot made outside syncline, 01a9b28, read every published table: 303
 * jobs for 300 tables); the same on a slot syncline makes.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runPipeline } from '../../src/api/run-pipeline.js';
import { parseConfig } from '../../src/config/load.js';
import { freePort, machinePg15, slotStreaming, sourceAndTarget, testLogger, uniqueName, waitFor } from '../helpers/postgres.js';

describe('a FOR ALL TABLES publication: the initial snapshot', () => {
  const name = uniqueName('red17b_all_tables_state');
  let dir: string;
  let source: pg.Client;
  let target: pg.Client;
  let yaml: string;

  beforeAll(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'red17b-all-tables-state-'));
    const pair = await sourceAndTarget(await machinePg15(), name);
    ({ source, target } = pair);
    await source.query(`CREATE TABLE a (id int PRIMARY KEY, v text NOT NULL); INSERT INTO a VALUES (1, 'x'), (2, 'y');
      CREATE PUBLICATION ${name}_pub FOR ALL TABLES`);
    yaml = `source:
  url: ${pair.sourceUrl}
  slots: [{ name: ${name}, publication: ${name}_pub }]
stream: { path: ${path.join(dir, 'stream')}, partitions: 2 }
sink: { url: ${pair.targetUrl}, create_tables: true }
monitoring: { port: ${await freePort()} }
`;
  }, 60_000);

  afterAll(async () => {
    await source?.query('SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1 AND NOT active', [name]).catch(() => undefined);
    await source?.end();
    await target?.end();
    if (dir) await rm(dir, { recursive: true, force: true });
  }, 60_000);

  it("reads the user's tables, not syncline's own", async () => {
    const ctl = new AbortController();
    const running = runPipeline(parseConfig(yaml), 'run', await testLogger(), ctl.signal);
    running.catch(() => undefined);
    try {
      await waitFor('streaming', () => slotStreaming(source, name));
      await waitFor('no job unfinished', async () => Number((await source.query("SELECT count(*) AS n FROM syncline.snapshots WHERE slot_name = $1 AND status IN ('pending', 'running')", [name])).rows[0]?.n) === 0, 60_000, 250);
      await source.query("INSERT INTO a VALUES (3, 'z')");
      await waitFor('a at the target', async () => Number((await target.query('SELECT count(*) AS n FROM a').catch(() => ({ rows: [{ n: 0 }] }))).rows[0]?.n) === 3, 60_000, 250);
    } finally {
      ctl.abort();
      await running.catch(() => undefined);
    }
    const jobs = await source.query<{ t: string }>("SELECT table_schema || '.' || table_name AS t FROM syncline.snapshots WHERE slot_name = $1 ORDER BY id", [name]);
    expect(jobs.rows.map((r) => r.t)).toEqual(['public.a']);
    const copied = await target.query<{ t: string }>("SELECT table_name AS t FROM information_schema.tables WHERE table_schema = 'syncline' AND table_name IN ('snapshots', 'schema_versions', 'ddl_history') ORDER BY 1");
    expect(copied.rows).toEqual([]);
  }, 120_000);
});
