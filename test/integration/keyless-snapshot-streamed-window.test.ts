import type { ChildProcess } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SnapshotStore } from '../../src/source/snapshot-store.js';
import { ensureBuilt } from '../helpers/cli.js';
import { currentWal, startCli, waitForSlotToConfirm } from '../helpers/cli-process.js';
import { freshDatabase, machinePg15, uniqueName, waitFor } from '../helpers/postgres.js';

const SLOT = uniqueName('syncline_keyless_window');

/**
 * Large transactions streamed to capture (logical_decoding_work_mem of 64 kB) replay while a
 * keyless snapshot hands over its rows, with one publish in flight: both wait for room in
 * the window at once. The window kept one waiter and the second replaced the first; capture
 * stopped for good (the snapshot never finished, the slot never moved again).
 */
describe('a keyless snapshot beside streamed transactions, one publish in flight (PostgreSQL 15)', () => {
  let dir: string;
  let source: pg.Client;
  let url: string;
  let child: ChildProcess | undefined;

  beforeAll(async () => {
    ensureBuilt();
    dir = await mkdtemp(path.join(os.tmpdir(), 'syncline-keyless-window-'));
    url = await freshDatabase(await machinePg15(), 'syncline_keyless_window');
    source = new pg.Client({ connectionString: url });
    await source.connect();
    // The walsender of this database streams every transaction past 64 kB.
    await source.query(`ALTER DATABASE ${pg.Client.prototype.escapeIdentifier(source.database as string)} SET logical_decoding_work_mem = '64kB'`);
    await source.query('CREATE TABLE hist (g integer, filler text)');
    await source.query('ALTER TABLE hist REPLICA IDENTITY FULL');
    await source.query('CREATE TABLE big (id integer PRIMARY KEY, filler text)');
    await source.query("INSERT INTO hist SELECT g, repeat('x', 50) FROM generate_series(1, 300000) g");
    await writeFile(
      path.join(dir, 'capture.yaml'),
      `source:
  url: ${url}
  slots: [{ name: ${SLOT}, publication: syncline_keyless_window_pub, tables: [hist, big] }]
  snapshot_chunk_size: 2000
stream: { path: ${path.join(dir, 'stream')}, partitions: 1, batch_size: 200, max_in_flight: 1 }
monitoring: { enabled: false }
`,
    );
  }, 60_000);

  afterAll(async () => {
    child?.kill('SIGKILL');
    await source?.end();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('the snapshot finishes and capture confirms the last write', async () => {
    const store = new SnapshotStore(source, 'syncline', SLOT);
    const jobs = (): Promise<{ status: string }[]> => store.all().catch(() => []);
    child = startCli(path.join(dir, 'capture.log'), 'capture', '-c', path.join(dir, 'capture.yaml'));
    await waitFor('the initial snapshot', async () => (await jobs()).length > 0 && (await jobs()).every((j) => j.status === 'done'), 120_000, 200);
    await store.request({ schema: 'public', table: 'hist' });
    for (let k = 0; k < 4; k++) await source.query(`INSERT INTO big SELECT g + ${k * 100_000}, repeat('y', 50) FROM generate_series(1, 100000) g`);
    const lastWrite = await currentWal(source);
    await waitFor('the snapshot to finish', async () => (await jobs()).every((j) => j.status === 'done'), 90_000, 200);
    await waitForSlotToConfirm(source, SLOT, 90_000, lastWrite);
    expect((await jobs()).map((j) => j.status)).toContain('done');
  }, 300_000);
});
