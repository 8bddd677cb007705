/**
 * A slot made outside syncline, first start, with a configured table the publication lacks
 * (red17): the start adds the table to the publication, and only later records the skipped
 * jobs of the tables the operator loaded and the added table's snapshot job. A start that ends
 * in between (kill -9 at ~0.55 s of a first `syncline run`, or a standby stopped while another
 * capture leads: ensurePublication runs before the leadership) leaves the table in the
 * publication with no job; the next start finds the publication in place, takes the table for
 * one the operator loaded and records it as skipped: its rows from before never reach the
 * target. Repro by hand: slot and publication (loaded) made by hand, config [loaded, extra]
 * (extra 7 rows), kill -9 `syncline run` 0.56 s after it started, run again, insert into extra:
 * 1 row of 8 at the target, job extra:skipped. Since then a slot made outside is read
 * whole under `source.snapshot: initial` (slot-made-outside.test.ts): every table's job done.
 */
import { once } from 'node:events';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runPipeline } from '../../src/api/run-pipeline.js';
import { parseConfig } from '../../src/config/load.js';
import { ensureBuilt } from '../helpers/cli.js';
import { startCli } from '../helpers/cli-process.js';
import { freePort, machinePg15, slotStreaming, sourceAndTarget, testLogger, uniqueName, waitFor } from '../helpers/postgres.js';

describe('a slot made outside syncline: a first start that added a configured table and ended before its job', () => {
  const name = uniqueName('red17_premade_crash');
  let dir: string;
  let source: pg.Client;
  let target: pg.Client;
  let sourceUrl: string;
  let yaml: string;
  let configFile: string;

  beforeAll(async () => {
    ensureBuilt();
    dir = await mkdtemp(path.join(os.tmpdir(), 'red17-premade-crash-'));
    const pair = await sourceAndTarget(await machinePg15(), name);
    ({ source, target, sourceUrl } = pair);
    await source.query(`CREATE TABLE loaded (id int PRIMARY KEY, v int NOT NULL DEFAULT 0);
      CREATE TABLE extra (id int PRIMARY KEY);
      INSERT INTO loaded SELECT i, 0 FROM generate_series(1, 100) i; INSERT INTO extra SELECT generate_series(1, 7);
      CREATE PUBLICATION ${name}_pub FOR TABLE loaded`);
    await source.query("SELECT pg_create_logical_replication_slot($1, 'pgoutput')", [name]);
    // The operator loaded `loaded` from the slot's consistent point; `extra` is syncline's to read.
    await target.query('CREATE TABLE loaded (id int PRIMARY KEY, v int NOT NULL DEFAULT 0); INSERT INTO loaded SELECT i, 0 FROM generate_series(1, 100) i; CREATE TABLE extra (id int PRIMARY KEY)');
    yaml = `source:
  url: ${pair.sourceUrl}
  slots: [{ name: ${name}, publication: ${name}_pub, tables: [loaded, extra] }]
stream: { path: ${path.join(dir, 'stream')}, partitions: 2 }
sink: { url: ${pair.targetUrl} }
monitoring: { port: ${await freePort()} }
`;
    configFile = path.join(dir, 'config.yaml');
    await writeFile(configFile, yaml);
  }, 120_000);

  afterAll(async () => {
    await source?.query('SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1 AND NOT active', [name]).catch(() => undefined);
    await source?.end();
    await target?.end();
    if (dir) await rm(dir, { recursive: true, force: true });
  }, 60_000);

  it('reads the added table at the next start, not records it as skipped', async () => {
    // The window made wide: the slot's leadership is held, so the first start waits as a
    // standby right after its publication step; it is killed there (-9), as a crash would.
    const holder = new pg.Client({ connectionString: sourceUrl });
    await holder.connect();
    const log = path.join(dir, 'first.log');
    try {
      await holder.query("SELECT pg_advisory_lock(hashtext('syncline.capture'), hashtext($1))", [name]);
      const first = startCli(log, 'run', '-c', configFile);
      const exited = once(first, 'exit');
      try {
        await waitFor('the first start waiting as a standby', async () => (await readFile(log, 'utf8').catch(() => '')).includes('standby'), 60_000, 100);
      } finally {
        first.kill('SIGKILL');
        await exited;
      }
    } finally {
      await holder.end();
    }

    const ctl = new AbortController();
    const running = runPipeline(parseConfig(yaml), 'run', await testLogger(), ctl.signal);
    running.catch(() => undefined);
    const extraRows = async (): Promise<number> => Number((await target.query('SELECT count(*) AS n FROM extra')).rows[0]?.n);
    const jobs = async (): Promise<string[]> =>
      (await source.query<{ t: string; status: string }>('SELECT table_name AS t, status FROM syncline.snapshots WHERE slot_name = $1 ORDER BY table_name, id', [name])).rows.map((j) => `${j.t}:${j.status}`);
    try {
      await waitFor('streaming', () => slotStreaming(source, name));
      await source.query('INSERT INTO extra VALUES (8); UPDATE loaded SET v = 1 WHERE id <= 10');
      await waitFor('changes applied', async () => Number((await target.query('SELECT count(*) AS n FROM loaded WHERE v = 1')).rows[0]?.n) === 10, 60_000, 250);
      await waitFor('extra read whole', async () => (await extraRows()) === 8, 30_000, 250, async () => `${await extraRows()} rows of 8 at the target; jobs ${JSON.stringify(await jobs())}`);
    } finally {
      ctl.abort();
      await running.catch(() => undefined);
    }
    expect(await jobs()).toEqual(['extra:done', 'loaded:done']);
  }, 180_000);
});
