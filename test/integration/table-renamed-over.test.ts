/**
 * A table renamed to the name of a table just dropped (`DROP TABLE a; ALTER TABLE b RENAME
 * TO a`) under `FOR ALL TABLES`, where the slot saw `b` before it saw the old `a` (b's
 * relid recorded at an older position than a's). b26f560 tells the relation under `a` by its
 * relid, and the relid's newest other name (`b`) is where its changes went: the target's `a`
 * lacks b's rows, so `a` is read by a snapshot. But RelationIds only looked at other names
 * recorded after the name's own sighting: `b`, seen before the old `a`, was passed over, the
 * change was taken for a table created under FOR ALL TABLES (all its rows in the slot), and
 * no snapshot was queued: the target's `a` kept the dropped table's rows and never got b's
 * rows that were not changed since, silently. Found by red17b. The same with the renamed
 * table seen before a table created under the name since (r -> r2, new r, r2 -> r).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { pipelineFixture, type PipelineFixture } from '../helpers/pipeline-fixture.js';
import { uniqueName, waitFor } from '../helpers/postgres.js';

describe('a table renamed over a dropped one, under FOR ALL TABLES', () => {
  const name = uniqueName('red17b_renamed_over');
  let f: PipelineFixture;
  let yaml: string;

  beforeAll(async () => {
    f = await pipelineFixture(name);
    await f.source.query(`CREATE PUBLICATION ${name}_pub FOR ALL TABLES`);
    yaml = await f.yaml({ sink: 'create_tables: true, schema_evolution: full' });
  }, 60_000);

  afterAll(async () => {
    await f?.close();
  }, 60_000);

  it("the target's a gets b's rows", async () => {
    const running = await f.start(yaml);
    const ids = async (t: string): Promise<string> => JSON.stringify((await f.target.query(`SELECT array_agg(id ORDER BY id) AS ids FROM ${t}`).catch(() => ({ rows: [{ ids: null }] }))).rows[0]?.ids);
    try {
      // Created while capture runs: every row is in the slot. b is seen first, then a.
      await f.source.query('CREATE TABLE b (id int PRIMARY KEY, v text NOT NULL); CREATE TABLE a (id int PRIMARY KEY, v text NOT NULL)');
      await f.source.query("INSERT INTO b SELECT i, 'b' FROM generate_series(11, 15) i");
      await f.source.query("INSERT INTO a SELECT i, 'a' FROM generate_series(1, 3) i");
      await waitFor('a and b at the target', async () => (await ids('a')) === '[1,2,3]' && (await ids('b')) === '[11,12,13,14,15]', 60_000, 250);
      await f.source.query('DROP TABLE a; ALTER TABLE b RENAME TO a');
      await f.source.query("INSERT INTO a VALUES (16, 'b')");
      // The old a's rows stay (documented: repair removes them); b's rows must all be there.
      await waitFor("b's rows in the target's a", async () => (await ids('a')) === '[1,2,3,11,12,13,14,15,16]', 30_000, 250,
        async () => `target a ${await ids('a')}; jobs ${JSON.stringify((await f.source.query('SELECT table_name, status FROM syncline.snapshots WHERE slot_name = $1', [name])).rows)}`);
    } finally {
      await running.stop();
    }
    expect(await ids('a')).toBe('[1,2,3,11,12,13,14,15,16]');
  }, 120_000);
});
