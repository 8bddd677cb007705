import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SnapshotStore } from '../../src/source/snapshot-store.js';
import { ensureBuilt, runCli } from '../helpers/cli.js';
import { freshDatabase, machinePg15, uniqueName } from '../helpers/postgres.js';

/**
 * `syncline repair` queues one snapshot job per differing key (up to 10,000 per table), so a
 * slot soon has more than the 1000 jobs `syncline snapshot --list` prints. It printed the
 * oldest 1000: every job requested after them — the one running now, a keyless table's
 * snapshot holding its table's changes — was missing from the list.
 */
describe('syncline snapshot --list with more jobs than it prints', () => {
  let dir: string;
  let url: string;
  let client: pg.Client;
  const slot = uniqueName('syncline_snaplist');

  beforeAll(async () => {
    ensureBuilt();
    dir = await mkdtemp(path.join(os.tmpdir(), 'syncline-snaplist-'));
    url = await freshDatabase(await machinePg15(), 'syncline_snaplist');
    client = new pg.Client({ connectionString: url });
    await client.connect();
    await client.query('CREATE TABLE t (id integer PRIMARY KEY); CREATE TABLE hist (a integer); CREATE PUBLICATION syncline_snaplist_pub FOR TABLE t, hist');
    await writeFile(path.join(dir, 'sync.yaml'), `source:
  url: ${url}
  slots: [{ name: ${slot}, publication: syncline_snaplist_pub, tables: [t, hist] }]
sink: { url: ${url} }
monitoring: { enabled: false }
`);
  }, 60_000);

  afterAll(async () => {
    await client?.end();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('lists the newest jobs', async () => {
    const store = new SnapshotStore(client, 'syncline', slot);
    await store.prepare();
    // What a repair of 1200 keys leaves behind, then a snapshot of another table, running.
    await client.query(
      `INSERT INTO syncline.snapshots (slot_name, table_schema, table_name, status, key_from, key_to)
       SELECT $1, 'public', 't', 'done', g::text, g::text FROM generate_series(1, 1200) g`,
      [slot],
    );
    const id = await store.request({ schema: 'public', table: 'hist' });
    await store.markRunning(id);
    const r = await runCli('snapshot', '--list', '--json', '-c', path.join(dir, 'sync.yaml'));
    expect(r.code).toBe(0);
    const jobs = JSON.parse(r.stdout) as { id: string; table: string; status: string }[];
    expect(jobs.length).toBe(1000);
    // In id order, ending with the newest.
    expect(jobs[jobs.length - 1]).toMatchObject({ id, table: 'public.hist', status: 'running' });
    expect(jobs.map((j) => Number(j.id))).toEqual([...jobs.map((j) => Number(j.id))].sort((a, b) => a - b));
  }, 60_000);

  it('runs the oldest pending job first, by number (job 99999 before job 100000)', async () => {
    const other = uniqueName('syncline_snaporder');
    const store = new SnapshotStore(client, 'syncline', other);
    await store.prepare();
    // Ids 99999 and 100000, which as text sort the other way ('100000' < '99999').
    await client.query(`SELECT setval(pg_get_serial_sequence('syncline.snapshots', 'id'), 99998)`);
    const older = await store.request({ schema: 'public', table: 't' });
    const newer = await store.request({ schema: 'public', table: 'hist' });
    expect([older, newer]).toEqual(['99999', '100000']);
    expect((await store.next())?.id).toBe(older);
  });
});
