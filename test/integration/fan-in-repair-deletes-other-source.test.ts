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
 *
 * Fixed (faninrepair): with conflict tracking on, verify and repair of a source compare only
 * the target rows that source wrote last (`_syncline_source`, and at a postgres target not
 * changed there since); a key the source has that another writer holds or deleted at the
 * target is counted as `otherWriters`, not drift. The test also checks that a's own drift (a
 * row lost without a recorded delete, a stray row recorded as a's) is still found and repaired.
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

  it("keeps b's rows when a is repaired", async () => {
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

      // Each source's verify sees its own rows only: neither calls the other's rows drift.
      for (const file of [fileA, fileB]) {
        const verify = await runCli('verify', '-c', file, '--json');
        expect({ file, code: verify.code, stderr: verify.stderr }).toEqual({ file, code: 0, stderr: '' });
      }

      // A key both wrote: b's later write won (last_write_wins). a's verify and repair leave b's version.
      await a.query(`INSERT INTO t VALUES (50, 'a50')`);
      await waitFor('a50 applied', async () => (await target.query(`SELECT 1 FROM t WHERE id = 50`)).rowCount === 1, 30_000);
      await b.query(`INSERT INTO t VALUES (50, 'b50')`);
      await waitFor('b50 won', async () => (await target.query<{ v: string }>(`SELECT v FROM t WHERE id = 50`)).rows[0]?.v === 'b50', 30_000);
      const verifyA = await runCli('verify', '-c', fileA, '--json');
      const tableA = (JSON.parse(verifyA.stdout) as { tables: { differing: number; otherWriters?: number }[] }).tables[0];
      expect({ code: verifyA.code, differing: tableA?.differing, otherWriters: tableA?.otherWriters }).toEqual({ code: 0, differing: 0, otherWriters: 1 });

      // a's own drift is still found and repaired: a row of a lost at the target without a
      // recorded delete (triggers off), and a stray row recorded as a's.
      await target.query(`BEGIN; SET LOCAL session_replication_role = replica; DELETE FROM t WHERE id = 2; COMMIT`);
      await target.query(
        `INSERT INTO t (id, v, _syncline_source, _syncline_lsn, _syncline_seq, _syncline_ts, _syncline_xid)
         VALUES (3, 'stray', 'a', '0/1', 1, now(), pg_current_xact_id()::text::bigint % 4294967296)`,
      );
      const drift = await runCli('verify', '-c', fileA, '--json');
      const found = (JSON.parse(drift.stdout) as { tables: { missing: string[]; extra: string[]; different: string[] }[] }).tables[0];
      expect({ code: drift.code, missing: found?.missing, extra: found?.extra, different: found?.different }).toEqual({ code: 1, missing: ['["2"]'], extra: ['["3"]'], different: [] });
      const again = await runCli('repair', '-c', fileA, '--timeout', '30s', '--json');
      const rows = (await target.query<{ id: number; v: string }>('SELECT id, v FROM t ORDER BY id')).rows;
      expect({ code: again.code, rows }).toEqual({
        code: 0,
        rows: [
          { id: 1, v: 'a1' },
          { id: 2, v: 'a2' },
          { id: 50, v: 'b50' },
          { id: 101, v: 'b1' },
          { id: 102, v: 'b2' },
        ],
      });
      expect((await runCli('verify', '-c', fileB, '--json')).code).toBe(0);
    } finally {
      ctl.abort();
      await Promise.all(runs.map((r) => r.catch(() => undefined)));
    }
  }, 150_000);
});
