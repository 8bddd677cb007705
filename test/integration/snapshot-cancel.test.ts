import type { ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SnapshotStore, type SnapshotJob } from '../../src/source/snapshot-store.js';
import { runCli } from '../helpers/cli.js';
import { captureFixture, startCli, type CaptureFixture } from '../helpers/cli-process.js';
import { freePort, uniqueName, waitFor } from '../helpers/postgres.js';

const SLOT = uniqueName('syncline_snapcancel');

/**
 * `syncline snapshot --cancel ID`: a job the user gives up on (a big table's re-read, a keyless
 * table's snapshot whose cut cannot get its lock) stops at its next chunk, whoever waits for
 * it (`syncline snapshot`, `repair`) stops waiting, and the capture's runner goes on with
 * the next job. Before, the only way was an UPDATE by hand, which the runner did not see
 * (it wrote `done` over it) and `syncline snapshot` waited on forever.
 */
describe('syncline snapshot --cancel (PostgreSQL 15)', () => {
  let fx: CaptureFixture;
  let capture: ChildProcess | undefined;
  let store: SnapshotStore;

  beforeAll(async () => {
    fx = await captureFixture(
      'syncline_snapcancel',
      `CREATE TABLE big (id integer PRIMARY KEY, v text);
       INSERT INTO big SELECT g, repeat('v', 40) FROM generate_series(1, 200000) g;
       CREATE TABLE kl (a integer, b text);
       ALTER TABLE kl REPLICA IDENTITY FULL;
       INSERT INTO kl SELECT g, repeat('k', 40) FROM generate_series(1, 300000) g;
       CREATE TABLE small (id integer PRIMARY KEY);
       INSERT INTO small SELECT generate_series(1, 10);`,
      (url, streamPath) => `source:
  url: ${url}
  slots: [{ name: ${SLOT}, publication: syncline_snapcancel_pub, tables: [big, kl, small] }]
  snapshot: never
  snapshot_chunk_size: 500
stream: { broker: embedded, path: ${streamPath} }
monitoring: { port: 0 }
`,
    );
    await writeFile(fx.configFile, (await readFile(fx.configFile, 'utf8')).replace('port: 0', `port: ${await freePort()}`));
    store = new SnapshotStore(fx.source, 'syncline', SLOT);
    capture = startCli(path.join(fx.dir, 'capture.log'), 'capture', '-c', fx.configFile);
    await waitFor('the slot', async () => (await fx.source.query('SELECT 1 FROM pg_replication_slots WHERE slot_name = $1', [SLOT])).rowCount === 1, 60_000, 100);
  }, 120_000);

  afterAll(async () => {
    if (capture && capture.exitCode === null) capture.kill('SIGKILL');
    await fx?.close();
  });

  const job = async (id: string): Promise<SnapshotJob | undefined> => store.get(id);

  it('stops a running keyed job and whoever waits for it; the runner goes on', async () => {
    const waiting = startCli(path.join(fx.dir, 'waiting.log'), 'snapshot', 'big', '-c', fx.configFile);
    const exited = once(waiting, 'exit');
    let id = '';
    await waitFor('the job to run a few chunks', async () => {
      const jobs = await store.all();
      id = jobs[0]?.id ?? '';
      return jobs[0]?.status === 'running' && jobs[0].chunks >= 3;
    }, 60_000, 20);
    const r = await runCli('snapshot', '--cancel', id, '-c', fx.configFile);
    expect(r.stdout).toContain(`cancelled snapshot job(s) #${id}`);
    expect(r.code).toBe(0);
    const [code] = (await exited) as [number];
    expect(code).toBe(1);
    expect(await readFile(path.join(fx.dir, 'waiting.log'), 'utf8')).toContain(`snapshot job #${id} (public.big) was cancelled`);
    const rows = (await job(id))?.rows;
    await new Promise((resolve) => setTimeout(resolve, 1500));
    const after = await job(id);
    expect(after?.status).toBe('cancelled');
    expect(after?.rows).toBe(rows);
    expect(after?.rows).toBeLessThan(200_000);
    // The runner is free: the next job runs to its end.
    const next = await runCli('snapshot', 'small', '--json', '-c', fx.configFile);
    expect(next.code).toBe(0);
    expect(JSON.parse(next.stdout)).toMatchObject([{ table: 'public.small', status: 'done', rows: 10 }]);
  }, 120_000);

  it('does not stop a keyless table read past its cut (the target was reset): it reads to its end', async () => {
    const id = await store.request({ schema: 'public', table: 'kl' });
    await waitFor('the cut', async () => (await job(id))?.cutAt != null, 60_000, 5);
    // A change committed after the cut: held until the rows are out.
    await fx.source.query("INSERT INTO kl VALUES (-1, 'after the cut')");
    const r = await runCli('snapshot', '--cancel', id, '--json', '-c', fx.configFile);
    expect(r.code).toBe(1);
    const out = JSON.parse(r.stdout) as { cancelled: string[]; not_cancelled: Array<{ id: string; reason: string }> };
    expect(out.cancelled).toEqual([]);
    expect(out.not_cancelled[0]?.reason).toContain(`#${id} is reading keyless table public.kl past its cut`);
    await waitFor('the read to end', async () => (await job(id))?.status === 'done', 120_000, 100);
    expect((await job(id))?.rows).toBe(300_000); // the row inserted after the cut is not in the read
    // The held change went out, and the slot moved past it.
    const { rows } = await fx.source.query<{ lsn: string }>('SELECT pg_current_wal_lsn()::text AS lsn');
    await waitFor('the slot to pass the held change', async () => {
      const s = await fx.source.query<{ ok: boolean }>('SELECT confirmed_flush_lsn >= $1::pg_lsn AS ok FROM pg_replication_slots WHERE slot_name = $2', [rows[0]?.lsn, SLOT]);
      return s.rows[0]?.ok === true;
    }, 30_000, 100);
    // A pending one is cancelled, and a new snapshot of the table runs to its end.
    const a = await store.request({ schema: 'public', table: 'kl' });
    const b = await store.request({ schema: 'public', table: 'kl' });
    const both = await runCli('snapshot', '--cancel', `${a},${b}`, '--json', '-c', fx.configFile);
    expect(JSON.parse(both.stdout).cancelled.length).toBeGreaterThanOrEqual(1);
    const again = await runCli('snapshot', 'kl', '--json', '-c', fx.configFile);
    expect(again.code).toBe(0);
    expect(JSON.parse(again.stdout)).toMatchObject([{ table: 'public.kl', status: 'done', rows: 300_001 }]);
  }, 180_000);

  it('refuses what is not an unfinished job of the slot, naming why', async () => {
    const done = (await store.all()).find((j) => j.status === 'done') as SnapshotJob;
    const r = await runCli('snapshot', '--cancel', `${done.id},999999`, '-c', fx.configFile);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`not cancelled: #${done.id} is done`);
    expect(r.stderr).toContain('not cancelled: #999999 does not exist for this slot');
    const bad = await runCli('snapshot', '--cancel', 'abc', '-c', fx.configFile);
    expect(bad.code).not.toBe(0);
    expect(bad.stderr).toContain('not a snapshot job id: abc');
  }, 60_000);
});
