/**
 * A slot syncline made itself (source.snapshot: initial: the snapshot jobs are queued before
 * the slot), restarted before capture recorded any change of it: that start must not be taken
 * for a first start on a slot made outside syncline (3115b99), whose tables are recorded as
 * `skipped` snapshot jobs. A table added to the publication by hand (and listed in the config,
 * or taken from the publication) while syncline was stopped is then a table joining later,
 * whose rows the first-definition rule reads; recorded as skipped, its rows that existed before
 * never reached the target, silently. Repro (red16b): run, stop before any change, ALTER
 * PUBLICATION ... ADD TABLE late (5 rows), run, insert one row into late: 1 row at the target.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { countRows, pipelineFixture, type PipelineFixture } from '../helpers/pipeline-fixture.js';
import { uniqueName, waitFor } from '../helpers/postgres.js';

describe('a slot syncline made, restarted before its first change', () => {
  const name = uniqueName('red16b_first');
  let f: PipelineFixture;
  let yaml: string;

  beforeAll(async () => {
    f = await pipelineFixture(name);
    await f.source.query(`CREATE TABLE early (id int PRIMARY KEY);
      CREATE TABLE late (id int PRIMARY KEY);
      INSERT INTO late SELECT generate_series(1, 5);
      CREATE PUBLICATION ${name}_pub FOR TABLE early`);
    await f.target.query('CREATE TABLE early (id int PRIMARY KEY); CREATE TABLE late (id int PRIMARY KEY)');
    // No tables listed: they are the publication's.
    yaml = await f.yaml();
  }, 120_000);

  afterAll(async () => {
    await f?.close();
  }, 60_000);

  const run = async (until: () => Promise<void>): Promise<void> => {
    const running = await f.start(yaml);
    try {
      await until();
    } finally {
      await running.stop();
    }
  };

  it('snapshots a table added to the publication by hand while it was stopped', async () => {
    // First start: syncline creates the slot (and the initial snapshot of early, empty); no change streamed.
    await run(async () => {
      await waitFor('initial snapshot done', async () =>
        (await f.source.query("SELECT 1 FROM syncline.snapshots WHERE slot_name = $1 AND status = 'done'", [name])).rowCount === 1);
    });
    expect((await f.source.query('SELECT 1 FROM syncline.schema_versions WHERE slot_name = $1', [name])).rowCount).toBe(0);
    await f.source.query(`ALTER PUBLICATION ${name}_pub ADD TABLE late`);
    await run(async () => {
      await f.source.query('INSERT INTO late VALUES (6)');
      await waitFor('late at the target', async () => (await countRows(f.target, 'late')) === 6, 30_000, 250, async () =>
        `${(await f.target.query('SELECT count(*) AS n FROM late')).rows[0]?.n} rows; jobs ${JSON.stringify((await f.source.query('SELECT table_name, status FROM syncline.snapshots WHERE slot_name = $1 ORDER BY id', [name])).rows)}`);
    });
    const jobs = await f.source.query<{ t: string; status: string }>('SELECT table_name AS t, status FROM syncline.snapshots WHERE slot_name = $1 ORDER BY id', [name]);
    expect(jobs.rows.map((j) => `${j.t}:${j.status}`)).toEqual(['early:done', 'late:done']);
  }, 180_000);
});
