import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { closeSync, openSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { compareTable } from '../../src/verify/compare.js';
import { embeddedPg17, freePort, waitFor, type PgServer } from '../helpers/postgres.js';

const CLI = path.resolve('dist/cli/main.js');
const run = promisify(execFile);

describe('a lost replication slot is detected and recovered with one command (PostgreSQL 17)', () => {
  let server: PgServer;
  let dir: string;
  let configFile: string;
  let source: pg.Client;
  let target: pg.Client;
  const children: ChildProcess[] = [];

  beforeAll(async () => {
    // The server may drop WAL a slot still needs once it retains more than 1 MB.
    server = await embeddedPg17('logical', ['-c', 'max_slot_wal_keep_size=1MB']);
    dir = await mkdtemp(path.join(os.tmpdir(), 'syncline-lost-'));
    const admin = new pg.Client({ connectionString: server.url('postgres') });
    await admin.connect();
    await admin.query('CREATE DATABASE lost_source');
    await admin.query('CREATE DATABASE lost_target');
    await admin.end();
    source = new pg.Client({ connectionString: server.url('lost_source') });
    target = new pg.Client({ connectionString: server.url('lost_target') });
    await source.connect();
    await target.connect();
    for (const c of [source, target]) await c.query('CREATE TABLE items (id integer PRIMARY KEY, v text)');
    configFile = path.join(dir, 'sync.yaml');
    await writeFile(
      configFile,
      `source:
  url: ${server.url('lost_source')}
  slots: [{ name: lost_slot, publication: lost_pub, tables: [items] }]
stream: { path: ${path.join(dir, 'stream')}, partitions: 2 }
consumer: { group_id: lost }
sink: { url: ${server.url('lost_target')} }
monitoring: { port: ${await freePort()} }
`,
    );
  }, 120_000);

  afterAll(async () => {
    for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
    await source?.end();
    await target?.end();
    await server?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  function start(): ChildProcess {
    // Its log goes to a file: a pipe nobody reads fills up (the targeted repair below makes a
    // snapshot job per key, three log lines each) and blocks the process on its next write.
    const log = openSync(path.join(dir, `run-${children.length}.log`), 'a');
    const child = spawn(process.execPath, [CLI, 'run', '-c', configFile], { stdio: ['ignore', log, log] });
    closeSync(log);
    children.push(child);
    return child;
  }

  async function stopChild(child: ChildProcess): Promise<void> {
    const exited = new Promise((r) => child.once('exit', r));
    child.kill('SIGTERM');
    await exited;
  }

  it('run refuses with the recovery command; resync + run + repair bring the target back to the source', async () => {
    let child = start();
    await source.query("INSERT INTO items SELECT g, 'v' || g FROM generate_series(1, 1000) g");
    await waitFor('first rows applied', async () => (await target.query('SELECT count(*)::int AS n FROM items')).rows[0]?.n === 1000, 60_000);
    await stopChild(child);

    // While syncline is down, changes happen and the server discards the WAL they were in.
    await source.query("UPDATE items SET v = 'changed' WHERE id <= 100");
    await source.query('DELETE FROM items WHERE id > 900');
    await source.query("INSERT INTO items SELECT g, 'late' FROM generate_series(2001, 2100) g");
    await source.query('CREATE TABLE filler (x text)');
    await waitFor('the slot to be lost', async () => {
      await source.query("INSERT INTO filler SELECT repeat('x', 1000) FROM generate_series(1, 5000)");
      await source.query('SELECT pg_switch_wal()');
      await source.query('CHECKPOINT');
      const { rows } = await source.query("SELECT wal_status FROM pg_replication_slots WHERE slot_name = 'lost_slot'");
      return rows[0]?.wal_status === 'lost';
    }, 60_000, 100);

    const refused = await run(process.execPath, [CLI, 'run', '-c', configFile], { encoding: 'utf8' }).catch((e: { code: number; stderr: string }) => e);
    expect((refused as { code: number }).code).toBe(1);
    expect((refused as { stderr: string }).stderr).toMatch(/slot lost_slot is lost/);
    expect((refused as { stderr: string }).stderr).toMatch(/syncline resync/);

    const resync = await run(process.execPath, [CLI, 'resync', '-c', configFile], { encoding: 'utf8' });
    expect(resync.stdout).toMatch(/dropped and re-created slot lost_slot; queued snapshot\(s\) of public\.items/);

    child = start();
    // Every snapshot done (the first run's initial one may have finished before the resync's began).
    await waitFor('the snapshot to finish', async () => (await source.query("SELECT count(*) FILTER (WHERE status <> 'done')::int AS open, count(*)::int AS n FROM syncline.snapshots")).rows.some((r: { open: number; n: number }) => r.open === 0 && r.n >= 1), 60_000, 200);
    // Rows deleted while the slot was lost are still at the target; repair removes them.
    const repair = await run(process.execPath, [CLI, 'repair', '-c', configFile], { encoding: 'utf8' });
    expect(repair.stdout).toMatch(/no drift remains/);
    expect((await compareTable(source, target, { schema: 'public', table: 'items' })).differing).toBe(0);
    await stopChild(child);
  }, 240_000);
});
