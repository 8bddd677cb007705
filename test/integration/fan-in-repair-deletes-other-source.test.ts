import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runPipeline } from '../../src/api/run-pipeline.js';
import { loadConfigFile } from '../../src/config/load.js';
import { ensureBuilt, runCli } from '../helpers/cli.js';
import { freshDatabase, machinePg15, waitFor, slotStreaming, uniqueName, testLogger } from '../helpers/postgres.js';

/**
 * red18: fan-in (README "Many writers"): sources `a` and `b`, each its own pipeline (name,
 * slot, stream, group) with `conflict_strategy: last_write_wins`, into one postgres target
 * table. `syncline verify -c a.yaml` compares source a with the whole target table and calls
 * b's rows `extra` (drift, exit 1); `syncline repair -c a.yaml` deletes them (version-gated,
 * tombstoned: "removed 2 ... no drift remains", exit 0). b's rows are gone from the target;
 * a later UPDATE at b brings back only the row it touches, and `repair -c b.yaml` would
 * delete a's rows in turn. Real processes: 2 of b's rows deleted by a's repair. The README's
 * fan-in section says nothing of verify or repair.
 *
 * Promise: "repair re-syncs the differing keys" (DESIGN.md 5), not another writer's rows;
 * no loss (1).
 */
describe('fan-in: repair of one source deletes the rows of the other', () => {
  const slotA = uniqueName('red18_fia');
  const slotB = uniqueName('red18_fib');
  let dir: string;
  let a: pg.Client;
  let b: pg.Client;
  let target: pg.Client;
  let fileA: string;
  let fileB: string;

  beforeAll(async () => {
    ensureBuilt();
    const server = await machinePg15();
    dir = await mkdtemp(path.join(os.tmpdir(), 'red18-fanin-'));
    const urlA = await freshDatabase(server, 'red18_fi_a');
    const urlB = await freshDatabase(server, 'red18_fi_b');
    const targetUrl = await freshDatabase(server, 'red18_fi_t');
    a = new pg.Client({ connectionString: urlA });
    b = new pg.Client({ connectionString: urlB });
    target = new pg.Client({ connectionString: targetUrl });
    for (const c of [a, b, target]) {
      await c.connect();
      await c.query('CREATE TABLE t (id int PRIMARY KEY, v text)');
    }
    const yaml = (name: string, url: string, slot: string): string => `source:
  name: ${name}
  url: ${url}
  slots: [{ name: ${slot}, publication: red18_fi_pub, tables: [t] }]
stream: { path: ${path.join(dir, `stream-${name}`)}, partitions: 2 }
consumer: { group_id: fi-${name} }
sink: { url: ${targetUrl}, conflict_strategy: last_write_wins }
monitoring: { enabled: false }
`;
    fileA = path.join(dir, 'a.yaml');
    fileB = path.join(dir, 'b.yaml');
    await writeFile(fileA, yaml('a', urlA, slotA));
    await writeFile(fileB, yaml('b', urlB, slotB));
  }, 180_000);

  afterAll(async () => {
    for (const c of [a, b, target]) await c?.end();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it.fails("keeps b's rows when a is repaired", async () => {
    const ctl = new AbortController();
    const log = await testLogger();
    const runs = [runPipeline(loadConfigFile(fileA), 'run', log, ctl.signal), runPipeline(loadConfigFile(fileB), 'run', log, ctl.signal)];
    let failure: unknown;
    for (const r of runs) r.catch((err: unknown) => (failure = err));
    try {
      await waitFor('both slots streaming', async () => (await slotStreaming(a, slotA)) && (await slotStreaming(b, slotB)), 30_000);
      await a.query(`INSERT INTO t VALUES (1, 'a1'), (2, 'a2')`);
      await b.query(`INSERT INTO t VALUES (101, 'b1'), (102, 'b2')`);
      await waitFor('both sources applied', async () => (await target.query('SELECT count(*)::int AS n FROM t')).rows[0]?.n === 4, 30_000);

      const repair = await runCli('repair', '-c', fileA, '--timeout', '30s', '--json');
      const ids = (await target.query<{ id: number }>('SELECT id FROM t ORDER BY id')).rows.map((r) => r.id);
      expect(failure).toBeUndefined();
      expect({ ids, repairExit: repair.code }).toEqual({ ids: [1, 2, 101, 102], repairExit: 0 });
    } finally {
      ctl.abort();
      await Promise.all(runs.map((r) => r.catch(() => undefined)));
    }
  }, 150_000);
});
