import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLI, ensureBuilt, runCli } from '../helpers/cli.js';
import { rowDiff } from '../helpers/compare-rows.js';
import { freePort, freshDatabase, machinePg15, slotStreaming, waitFor, uniqueName, withClient } from '../helpers/postgres.js';

const run = promisify(execFile);
const KEYED = ['pgbench_accounts', 'pgbench_branches', 'pgbench_tellers'];
/** Keyless (REPLICA IDENTITY FULL): pgbench's inserts, and `bag`, where a writer inserts and deletes duplicate rows. */
const KEYLESS = ['pgbench_history', 'bag'];
const TABLES = [...KEYED, ...KEYLESS];
const SECONDS = 20;

const syncline = runCli;

type Report = { drift: boolean; tables: { table: string; differing: number; unsettled: number; lagChecked: boolean; missing: string[]; extra: string[]; different: string[] }[] };

/**
 * Issue 14: verify while pgbench writes at full speed through a real `syncline run` reports
 * no drift, every time (differences that are lag are re-checked after apply passed them),
 * keyless tables included (pgbench_history, and `bag` where copies of rows are inserted and
 * deleted meanwhile); then 5 target rows changed, 3 deleted and 2 added behind syncline's back
 * are named exactly, and repair re-syncs only them; copies of a keyless row removed and rows
 * added at the target are named exactly too.
 */
describe('verify and repair while writes continue (PostgreSQL 15, embedded stream, pgbench)', () => {
  const name = 'syncline_verify14_live';
  const slot = uniqueName(name);
  let dir: string;
  let sourceUrl: string;
  let targetUrl: string;
  let configFile: string;
  let child: ChildProcess | undefined;

  beforeAll(async () => {
    ensureBuilt();
    const server = await machinePg15();
    dir = await mkdtemp(path.join(os.tmpdir(), 'syncline-verify14-'));
    sourceUrl = await freshDatabase(server, `${name}_source`);
    targetUrl = await freshDatabase(server, `${name}_target`);
    await run('pgbench', ['-i', '-s', '1', '-q', sourceUrl]);
    await run('pgbench', ['-i', '-I', 'dtp', '-q', targetUrl]);
    await withClient(sourceUrl, async (c) => {
      await c.query('ALTER TABLE pgbench_history REPLICA IDENTITY FULL');
      await c.query('CREATE TABLE bag (a int, b text)');
      await c.query('ALTER TABLE bag REPLICA IDENTITY FULL');
      await c.query("INSERT INTO bag SELECT i % 200, 'v' || (i % 200) FROM generate_series(1, 2000) i");
    });
    await withClient(targetUrl, (c) => c.query('CREATE TABLE bag (a int, b text)'));
    configFile = path.join(dir, 'sync.yaml');
    await writeFile(
      configFile,
      `source:
  url: ${sourceUrl}
  heartbeat_interval_ms: 1000
  slots: [{ name: ${slot}, publication: ${name}_pub, tables: [${TABLES.join(', ')}] }]
stream: { path: ${path.join(dir, 'stream')}, partitions: 4 }
consumer: { group_id: verify14 }
sink: { url: ${targetUrl} }
monitoring: { port: ${await freePort()} }
`,
    );
    const log = createWriteStream(path.join(dir, 'run.log'));
    child = spawn(process.execPath, [CLI, 'run', '-c', configFile], { stdio: ['ignore', 'pipe', 'pipe'] });
    child.stdout?.pipe(log);
    child.stderr?.pipe(log);
    const c = new pg.Client({ connectionString: sourceUrl });
    await c.connect();
    const t = new pg.Client({ connectionString: targetUrl });
    await t.connect();
    try {
      await waitFor('the slot to stream', () => slotStreaming(c, slot), 60_000, 200);
      for (const table of TABLES) {
        await waitFor(`${table} snapshot`, async () => {
          const d = await rowDiff(c, t, table, 1);
          return d.missing.length === 0 && d.extra.length === 0;
        }, 120_000, 500);
      }
    } finally {
      await c.end();
      await t.end();
    }
  }, 240_000);

  afterAll(async () => {
    if (child && child.exitCode === null) {
      child.kill('SIGTERM');
      await new Promise((r) => child?.once('exit', r));
    }
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('reports no drift while pgbench runs, then names exactly the 10 tampered keys, and repair makes the target equal', async () => {
    const bench = run('pgbench', ['-c', '4', '-j', '2', '-T', String(SECONDS), '-n', sourceUrl]);
    let done = false;
    void bench.finally(() => (done = true));
    // Copies of keyless rows inserted and deleted (one copy at a time, by ctid) meanwhile.
    const writes = withClient(sourceUrl, async (c) => {
      let n = 0;
      while (!done) {
        n++;
        const v = (n * 37) % 200;
        if (n % 3 === 0) await c.query('DELETE FROM bag WHERE ctid = (SELECT ctid FROM bag WHERE a = $1 LIMIT 1)', [v]);
        else await c.query("INSERT INTO bag SELECT $1::int, 'v' || $1::int FROM generate_series(1, 1 + $1::int % 3)", [v]);
      }
      return n;
    });
    const runs: Report[] = [];
    // As many as fit while pgbench runs (the first starts under writes), and at least two:
    // with the keyless re-check a run can take most of pgbench's time on a busy machine.
    while (!done || runs.length < 2) {
      const v = await syncline('verify', '-c', configFile, '--json');
      expect(v.code, v.stdout).toBe(0);
      runs.push(JSON.parse(v.stdout) as Report);
    }
    const out = await bench;
    expect(out.stdout).toMatch(/number of transactions actually processed: \d+/);
    expect(await writes).toBeGreaterThan(100);
    expect(runs.length).toBeGreaterThanOrEqual(2);
    for (const r of runs) {
      expect(r.tables.map((t) => t.table)).toEqual(TABLES.map((t) => `public.${t}`));
      expect(r.tables.map((t) => t.differing)).toEqual(TABLES.map(() => 0));
      expect(r.tables.every((t) => t.lagChecked)).toBe(true);
    }
    // Hot rows are allowed to stay unsettled (not drift); shown for the record.
    console.log(`verify runs: ${runs.length}; unsettled per run: ${JSON.stringify(runs.map((r) => r.tables.map((t) => t.unsettled)))}`);

    // Behind syncline's back: 5 changed, 3 deleted, 2 added.
    const target = new pg.Client({ connectionString: targetUrl });
    await target.connect();
    try {
      await target.query('UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid IN (11, 22, 33333, 44444, 99999)');
      await target.query('DELETE FROM pgbench_accounts WHERE aid IN (1, 50000, 100000)');
      await target.query("INSERT INTO pgbench_accounts (aid, bid, abalance, filler) VALUES (100001, 1, 0, 'x'), (200002, 1, 0, 'y')");
    } finally {
      await target.end();
    }
    const v = await syncline('verify', '-c', configFile, '--json');
    expect(v.code, v.stderr).toBe(1);
    const accounts = (JSON.parse(v.stdout) as Report).tables.find((t) => t.table === 'public.pgbench_accounts');
    expect(accounts?.differing).toBe(10);
    expect([...(accounts?.different ?? [])].sort()).toEqual(['["11"]', '["22"]', '["33333"]', '["44444"]', '["99999"]']);
    expect([...(accounts?.missing ?? [])].sort()).toEqual(['["1"]', '["100000"]', '["50000"]']);
    expect([...(accounts?.extra ?? [])].sort()).toEqual(['["100001"]', '["200002"]']);

    const dry = await syncline('repair', '-c', configFile, '--dry-run', '--table', 'pgbench_accounts');
    expect(dry.code).toBe(1);
    expect(dry.stdout).toMatch(/would delete 2 target-only row\(s\).*re-read 8 key\(s\)/);
    expect((await syncline('verify', '-c', configFile, '--table', 'pgbench_accounts')).code).toBe(1);

    const repair = await syncline('repair', '-c', configFile, '--table', 'pgbench_accounts', '--timeout', '60s');
    expect(repair.stdout).toMatch(/3 missing, 5 different, 2 extra -> removed 2, re-reading 8 key\(s\)/);
    expect(repair.stdout).toMatch(/no drift remains/);
    expect(repair.code).toBe(0);
    expect((await syncline('verify', '-c', configFile)).code).toBe(0);

    // A keyless table: 2 of 3 copies of a row removed and 2 rows added at the target.
    await withClient(sourceUrl, (c) => c.query("INSERT INTO bag VALUES (500, 'tamper'), (500, 'tamper'), (500, 'tamper')"));
    await withClient(targetUrl, async (c) => {
      await waitFor('the copies at the target', async () => (await c.query("SELECT 1 FROM bag WHERE b = 'tamper'")).rowCount === 3, 60_000, 200);
      await c.query("DELETE FROM bag WHERE ctid IN (SELECT ctid FROM bag WHERE b = 'tamper' LIMIT 2)");
      await c.query("INSERT INTO bag VALUES (600, 'x'), (601, 'y')");
    });
    const k = await syncline('verify', '-c', configFile, '--json', '--table', 'bag');
    expect(k.code, k.stderr).toBe(1);
    const bag = (JSON.parse(k.stdout) as Report).tables[0];
    expect(bag).toMatchObject({ table: 'public.bag', differing: 4, unsettled: 0, lagChecked: true, different: [] });
    expect(bag?.missing).toEqual(['["500","tamper"]', '["500","tamper"]']);
    expect([...(bag?.extra ?? [])].sort()).toEqual(['["600","x"]', '["601","y"]']);
  }, 300_000);
});
