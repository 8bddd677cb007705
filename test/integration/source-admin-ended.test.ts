/**
 * Capture's admin connection to the source ended by the server (pg_terminate_backend by a DBA
 * or a watchdog, a proxy's or firewall's cut) while the replication connection stays up. That
 * connection holds the slot's leadership lock and carries the snapshot jobs, the heartbeat and
 * the publication check; nothing connected it again and capture, still streaming, never
 * restarted: every snapshot job stayed pending (or running, half read) for good ('could not
 * read snapshot jobs' each second), the leadership was free for a standby to take, and a table
 * removed from the publication was no longer noticed (red16, with `syncline run` under
 * load: a 400,000-row snapshot stuck at 50,000 rows).
 */
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SnapshotStore } from '../../src/source/snapshot-store.js';
import { compareTable } from '../../src/verify/compare.js';
import { countRows, pipelineFixture, type PipelineFixture, type RunningPipeline } from '../helpers/pipeline-fixture.js';
import { uniqueName, waitFor } from '../helpers/postgres.js';

/** The backend holding capture's leadership lock (the admin connection), if any. */
async function leaderPid(client: pg.Client): Promise<number | undefined> {
  const { rows } = await client.query<{ pid: number }>(
    `SELECT l.pid FROM pg_locks l JOIN pg_database d ON d.oid = l.database
      WHERE l.locktype = 'advisory' AND l.granted AND d.datname = current_database() AND l.pid <> pg_backend_pid()`,
  );
  return rows[0]?.pid;
}

describe("capture's admin connection ended by the server", () => {
  const name = uniqueName('syncline_adminend');
  let f: PipelineFixture;
  let running: RunningPipeline | undefined;

  beforeAll(async () => {
    f = await pipelineFixture(name);
    await f.source.query(`CREATE TABLE r (id int PRIMARY KEY, v int NOT NULL DEFAULT 0); INSERT INTO r SELECT i, 0 FROM generate_series(1, 100) i`);
    const yaml = await f.yaml({ slot: 'tables: [r]', extra: ['consumer: { retry: { backoff_base_ms: 50, backoff_max_ms: 500 } }'], sink: 'create_tables: true' });
    running = await f.start(yaml);
    await waitFor('r replicated', async () => (await countRows(f.target, 'r')) === 100, 60_000, 250);
  }, 120_000);

  afterAll(async () => {
    await running?.stop();
    await f?.close();
  }, 60_000);

  it('capture connects again: the leadership is held and a snapshot job runs', async () => {
    const pid = await leaderPid(f.source);
    expect(pid).toBeDefined();
    await f.source.query('SELECT pg_terminate_backend($1)', [pid]);
    // Rows the target lacks (written with replication off for this session): only a snapshot brings them.
    await f.source.query(`SET session_replication_role = replica; INSERT INTO r SELECT i, 0 FROM generate_series(101, 150) i; RESET session_replication_role`);
    const store = new SnapshotStore(f.source, 'syncline', name);
    const id = await store.request({ schema: 'public', table: 'r' });
    await waitFor('the snapshot job done', async () => (await store.get(id))?.status === 'done', 30_000, 250);
    await waitFor('target r equals source r', async () => (await compareTable(f.source, f.target, { schema: 'public', table: 'r' })).differing === 0, 30_000, 250);
    const again = await leaderPid(f.source);
    expect(again).toBeDefined();
    expect(again).not.toBe(pid);
  }, 120_000);
});
