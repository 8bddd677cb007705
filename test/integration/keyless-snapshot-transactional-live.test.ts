import type { ChildProcess } from 'node:child_process';
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SnapshotStore } from '../../src/source/snapshot-store.js';
import { captureFixture, startCli, type CaptureFixture } from '../helpers/cli-process.js';
import { freePort, freshDatabase, machinePg15, uniqueName, waitFor } from '../helpers/postgres.js';
import { writeUntilStopped } from '../helpers/workload.js';

const SLOT = uniqueName('syncline_kl_live');
const ROWS = 400_000;

/**
 * pgbench's shape under sink.consistency: transactional while a big keyless table is
 * snapshotted (`syncline snapshot`), nothing killed: every transfer also adds a history row,
 * whose changes wait behind the snapshot's rows. Before, capture published the transfer's
 * account changes at once and its history row after the rows: apply held the transfer, and
 * every later one behind it, in memory, and after `sink.incomplete_transaction_ms` applied
 * the accounts without the history row (a torn transaction, logged). Now no transaction
 * reaches the stream in parts: none is torn, and the target converges.
 */
describe('keyless snapshot under transactional apply, live (PostgreSQL 15)', () => {
  let fx: CaptureFixture;
  let target: pg.Client;
  let targetUrl: string;
  let run: ChildProcess | undefined;

  beforeAll(async () => {
    fx = await captureFixture(
      'syncline_kl_live_source',
      `CREATE TABLE acc (id integer PRIMARY KEY, bal integer NOT NULL);
       INSERT INTO acc SELECT g, 1000 FROM generate_series(1, 100) g;
       CREATE TABLE hist (aid integer, delta integer, filler text);
       ALTER TABLE hist REPLICA IDENTITY FULL;
       INSERT INTO hist SELECT g % 100, 0, repeat('x', 40) FROM generate_series(1, ${ROWS}) g;`,
      () => '',
    );
    targetUrl = await freshDatabase(await machinePg15(), 'syncline_kl_live_target');
    target = new pg.Client({ connectionString: targetUrl });
    await target.connect();
    await target.query('CREATE TABLE acc (id integer PRIMARY KEY, bal integer NOT NULL); CREATE TABLE hist (aid integer, delta integer, filler text)');
    await writeFile(
      fx.configFile,
      `source:
  url: ${fx.url}
  slots: [{ name: ${SLOT}, publication: syncline_kl_live_pub, tables: [acc, hist] }]
stream: { broker: embedded, path: ${path.join(fx.dir, 'stream')}, partitions: 3 }
consumer: { group_id: g }
sink:
  url: ${targetUrl}
  consistency: transactional
  incomplete_transaction_ms: 300
monitoring: { port: ${await freePort()} }
`,
    );
  }, 180_000);

  afterAll(async () => {
    if (run && run.exitCode === null) run.kill('SIGKILL');
    await target?.end();
    await fx?.close();
  });

  const targetHist = async (): Promise<string | undefined> =>
    (await target.query<{ r: string }>("SELECT count(*) || ':' || coalesce(sum(delta), 0) AS r FROM hist")).rows[0]?.r;

  it('tears no transaction, and converges', async () => {
    const logFile = path.join(fx.dir, 'run.log');
    run = startCli(logFile, 'run', '-c', fx.configFile);
    const store = new SnapshotStore(fx.source, 'syncline', SLOT);
    const jobs = (): Promise<{ status: string }[]> => store.all().catch(() => []);
    await waitFor('the initial snapshot', async () => (await targetHist()) === `${ROWS}:0`, 240_000, 500);

    const workload = await writeUntilStopped(fx.url, 2, async (writer) => {
      const a = 1 + Math.floor(Math.random() * 100);
      const b = 1 + Math.floor(Math.random() * 100);
      const d = 1 + Math.floor(Math.random() * 10);
      await writer.query('BEGIN');
      await writer.query('UPDATE acc SET bal = bal - $2 WHERE id = $1', [a, d]);
      await writer.query('UPDATE acc SET bal = bal + $2 WHERE id = $1', [b, d]);
      await writer.query("INSERT INTO hist VALUES ($1, $2, 'y')", [a, d]);
      await writer.query('COMMIT');
    });
    try {
      await new Promise((r) => setTimeout(r, 500));
      await store.request({ schema: 'public', table: 'hist' });
      await waitFor('the snapshot to run', async () => (await jobs()).some((j) => j.status === 'running'), 60_000, 20);
      await waitFor('the snapshot to finish', async () => (await jobs()).every((j) => j.status === 'done'), 240_000, 200);
      await new Promise((r) => setTimeout(r, 1000));
    } finally {
      await workload.stop();
    }
    const srcAcc = (await fx.source.query<{ r: string }>("SELECT string_agg(id || ':' || bal, ',' ORDER BY id) AS r FROM acc")).rows[0]?.r;
    const srcHist = (await fx.source.query<{ r: string }>("SELECT count(*) || ':' || coalesce(sum(delta), 0) AS r FROM hist")).rows[0]?.r;
    await waitFor('the target to equal the source', async () => {
      const a = (await target.query<{ r: string }>("SELECT string_agg(id || ':' || bal, ',' ORDER BY id) AS r FROM acc")).rows[0]?.r;
      return a === srcAcc && (await targetHist()) === srcHist;
    }, 120_000, 500);
    const log = await readFile(logFile, 'utf8');
    expect(log).not.toContain('cannot become whole');
    expect(log).toContain('capture waits for a keyless snapshot:');
    const dl = await target.query<{ n: string }>('SELECT count(*)::text AS n FROM syncline.dead_letter').catch(() => ({ rows: [{ n: '0' }] }));
    expect(dl.rows[0]?.n).toBe('0');
  }, 600_000);
});
