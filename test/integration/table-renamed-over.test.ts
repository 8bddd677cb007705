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
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runPipeline } from '../../src/api/run-pipeline.js';
import { parseConfig } from '../../src/config/load.js';
import { freePort, machinePg15, slotStreaming, sourceAndTarget, testLogger, uniqueName, waitFor } from '../helpers/postgres.js';

describe('a table renamed over a dropped one, under FOR ALL TABLES', () => {
  const name = uniqueName('red17b_renamed_over');
  let dir: string;
  let source: pg.Client;
  let target: pg.Client;
  let yaml: string;

  beforeAll(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'red17b-renamed-over-'));
    const pair = await sourceAndTarget(await machinePg15(), name);
    ({ source, target } = pair);
    await source.query(`CREATE PUBLICATION ${name}_pub FOR ALL TABLES`);
    yaml = `source:
  url: ${pair.sourceUrl}
  slots: [{ name: ${name}, publication: ${name}_pub }]
stream: { path: ${path.join(dir, 'stream')}, partitions: 2 }
sink: { url: ${pair.targetUrl}, create_tables: true, schema_evolution: full }
monitoring: { port: ${await freePort()} }
`;
  }, 60_000);

  afterAll(async () => {
    await source?.query('SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1 AND NOT active', [name]).catch(() => undefined);
    await source?.end();
    await target?.end();
    if (dir) await rm(dir, { recursive: true, force: true });
  }, 60_000);

  it("the target's a gets b's rows", async () => {
    const ctl = new AbortController();
    const running = runPipeline(parseConfig(yaml), 'run', await testLogger(), ctl.signal);
    running.catch(() => undefined);
    const ids = async (t: string): Promise<string> => JSON.stringify((await target.query(`SELECT array_agg(id ORDER BY id) AS ids FROM ${t}`).catch(() => ({ rows: [{ ids: null }] }))).rows[0]?.ids);
    try {
      await waitFor('streaming', () => slotStreaming(source, name));
      // Created while capture runs: every row is in the slot. b is seen first, then a.
      await source.query('CREATE TABLE b (id int PRIMARY KEY, v text NOT NULL); CREATE TABLE a (id int PRIMARY KEY, v text NOT NULL)');
      await source.query("INSERT INTO b SELECT i, 'b' FROM generate_series(11, 15) i");
      await source.query("INSERT INTO a SELECT i, 'a' FROM generate_series(1, 3) i");
      await waitFor('a and b at the target', async () => (await ids('a')) === '[1,2,3]' && (await ids('b')) === '[11,12,13,14,15]', 60_000, 250);
      await source.query('DROP TABLE a; ALTER TABLE b RENAME TO a');
      await source.query("INSERT INTO a VALUES (16, 'b')");
      // The old a's rows stay (documented: repair removes them); b's rows must all be there.
      await waitFor("b's rows in the target's a", async () => (await ids('a')) === '[1,2,3,11,12,13,14,15,16]', 30_000, 250,
        async () => `target a ${await ids('a')}; jobs ${JSON.stringify((await source.query('SELECT table_name, status FROM syncline.snapshots WHERE slot_name = $1', [name])).rows)}`);
    } finally {
      ctl.abort();
      await running.catch(() => undefined);
    }
    expect(await ids('a')).toBe('[1,2,3,11,12,13,14,15,16]');
  }, 120_000);
});
