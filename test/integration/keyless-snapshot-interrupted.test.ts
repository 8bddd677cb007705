import type { ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import path from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SnapshotStore } from '../../src/source/snapshot-store.js';
import { kill9, startCli, waitForSlotToConfirm, captureFixture, type CaptureFixture } from '../helpers/cli-process.js';
import { applyAsMultiset, readEmbeddedStream } from '../helpers/multiset-replay.js';
import { uniqueName, waitFor } from '../helpers/postgres.js';

const SLOT = uniqueName('syncline_keyless_kill');
const PARTITIONS = 2;
const COLUMNS = ['g', 'aid', 'delta', 'filler'];

/**
 * A keyless table's snapshot killed (kill -9 of capture) between its reset and its last row,
 * several times, while the table is updated and deleted from all over: the stream must still
 * replay to exactly the source's rows, with no change removing a row the target lacks.
 * Before, capture restarted past the cut and streamed the table's changes at once, behind a
 * reset and part of the rows: a change to a row not yet read looked like drift at the target
 * (MULTISET_ROW_MISSING, and in transactional mode every later transaction touching the table
 * followed it into the dead-letter queue: chaos seed 505392065).
 */
describe('a keyless snapshot interrupted by kill -9 (PostgreSQL 15)', () => {
  let fx: CaptureFixture | undefined;
  let dir: string;
  let source: pg.Client;
  let url: string;
  let child: ChildProcess | undefined;

  beforeAll(async () => {
    fx = await captureFixture('syncline_keyless_kill', `CREATE TABLE hist (g integer, aid integer, delta integer, filler text);
      ALTER TABLE hist REPLICA IDENTITY FULL;
      -- Duplicates on purpose (g % 50000): rows that cannot be told apart.
      INSERT INTO hist SELECT g % 50000, g % 2000, 0, repeat('x', 40) FROM generate_series(1, 200000) g`, (url, stream) => `source:
  url: ${url}
  slots: [{ name: ${SLOT}, publication: syncline_keyless_kill_pub, tables: [hist] }]
  snapshot_chunk_size: 500
stream: { path: ${stream}, partitions: ${PARTITIONS} }
monitoring: { enabled: false }
`);
    ({ dir, source, url } = fx);
  }, 60_000);

  afterAll(async () => {
    child?.kill('SIGKILL');
    await fx?.close();
  });

  const startCapture = (): ChildProcess => startCli(path.join(dir, 'capture.log'), 'capture', '-c', path.join(dir, 'capture.yaml'));

  it('kill -9 between the reset and the last row, three times, under updates and deletes: the stream replays to the source rows', async () => {
    const store = new SnapshotStore(source, 'syncline', SLOT);
    // The store's table exists once capture has started.
    const jobs = (): Promise<{ status: string }[]> => store.all().catch(() => []);
    const writer = new pg.Client({ connectionString: url });
    await writer.connect();
    let writing = true;
    let writes = 0;
    // Rows all over the table change, so some are ones a cut-short snapshot had not yet read.
    const workload = (async () => {
      while (writing) {
        const aid = Math.floor(Math.random() * 2000);
        const r = writes++ % 3;
        if (r === 0) await writer.query('UPDATE hist SET delta = delta + 1 WHERE ctid = (SELECT ctid FROM hist WHERE aid = $1 LIMIT 1)', [aid]);
        else if (r === 1) await writer.query('DELETE FROM hist WHERE ctid = (SELECT ctid FROM hist WHERE aid = $1 ORDER BY ctid DESC LIMIT 1)', [aid]);
        else await writer.query("INSERT INTO hist VALUES ($1, $2, 0, 'y')", [writes, aid]);
        await new Promise((resolve) => setTimeout(resolve, 2));
      }
    })();
    try {
      child = startCapture();
      await waitFor('the initial snapshot', async () => (await jobs()).some((j) => j.status === 'done'), 120_000, 200);
      await store.request({ schema: 'public', table: 'hist' });
      let midSnapshot = 0;
      for (let kill = 0; kill < 3; kill++) {
        await waitFor('the snapshot to run', async () => (await jobs()).some((j) => j.status === 'running'), 60_000, 20);
        // Past the cut (the job marks itself running just before), into the rows.
        await new Promise((resolve) => setTimeout(resolve, 400 + kill * 300));
        await kill9(child);
        if ((await jobs()).some((j) => j.status === 'running')) midSnapshot++;
        child = startCapture();
      }
      expect(midSnapshot).toBeGreaterThan(0);
      await waitFor('the snapshot to finish', async () => (await jobs()).every((j) => j.status === 'done'), 120_000, 200);
      await new Promise((resolve) => setTimeout(resolve, 500));
    } finally {
      writing = false;
      await workload;
      await writer.end();
    }
    await waitForSlotToConfirm(source, SLOT, 60_000);
    const stopped = once(child, 'exit');
    child.kill('SIGTERM');
    await stopped;
    child = undefined;

    const events = await readEmbeddedStream(path.join(dir, 'stream'), PARTITIONS);
    const hist = events.filter((e) => e.change.table === 'hist').map((e) => e.change);
    expect(hist.filter((e) => e.snapshot_reset).length).toBeGreaterThanOrEqual(3);
    const replayed = applyAsMultiset(hist, COLUMNS);
    const { rows: src } = await source.query<{ r: string }>('SELECT json_build_array(g::text, aid::text, delta::text, filler)::text AS r FROM hist');
    const expected = src.map((r) => r.r).sort();
    expect(replayed.length).toBe(expected.length);
    expect(replayed).toEqual(expected);
  }, 300_000);
});
