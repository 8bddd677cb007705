/**
 * A table filled while it had no key, then given one (`pgbench -i`: CREATE TABLE without a
 * key, COPY, then ALTER TABLE ... ADD PRIMARY KEY; any bulk load that adds its key after).
 * Its inserts before the key are keyless (`key` {}: one partition for the whole table), its
 * changes after it are keyed (partition by table + key): the two go to different partitions
 * and lanes, so a row's UPDATE after the key can be applied before the INSERT that made the
 * row. The update (an upsert) wrote the row; the older keyless INSERT then failed on the
 * target's primary key (23505), was dead-lettered, and every later keyless change of the
 * table followed it (BLOCKED_BY_EARLIER: a keyless table's rows share one identity). Found
 * by red17b with `pgbench -i -s 1` then `pgbench -c 2 -R 200 -T 15` under a schema publication
 * (syncline running): 13,309 of 100,000 pgbench_accounts rows at the target, 126,795
 * dead-letter entries. Order per row (DESIGN promise 3) across the key's arrival is what fails.
 *
 * Fixed (src/sink/adopt-target-key.ts) as first proposed here. The target has a key by the time the keyless INSERT comes
 * (or gets it when the keyed definition is evolved), and the INSERT carries the whole row, so
 * apply could treat a keyless change of a table whose target now has a key as a keyed,
 * version-gated one (key taken from the payload / before image): the older INSERT is then
 * stale behind the update and skipped, as any reordered replay. Or capture could send a
 * barrier when a table's identity goes from keyless to keyed (its first keyed change waits,
 * in the stream, until the keyless partition is applied up to the key's definition).
 */
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runPipeline } from '../../src/api/run-pipeline.js';
import { parseConfig } from '../../src/config/load.js';
import { freePort, machinePg15, slotStreaming, sourceAndTarget, testLogger, uniqueName, waitFor } from '../helpers/postgres.js';

describe('a table loaded without a key, then given one', () => {
  const name = uniqueName('red17b_keyless_keyed');
  let dir: string;
  let source: pg.Client;
  let target: pg.Client;
  let yaml: string;

  beforeAll(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'red17b-keyless-keyed-'));
    const pair = await sourceAndTarget(await machinePg15(), name);
    ({ source, target } = pair);
    await source.query(`CREATE PUBLICATION ${name}_pub FOR TABLES IN SCHEMA public`);
    yaml = `source:
  url: ${pair.sourceUrl}
  slots: [{ name: ${name}, publication: ${name}_pub }]
stream: { path: ${path.join(dir, 'stream')}, partitions: 4 }
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

  it('applies each row in order: the updates after the key find their inserted rows', async () => {
    const ctl = new AbortController();
    const running = runPipeline(parseConfig(yaml), 'run', await testLogger(), ctl.signal);
    running.catch(() => undefined);
    try {
      await waitFor('streaming', () => slotStreaming(source, name));
      // As pgbench -i: created without a key, loaded, then the key.
      await source.query('CREATE TABLE accounts (aid int NOT NULL, bid int, abalance int NOT NULL, filler char(84))');
      await source.query("INSERT INTO accounts SELECT i, 1, 0, '' FROM generate_series(1, 50000) i");
      await source.query('ALTER TABLE accounts ADD PRIMARY KEY (aid)');
      // As pgbench's transactions: updates of rows by key, right after.
      for (let i = 0; i < 40; i++) await source.query('UPDATE accounts SET abalance = abalance + 1 WHERE aid = $1', [50000 - i * 1000]);
      const state = async (): Promise<string> => {
        const rows = await target.query('SELECT count(*)::int AS n, sum(abalance)::int AS s FROM accounts').catch(() => ({ rows: [{ n: 0, s: 0 }] }));
        const dead = await target.query('SELECT error_code, count(*)::int AS n FROM syncline.dead_letter GROUP BY 1 ORDER BY 1').catch(() => ({ rows: [] }));
        return JSON.stringify({ ...rows.rows[0], dead: dead.rows });
      };
      await waitFor('every row at the target, each update applied', async () => (await state()) === JSON.stringify({ n: 50000, s: 40, dead: [] }), 30_000, 500, state);
      expect(JSON.parse(await state())).toEqual({ n: 50000, s: 40, dead: [] });
    } finally {
      ctl.abort();
      await running.catch(() => undefined);
    }
  }, 120_000);
});
