/**
 * A capture waiting as standby (another capture leads the slot) whose connection to the
 * source is ended by the server (pg_terminate_backend of idle sessions, a proxy's or
 * firewall's cut): its wait for the leadership failed with 'Client has encountered a
 * connection error and is not queryable' and, as it had never streamed, the process ended
 * (exit 1): the HA pair had lost its standby, and the leader's next failure stopped capture.
 * A capture that got as far as waiting for the leadership is past its prerequisites (the
 * source, the publication and the state tables answered): a lost connection is what passes,
 * and it starts again (red16).
 */
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runPipeline } from '../../src/api/run-pipeline.js';
import { parseConfig } from '../../src/config/load.js';
import { Metrics } from '../../src/metrics/metrics.js';
import { freshDatabase, machinePg15, slotStreaming, testLogger, uniqueName, waitFor, withClient, type PgServer } from '../helpers/postgres.js';

const SLOT = uniqueName('syncline_standby_end');

describe('a standby capture whose connection to the source is ended', () => {
  let server: PgServer;
  let dir: string;
  let sourceUrl: string;
  let text: string;

  beforeAll(async () => {
    server = await machinePg15();
    dir = await mkdtemp(path.join(os.tmpdir(), 'syncline-standby-end-'));
    sourceUrl = await freshDatabase(server, 'syncline_standby_end_src');
    await withClient(sourceUrl, (c) => c.query('CREATE TABLE items (id int PRIMARY KEY, v text)'));
    text = `source:
  url: ${sourceUrl}
  slots: [{ name: ${SLOT}, publication: syncline_standby_end_pub, tables: [items] }]
  snapshot: never
stream: { path: ${path.join(dir, 'stream')}, partitions: 2 }
consumer: { retry: { backoff_base_ms: 100, backoff_max_ms: 500, jitter: false } }
sink: { url: ${sourceUrl} }
monitoring: { enabled: false }
`;
  }, 120_000);

  afterAll(async () => {
    await withClient(server.url('postgres'), (c) => c.query('SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1 AND NOT active', [SLOT]));
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('keeps waiting (connected again) and takes over when the leader stops', async () => {
    const leaderCtl = new AbortController();
    const leader = runPipeline(parseConfig(text, {}), 'capture', await testLogger(), leaderCtl.signal, new Metrics());
    leader.catch(() => undefined);
    const standbyCtl = new AbortController();
    let standbyEnded: unknown;
    let standby: Promise<unknown> = Promise.resolve();
    try {
      await withClient(sourceUrl, (c) => waitFor('the leader streaming', () => slotStreaming(c, SLOT), 60_000, 100));
      standby = runPipeline(parseConfig(text, {}), 'capture', await testLogger(), standbyCtl.signal, new Metrics()).then(
        () => (standbyEnded = 'resolved'),
        (err: unknown) => (standbyEnded = err),
      );
      // The standby's session: it asks for the lock without holding it.
      const standbyPid = async (): Promise<number | undefined> =>
        withClient(sourceUrl, async (c) => {
          const { rows } = await c.query<{ pid: number }>(
            `SELECT a.pid FROM pg_stat_activity a WHERE a.datname = current_database() AND a.pid <> pg_backend_pid() AND a.query LIKE '%pg_try_advisory_lock%'
                AND NOT EXISTS (SELECT 1 FROM pg_locks l WHERE l.pid = a.pid AND l.locktype = 'advisory' AND l.granted)`,
          );
          return rows[0]?.pid;
        });
      let pid: number | undefined;
      await waitFor('the standby waiting', async () => (pid = await standbyPid()) !== undefined, 30_000, 100);
      await withClient(sourceUrl, (c) => c.query('SELECT pg_terminate_backend($1)', [pid]));
      await new Promise((r) => setTimeout(r, 3000));
      expect(standbyEnded).toBeUndefined();
      leaderCtl.abort();
      await leader.catch(() => undefined);
      await withClient(sourceUrl, (c) => waitFor('the standby streaming', () => slotStreaming(c, SLOT), 60_000, 100));
      expect(standbyEnded).toBeUndefined();
    } finally {
      leaderCtl.abort();
      standbyCtl.abort();
      await leader.catch(() => undefined);
      await standby;
    }
  }, 120_000);
});
