/**
 * A slot made outside syncline (`pg_create_logical_replication_slot`) before its first start.
 * With `source.snapshot: initial` its tables are read like those of a slot syncline makes:
 * the rows they held before the slot are in no change it sends. 3115b99 took such a slot for
 * a target the operator loaded by hand and recorded its tables as `skipped`: red17 showed
 * that an operator who made the slot for another reason lost those rows with no warning.
 * With `source.snapshot: never` (the hand-loaded target) the tables are recorded as
 * `skipped` jobs, with the command that reads one; before 3115b99 the first-definition rule
 * (c174051) snapshotted each on its first change, lazily, and a table never changed never.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Metrics } from '../../src/metrics/metrics.js';
import { countRows, pipelineFixture, type PipelineFixture } from '../helpers/pipeline-fixture.js';
import { uniqueName, waitFor } from '../helpers/postgres.js';

describe('a slot made outside syncline before its first start, with source.snapshot: never', () => {
  const name = uniqueName('syncline_premade');
  let f: PipelineFixture;
  let yaml: string;

  beforeAll(async () => {
    f = await pipelineFixture(name);
    await f.source.query(`CREATE TABLE loaded (id int PRIMARY KEY, v int NOT NULL DEFAULT 0);
      CREATE TABLE quiet (id int PRIMARY KEY);
      CREATE PUBLICATION ${name}_pub FOR TABLE loaded, quiet`);
    await f.source.query("SELECT pg_create_logical_replication_slot($1, 'pgoutput')", [name]);
    // Written after the slot's consistent point: in the slot, so not lost by skipping a snapshot.
    await f.source.query('INSERT INTO loaded SELECT i, 0 FROM generate_series(1, 100) i; INSERT INTO quiet VALUES (1)');
    await f.target.query('CREATE TABLE loaded (id int PRIMARY KEY, v int NOT NULL DEFAULT 0); CREATE TABLE quiet (id int PRIMARY KEY)');
    yaml = await f.yaml({ slot: 'tables: [loaded, quiet]', source: ['snapshot: never'] });
  }, 120_000);

  afterAll(async () => {
    await f?.close();
  }, 60_000);

  const published = async (m: Metrics): Promise<number> =>
    ((await m.registry.getSingleMetric('sync_events_published_total')?.get())?.values ?? []).reduce((s, v) => s + v.value, 0);

  it('streams the slot and snapshots nothing, across a restart', async () => {
    for (const round of [1, 2]) {
      const metrics = new Metrics();
      const running = await f.start(yaml, { metrics: metrics });
      try {
        await f.source.query('UPDATE loaded SET v = v + 1 WHERE id <= 10');
        await waitFor('updates applied', async () => Number((await f.target.query('SELECT count(*) AS n FROM loaded WHERE v = $1', [round])).rows[0]?.n) === 10, 60_000, 250);
        // Time for a snapshot that would have been queued by the first change to show.
        await new Promise((r) => setTimeout(r, 3000));
        expect(await published(metrics)).toBe(round === 1 ? 111 : 10);
      } finally {
        await running.stop();
      }
    }
    const jobs = await f.source.query<{ t: string; status: string; error: string | null }>(
      'SELECT table_name AS t, status, error FROM syncline.snapshots WHERE slot_name = $1 ORDER BY id', [name]);
    expect(jobs.rows.map((j) => `${j.t}:${j.status}`)).toEqual(['loaded:skipped', 'quiet:skipped']);
    expect(jobs.rows[0]?.error).toContain('syncline snapshot');
  }, 180_000);
});

/**
 * The same first start with `source.snapshot: initial` (the default) and rows in the tables
 * from before the slot, one configured table not yet in the publication: syncline adds it,
 * and every table is read, none taken for one the operator loaded.
 */
describe('a slot made outside syncline, with source.snapshot: initial and a configured table syncline adds to the publication', () => {
  const name = uniqueName('syncline_premade_add');
  let f: PipelineFixture;
  let yaml: string;

  beforeAll(async () => {
    f = await pipelineFixture(name);
    await f.source.query(`CREATE TABLE loaded (id int PRIMARY KEY, v int NOT NULL DEFAULT 0);
      CREATE TABLE extra (id int PRIMARY KEY);
      INSERT INTO loaded SELECT i, 0 FROM generate_series(1, 100) i; INSERT INTO extra SELECT generate_series(1, 7);
      CREATE PUBLICATION ${name}_pub FOR TABLE loaded`);
    await f.source.query("SELECT pg_create_logical_replication_slot($1, 'pgoutput')", [name]);
    await f.target.query('CREATE TABLE loaded (id int PRIMARY KEY, v int NOT NULL DEFAULT 0); CREATE TABLE extra (id int PRIMARY KEY)');
    yaml = await f.yaml({ slot: 'tables: [loaded, extra]' });
  }, 120_000);

  afterAll(async () => {
    await f?.close();
  }, 60_000);

  it('reads every table, the added one included', async () => {
    const metrics = new Metrics();
    const running = await f.start(yaml, { metrics: metrics });
    try {
      await waitFor('extra snapshotted', async () => (await countRows(f.target, 'extra')) === 7, 60_000, 250);
      await waitFor('loaded snapshotted', async () => (await countRows(f.target, 'loaded')) === 100, 60_000, 250);
      await f.source.query('UPDATE loaded SET v = 1 WHERE id <= 10');
      await waitFor('updates applied', async () => Number((await f.target.query('SELECT count(*) AS n FROM loaded WHERE v = 1')).rows[0]?.n) === 10, 60_000, 250);
      await new Promise((r) => setTimeout(r, 3000));
      const published = ((await metrics.registry.getSingleMetric('sync_events_published_total')?.get())?.values ?? []).reduce((s, v) => s + v.value, 0);
      expect(published).toBe(117);
    } finally {
      await running.stop();
    }
    const jobs = await f.source.query<{ t: string; status: string }>('SELECT table_name AS t, status FROM syncline.snapshots WHERE slot_name = $1 ORDER BY table_name', [name]);
    expect(jobs.rows.map((j) => `${j.t}:${j.status}`)).toEqual(['extra:done', 'loaded:done']);
  }, 180_000);
});
