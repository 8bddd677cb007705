import type { ChildProcess } from 'node:child_process';
import path from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SnapshotStore } from '../../src/source/snapshot-store.js';
import { currentWal, startCli, waitForSlotToConfirm, captureFixture, type CaptureFixture } from '../helpers/cli-process.js';
import { uniqueName, waitFor } from '../helpers/postgres.js';

const SLOT = uniqueName('syncline_keyless_window');

/**
 * Large transactions streamed to capture (logical_decoding_work_mem of 64 kB) replay while a
 * keyless snapshot hands over its rows, with one publish in flight: both wait for room in
 * the window at once. The window kept one waiter and the second replaced the first; capture
 * stopped for good (the snapshot never finished, the slot never moved again).
 */
describe('a keyless snapshot beside streamed transactions, one publish in flight (PostgreSQL 15)', () => {
  let fx: CaptureFixture | undefined;
  let dir: string;
  let source: pg.Client;
  let child: ChildProcess | undefined;

  beforeAll(async () => {
    // The walsender of this database streams every transaction past 64 kB.
    fx = await captureFixture('syncline_keyless_window', `DO $$ BEGIN EXECUTE format('ALTER DATABASE %I SET logical_decoding_work_mem = %L', current_database(), '64kB'); END $$;
      CREATE TABLE hist (g integer, filler text);
      ALTER TABLE hist REPLICA IDENTITY FULL;
      CREATE TABLE big (id integer PRIMARY KEY, filler text);
      INSERT INTO hist SELECT g, repeat('x', 50) FROM generate_series(1, 300000) g`, (url, stream) => `source:
  url: ${url}
  slots: [{ name: ${SLOT}, publication: syncline_keyless_window_pub, tables: [hist, big] }]
  snapshot_chunk_size: 2000
stream: { path: ${stream}, partitions: 1, batch_size: 200, max_in_flight: 1 }
monitoring: { enabled: false }
`);
    ({ dir, source } = fx);
  }, 60_000);

  afterAll(async () => {
    child?.kill('SIGKILL');
    await fx?.close();
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
