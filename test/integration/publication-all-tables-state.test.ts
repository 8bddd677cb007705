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
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { countRows, pipelineFixture, type PipelineFixture } from '../helpers/pipeline-fixture.js';
import { uniqueName, waitFor } from '../helpers/postgres.js';

describe('a FOR ALL TABLES publication: the initial snapshot', () => {
  const name = uniqueName('red17b_all_tables_state');
  let f: PipelineFixture;
  let yaml: string;

  beforeAll(async () => {
    f = await pipelineFixture(name);
    await f.source.query(`CREATE TABLE a (id int PRIMARY KEY, v text NOT NULL); INSERT INTO a VALUES (1, 'x'), (2, 'y');
      CREATE PUBLICATION ${name}_pub FOR ALL TABLES`);
    yaml = await f.yaml({ sink: 'create_tables: true' });
  }, 60_000);

  afterAll(async () => {
    await f?.close();
  }, 60_000);

  it("reads the user's tables, not syncline's own", async () => {
    const running = await f.start(yaml);
    try {
      await waitFor('no job unfinished', async () => Number((await f.source.query("SELECT count(*) AS n FROM syncline.snapshots WHERE slot_name = $1 AND status IN ('pending', 'running')", [name])).rows[0]?.n) === 0, 60_000, 250);
      await f.source.query("INSERT INTO a VALUES (3, 'z')");
      await waitFor('a at the target', async () => (await countRows(f.target, 'a')) === 3, 60_000, 250);
    } finally {
      await running.stop();
    }
    const jobs = await f.source.query<{ t: string }>("SELECT table_schema || '.' || table_name AS t FROM syncline.snapshots WHERE slot_name = $1 ORDER BY id", [name]);
    expect(jobs.rows.map((r) => r.t)).toEqual(['public.a']);
    const copied = await f.target.query<{ t: string }>("SELECT table_name AS t FROM information_schema.tables WHERE table_schema = 'syncline' AND table_name IN ('snapshots', 'schema_versions', 'ddl_history') ORDER BY 1");
    expect(copied.rows).toEqual([]);
  }, 120_000);
});
