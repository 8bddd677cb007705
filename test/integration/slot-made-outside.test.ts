/**
 * A slot made outside syncline (`pg_create_logical_replication_slot`, e.g. before loading the
 * target by hand from the slot's consistent point) is taken as the operator's initial load:
 * `source.snapshot: initial` snapshots when syncline creates the slot, not an existing one.
 * Since the first-definition rule (c174051) every such table was instead snapshotted on its
 * first change, lazily and table by table: the pipeline benchmark published 210,000 changes
 * for 200,000 inserts, and a table never changed was never read. Now the tables present at
 * the first start on such a slot are recorded as `skipped` snapshot jobs (with the command
 * that reads them), and the rule stays for tables that join the publication later.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runPipeline } from '../../src/api/run-pipeline.js';
import { parseConfig } from '../../src/config/load.js';
import { Metrics } from '../../src/metrics/metrics.js';
import { freePort, machinePg15, slotStreaming, sourceAndTarget, testLogger, uniqueName, waitFor } from '../helpers/postgres.js';

describe('a slot made outside syncline before its first start', () => {
  const name = uniqueName('syncline_premade');
  let dir: string;
  let source: pg.Client;
  let target: pg.Client;
  let yaml: string;

  beforeAll(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'syncline-premade-'));
    const pair = await sourceAndTarget(await machinePg15(), name);
    ({ source, target } = pair);
    await source.query(`CREATE TABLE loaded (id int PRIMARY KEY, v int NOT NULL DEFAULT 0);
      CREATE TABLE quiet (id int PRIMARY KEY);
      CREATE PUBLICATION ${name}_pub FOR TABLE loaded, quiet`);
    await source.query("SELECT pg_create_logical_replication_slot($1, 'pgoutput')", [name]);
    // Written after the slot's consistent point: in the slot, so not lost by skipping a snapshot.
    await source.query('INSERT INTO loaded SELECT i, 0 FROM generate_series(1, 100) i; INSERT INTO quiet VALUES (1)');
    await target.query('CREATE TABLE loaded (id int PRIMARY KEY, v int NOT NULL DEFAULT 0); CREATE TABLE quiet (id int PRIMARY KEY)');
    yaml = `source:
  url: ${pair.sourceUrl}
  slots: [{ name: ${name}, publication: ${name}_pub, tables: [loaded, quiet] }]
stream: { path: ${path.join(dir, 'stream')}, partitions: 2 }
sink: { url: ${pair.targetUrl} }
monitoring: { port: ${await freePort()} }
`;
  }, 120_000);

  afterAll(async () => {
    await source?.query('SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1 AND NOT active', [name]).catch(() => undefined);
    await source?.end();
    await target?.end();
    if (dir) await rm(dir, { recursive: true, force: true });
  }, 60_000);

  const published = async (m: Metrics): Promise<number> =>
    ((await m.registry.getSingleMetric('sync_events_published_total')?.get())?.values ?? []).reduce((s, v) => s + v.value, 0);

  it('streams the slot and snapshots nothing, across a restart', async () => {
    for (const round of [1, 2]) {
      const ctl = new AbortController();
      const metrics = new Metrics();
      const running = runPipeline(parseConfig(yaml), 'run', await testLogger(), ctl.signal, metrics);
      running.catch(() => undefined);
      try {
        await waitFor('streaming', () => slotStreaming(source, name));
        await source.query('UPDATE loaded SET v = v + 1 WHERE id <= 10');
        await waitFor('updates applied', async () => Number((await target.query('SELECT count(*) AS n FROM loaded WHERE v = $1', [round])).rows[0]?.n) === 10, 60_000, 250);
        // Time for a snapshot that would have been queued by the first change to show.
        await new Promise((r) => setTimeout(r, 3000));
        expect(await published(metrics)).toBe(round === 1 ? 111 : 10);
      } finally {
        ctl.abort();
        await running.catch(() => undefined);
      }
    }
    const jobs = await source.query<{ t: string; status: string; error: string | null }>(
      'SELECT table_name AS t, status, error FROM syncline.snapshots WHERE slot_name = $1 ORDER BY id', [name]);
    expect(jobs.rows.map((j) => `${j.t}:${j.status}`)).toEqual(['loaded:skipped', 'quiet:skipped']);
    expect(jobs.rows[0]?.error).toContain('syncline snapshot');
  }, 180_000);
});

/**
 * The same first start, with a configured table not yet in the publication: syncline adds it
 * and snapshots it (its rows are in no change of the slot), and the tables already published
 * are still the operator's. The snapshot job of the added table, queued first, made the start
 * take the slot for syncline's own, and the others were snapshotted at their first change.
 */
describe('a slot made outside syncline, with a configured table syncline adds to the publication', () => {
  const name = uniqueName('syncline_premade_add');
  let dir: string;
  let source: pg.Client;
  let target: pg.Client;
  let yaml: string;

  beforeAll(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'syncline-premade-add-'));
    const pair = await sourceAndTarget(await machinePg15(), name);
    ({ source, target } = pair);
    await source.query(`CREATE TABLE loaded (id int PRIMARY KEY, v int NOT NULL DEFAULT 0);
      CREATE TABLE extra (id int PRIMARY KEY);
      INSERT INTO loaded SELECT i, 0 FROM generate_series(1, 100) i; INSERT INTO extra SELECT generate_series(1, 7);
      CREATE PUBLICATION ${name}_pub FOR TABLE loaded`);
    await source.query("SELECT pg_create_logical_replication_slot($1, 'pgoutput')", [name]);
    await target.query('CREATE TABLE loaded (id int PRIMARY KEY, v int NOT NULL DEFAULT 0); INSERT INTO loaded SELECT i, 0 FROM generate_series(1, 100) i; CREATE TABLE extra (id int PRIMARY KEY)');
    yaml = `source:
  url: ${pair.sourceUrl}
  slots: [{ name: ${name}, publication: ${name}_pub, tables: [loaded, extra] }]
stream: { path: ${path.join(dir, 'stream')}, partitions: 2 }
sink: { url: ${pair.targetUrl} }
monitoring: { port: ${await freePort()} }
`;
  }, 120_000);

  afterAll(async () => {
    await source?.query('SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1 AND NOT active', [name]).catch(() => undefined);
    await source?.end();
    await target?.end();
    if (dir) await rm(dir, { recursive: true, force: true });
  }, 60_000);

  it('snapshots the added table only', async () => {
    const ctl = new AbortController();
    const metrics = new Metrics();
    const running = runPipeline(parseConfig(yaml), 'run', await testLogger(), ctl.signal, metrics);
    running.catch(() => undefined);
    try {
      await waitFor('streaming', () => slotStreaming(source, name));
      await waitFor('extra snapshotted', async () => Number((await target.query('SELECT count(*) AS n FROM extra')).rows[0]?.n) === 7, 60_000, 250);
      await source.query('UPDATE loaded SET v = 1 WHERE id <= 10');
      await waitFor('updates applied', async () => Number((await target.query('SELECT count(*) AS n FROM loaded WHERE v = 1')).rows[0]?.n) === 10, 60_000, 250);
      await new Promise((r) => setTimeout(r, 3000));
      const published = ((await metrics.registry.getSingleMetric('sync_events_published_total')?.get())?.values ?? []).reduce((s, v) => s + v.value, 0);
      expect(published).toBe(17);
    } finally {
      ctl.abort();
      await running.catch(() => undefined);
    }
    const jobs = await source.query<{ t: string; status: string }>('SELECT table_name AS t, status FROM syncline.snapshots WHERE slot_name = $1 ORDER BY table_name', [name]);
    expect(jobs.rows.map((j) => `${j.t}:${j.status}`)).toEqual(['extra:done', 'loaded:skipped']);
  }, 180_000);
});
