/**
 * A keyless table (REPLICA IDENTITY FULL) whose target table has a primary key: since
 * 25348c6 (src/sink/adopt-target-key.ts) its INSERTs are applied as keyed, version-gated
 * upserts, after the batch's multiset; its DELETEs and UPDATEs stay in the multiset, applied
 * first. A row inserted and deleted (or updated) in the same batch: the DELETE looked for a
 * row the INSERT had not written yet. For t_new (created since capture runs, never reset)
 * the missing row was not even drift: the DELETE was stale, the INSERT wrote the row after
 * it, and the target kept a row the source deleted, silently (target t_new [1 a, 2 c, 3 z]).
 * For t_old (reset by its snapshot) the batch failed with MULTISET_ROW_MISSING and was
 * bisected. Before 25348c6 both passed. Fixed: only the INSERTs after the batch's last
 * keyless DELETE or UPDATE are adopted.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runPipeline } from '../../src/api/run-pipeline.js';
import { parseConfig } from '../../src/config/load.js';
import { freePort, machinePg15, slotStreaming, sourceAndTarget, testLogger, uniqueName, waitFor } from '../helpers/postgres.js';

describe('a keyless table whose target has a primary key: insert then delete in one batch', () => {
  const name = uniqueName('red17c_adopt_del');
  let dir: string;
  let source: pg.Client;
  let target: pg.Client;
  let yaml: string;

  beforeAll(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'red17c-adopt-del-'));
    const pair = await sourceAndTarget(await machinePg15(), name);
    ({ source, target } = pair);
    // t_old exists before the slot: read by the initial snapshot (its multiset is reset).
    await source.query('CREATE TABLE t_old (id int NOT NULL, v text)');
    await source.query('ALTER TABLE t_old REPLICA IDENTITY FULL');
    await source.query("INSERT INTO t_old VALUES (100, 'x')");
    await source.query(`CREATE PUBLICATION ${name}_pub FOR TABLES IN SCHEMA public`);
    // The targets were given a key by hand (the source's rows are unique by id).
    await target.query('CREATE TABLE t_old (id int PRIMARY KEY, v text)');
    await target.query('CREATE TABLE t_new (id int PRIMARY KEY, v text)');
    yaml = `source:
  url: ${pair.sourceUrl}
  slots: [{ name: ${name}, publication: ${name}_pub }]
stream: { path: ${path.join(dir, 'stream')}, partitions: 4 }
sink: { url: ${pair.targetUrl} }
monitoring: { port: ${await freePort()} }
`;
  }, 60_000);

  afterAll(async () => {
    await source?.query('SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1 AND NOT active', [name]).catch(() => undefined);
    await source?.end();
    await target?.end();
    if (dir) await rm(dir, { recursive: true, force: true });
  }, 60_000);

  it('the target ends with the source rows, nothing dead-lettered', async () => {
    const ctl = new AbortController();
    const running = runPipeline(parseConfig(yaml), 'run', await testLogger(), ctl.signal);
    running.catch(() => undefined);
    try {
      await waitFor('streaming', () => slotStreaming(source, name));
      // t_new is created since capture runs: all its rows are in the slot, no snapshot.
      await source.query('CREATE TABLE t_new (id int NOT NULL, v text)');
      await source.query('ALTER TABLE t_new REPLICA IDENTITY FULL');
      await waitFor('t_old snapshotted', async () => (await target.query('SELECT count(*)::int AS n FROM t_old')).rows[0].n === 1, 30_000);
      for (const t of ['t_new', 't_old']) {
        await source.query('BEGIN');
        await source.query(`INSERT INTO ${t} VALUES (1, 'a'), (2, 'b')`);
        await source.query(`DELETE FROM ${t} WHERE id = 1`);
        await source.query(`UPDATE ${t} SET v = 'c' WHERE id = 2`);
        await source.query('COMMIT');
        await source.query(`INSERT INTO ${t} VALUES (3, 'z')`);
      }
      const rowsOf = async (c: pg.Client, t: string): Promise<string> => JSON.stringify((await c.query(`SELECT id, v FROM ${t} ORDER BY id`)).rows);
      const state = async (): Promise<string> => {
        const dead = await target.query('SELECT error_code, count(*)::int AS n FROM syncline.dead_letter GROUP BY 1 ORDER BY 1').catch(() => ({ rows: [] }));
        return JSON.stringify({ t_new: await rowsOf(target, 't_new'), t_old: await rowsOf(target, 't_old'), dead: dead.rows });
      };
      const expected = JSON.stringify({ t_new: await rowsOf(source, 't_new'), t_old: await rowsOf(source, 't_old'), dead: [] });
      await waitFor('the target equal to the source', async () => (await state()) === expected, 20_000, 500, state).catch(() => undefined);
      expect(JSON.parse(await state())).toEqual(JSON.parse(expected));
    } finally {
      ctl.abort();
      await running.catch(() => undefined);
    }
  }, 120_000);
});
