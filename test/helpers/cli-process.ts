import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { createWriteStream } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { CLI, ensureBuilt } from './cli.js';
import { freshDatabase, machinePg15 } from './postgres.js';
import { waitFor } from './wait.js';

/** `syncline <args>` from the built CLI as a child process, its output appended to `logFile`. */
export function startCli(logFile: string, ...args: string[]): ChildProcess {
  const child = spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  const log = createWriteStream(logFile, { flags: 'a' });
  child.stdout?.pipe(log);
  child.stderr?.pipe(log);
  return child;
}

/** kill -9, resolved once the process is gone. */
export async function kill9(child: ChildProcess): Promise<void> {
  const exited = once(child, 'exit');
  child.kill('SIGKILL');
  await exited;
}

/** The source's WAL position now (to wait for with waitForSlotToConfirm). */
export async function currentWal(source: pg.ClientBase): Promise<string> {
  const { rows } = await source.query<{ lsn: string }>('SELECT pg_current_wal_lsn()::text AS lsn');
  return (rows[0] as { lsn: string }).lsn;
}

/** Waits until the slot's confirmed position reaches `lsn` (default: the source's WAL as of now). */
export async function waitForSlotToConfirm(source: pg.ClientBase, slot: string, timeoutMs: number, lsn?: string): Promise<void> {
  const at = lsn ?? (await currentWal(source));
  await waitFor('capture to confirm the last write', async () => {
    const r = await source.query<{ ok: boolean }>('SELECT confirmed_flush_lsn >= $1::pg_lsn AS ok FROM pg_replication_slots WHERE slot_name = $2', [at, slot]);
    return r.rows[0]?.ok === true;
  }, timeoutMs, 100);
}

/** A fresh source database and a capture configuration for it, in a temporary directory. */
export interface CaptureFixture {
  dir: string;
  url: string;
  source: pg.Client;
  /** `<dir>/capture.yaml`. */
  configFile: string;
  close(): Promise<void>;
}

/**
 * Creates the database `name` (fresh) on the machine's PostgreSQL 15, runs `setupSql` there
 * and writes `yaml(url, streamPath)` as the capture configuration.
 */
export async function captureFixture(name: string, setupSql: string, yaml: (url: string, streamPath: string) => string): Promise<CaptureFixture> {
  ensureBuilt();
  const dir = await mkdtemp(path.join(os.tmpdir(), `${name.replace(/_/g, '-')}-`));
  const url = await freshDatabase(await machinePg15(), name);
  const source = new pg.Client({ connectionString: url });
  await source.connect();
  await source.query(setupSql);
  const configFile = path.join(dir, 'capture.yaml');
  await writeFile(configFile, yaml(url, path.join(dir, 'stream')));
  return {
    dir,
    url,
    source,
    configFile,
    close: async () => {
      await source.end();
      await rm(dir, { recursive: true, force: true });
    },
  };
}
