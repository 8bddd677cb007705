import type { ChildProcess } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SnapshotStore } from '../../src/source/snapshot-store.js';
import { captureFixture, kill9, startCli, waitForSlotToConfirm, type CaptureFixture } from '../helpers/cli-process.js';
import { freePort, uniqueName, waitFor } from '../helpers/postgres.js';
import { writeUntilStopped } from '../helpers/workload.js';

const SLOT = uniqueName('syncline_kl_key');

/**
 * A keyless table's snapshot is interrupted (kill -9 of capture mid-rows), and the table gets
 * a primary key before the job cuts again. The restarted capture held the table's changes
 * (interrupted: until the job's next cut); the job, now run by key, never cuts: its chunks
 * waited for capture to confirm past their high watermark, which the hold kept back
 * (eventual) or capture never read (transactional: it stopped reading behind the first
 * transaction touching the table). Capture hung for good, in both modes.
 */
describe.each(['transactional', 'eventual'])('a keyless snapshot interrupted, the table keyed before its next cut (%s)', (consistency) => {
  let fx: CaptureFixture;
  let child: ChildProcess | undefined;
  const slot = `${SLOT}_${consistency.slice(0, 2)}`;

  beforeAll(async () => {
    const port = await freePort();
    fx = await captureFixture(
      `syncline_kl_key_${consistency.slice(0, 2)}`,
      `CREATE TABLE acc (id integer PRIMARY KEY, bal integer NOT NULL);
       INSERT INTO acc SELECT g, 1000 FROM generate_series(1, 100) g;
       CREATE TABLE hist (aid integer, delta integer, filler text, id bigserial);
       ALTER TABLE hist REPLICA IDENTITY FULL;
       INSERT INTO hist (aid, delta, filler) SELECT g % 100, 0, repeat('x', 60) FROM generate_series(1, 400000) g;`,
      (url, streamPath) => `source:
  url: ${url}
  snapshot: never
  slots: [{ name: ${slot}, publication: ${slot}_pub, tables: [acc, hist] }]
stream: { broker: embedded, path: ${streamPath}, partitions: 3 }
sink:
  consistency: ${consistency}
monitoring: { port: ${port} }
`,
    );
  }, 120_000);

  afterAll(async () => {
    if (child && child.exitCode === null) child.kill('SIGKILL');
    await fx?.close();
  });

  it('runs the job by key and reads on', async () => {
    const logFile = path.join(fx.dir, 'capture.log');
    child = startCli(logFile, 'capture', '-c', fx.configFile);
    const store = new SnapshotStore(fx.source, 'syncline', slot);
    await waitFor('capture to stream', async () => (await readFile(logFile, 'utf8').catch(() => '')).includes('pgoutput protocol negotiated'), 60_000, 50);
    const workload = await writeUntilStopped(fx.url, 3, async (writer) => {
      const a = 1 + Math.floor(Math.random() * 100);
      await writer.query('BEGIN');
      await writer.query('UPDATE acc SET bal = bal - 1 WHERE id = $1', [a]);
      await writer.query("INSERT INTO hist (aid, delta, filler) VALUES ($1, 1, 'y')", [a]);
      await writer.query('COMMIT');
    });
    const ddl = new pg.Client({ connectionString: fx.url });
    await ddl.connect();
    try {
      await store.request({ schema: 'public', table: 'hist' });
      await waitFor('rows of the snapshot', async () => (await readFile(logFile, 'utf8')).includes('"snapshot progress"'), 60_000, 10);
      await kill9(child);
      // The key is added in a transaction that is open while capture restarts: the job's cut
      // waits for it (lock_timeout, retried) and its next attempt finds the table keyed.
      await ddl.query('BEGIN');
      await ddl.query('ALTER TABLE hist ADD PRIMARY KEY (id)');
      child = startCli(logFile, 'capture', '-c', fx.configFile);
      await waitFor('the cut to wait for the key', async () => (await readFile(logFile, 'utf8')).includes('SNAPSHOT_LOCK_TIMEOUT') || (await readFile(logFile, 'utf8')).includes('longer than the cut waits'), 60_000, 20);
      await ddl.query('COMMIT');
      await waitFor('the job to finish by key', async () => (await store.all()).every((j) => j.status === 'done'), 60_000, 200);
    } finally {
      await workload.stop();
      await ddl.end();
    }
    await waitForSlotToConfirm(fx.source, slot, 60_000);
    expect(child.exitCode).toBeNull();
  }, 300_000);
});
