import type { ChildProcess } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SnapshotStore } from '../../src/source/snapshot-store.js';
import { ensureBuilt } from '../helpers/cli.js';
import { kill9, startCli } from '../helpers/cli-process.js';
import { freePort, freshDatabase, machinePg15, uniqueName, waitFor } from '../helpers/postgres.js';
import { writeUntilStopped } from '../helpers/workload.js';

const SLOT = uniqueName('syncline_kl_tx');

/**
 * pgbench's shape under sink.consistency: transactional: every transaction moves money
 * between two accounts (keyed) and logs it in a keyless history table. A snapshot of the
 * history table is killed (kill -9 of capture) between its reset and its last row, twice,
 * and apply is killed once: the target must converge to the source, with no dead letters,
 * and a reader of the target must never see the balances' sum change.
 */
describe('keyless snapshot interrupted under transactional apply (PostgreSQL 15)', () => {
  let dir: string;
  let source: pg.Client;
  let target: pg.Client;
  let sourceUrl: string;
  let targetUrl: string;
  const children: ChildProcess[] = [];

  beforeAll(async () => {
    ensureBuilt();
    dir = await mkdtemp(path.join(os.tmpdir(), 'syncline-kl-tx-'));
    const server = await machinePg15();
    sourceUrl = await freshDatabase(server, 'syncline_kl_tx_source');
    targetUrl = await freshDatabase(server, 'syncline_kl_tx_target');
    source = new pg.Client({ connectionString: sourceUrl });
    await source.connect();
    target = new pg.Client({ connectionString: targetUrl });
    await target.connect();
    await source.query('CREATE TABLE acc (id integer PRIMARY KEY, bal integer NOT NULL)');
    await source.query('INSERT INTO acc SELECT g, 1000 FROM generate_series(1, 100) g');
    await source.query('CREATE TABLE hist (aid integer, delta integer, filler text)');
    await source.query('ALTER TABLE hist REPLICA IDENTITY FULL');
    await source.query("INSERT INTO hist SELECT g % 100, 0, repeat('x', 60) FROM generate_series(1, 300000) g");
    await target.query('CREATE TABLE acc (id integer PRIMARY KEY, bal integer NOT NULL)');
    await target.query('CREATE TABLE hist (aid integer, delta integer, filler text)');
    const port = await freePort();
    await writeFile(
      path.join(dir, 'sync.yaml'),
      `source:
  url: ${sourceUrl}
  slots: [{ name: ${SLOT}, publication: syncline_kl_tx_pub, tables: [acc, hist] }]
  snapshot_chunk_size: 500
stream: { broker: embedded, path: ${path.join(dir, 'stream')}, partitions: 3 }
consumer:
  group_id: g
  retry: { backoff_base_ms: 50, backoff_max_ms: 500 }
sink:
  url: ${targetUrl}
  consistency: transactional
monitoring: { port: ${port} }
`,
    );
  }, 120_000);

  afterAll(async () => {
    for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
    await source?.end();
    await target?.end();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  const start = (role: 'capture' | 'apply'): ChildProcess => {
    const extra = role === 'apply' ? ['--metrics-port', '0'] : [];
    const c = startCli(path.join(dir, `${role}.log`), role, '-c', path.join(dir, 'sync.yaml'), ...extra);
    children.push(c);
    return c;
  };

  it('converges, with no dead letters and no torn transaction seen', async () => {
    const store = new SnapshotStore(source, 'syncline', SLOT);
    const jobs = (): Promise<{ status: string }[]> => store.all().catch(() => []);
    let capture = start('capture');
    let apply = start('apply');
    let n = 0;
    const workload = await writeUntilStopped(sourceUrl, 3, async (writer) => {
      const a = 1 + Math.floor(Math.random() * 100);
      const b = 1 + Math.floor(Math.random() * 100);
      const d = 1 + Math.floor(Math.random() * 10);
      await writer.query('BEGIN');
      await writer.query('UPDATE acc SET bal = bal - $2 WHERE id = $1', [a, d]);
      await writer.query('UPDATE acc SET bal = bal + $2 WHERE id = $1', [b, d]);
      if (n++ % 4 !== 0) await writer.query("INSERT INTO hist VALUES ($1, $2, 'y')", [a, d]);
      await writer.query('COMMIT');
      // Some history-only transactions, as a cleanup job would do.
      if (n % 7 === 0) await writer.query('DELETE FROM hist WHERE ctid = (SELECT ctid FROM hist WHERE aid = $1 LIMIT 1)', [a]);
    });
    const torn: number[] = [];
    let reading = true;
    const reader = (async () => {
      while (reading) {
        const { rows } = await target.query<{ s: string | null; n: string }>('SELECT sum(bal)::text AS s, count(*)::text AS n FROM acc');
        if (rows[0]?.n === '100' && rows[0].s !== '100000') torn.push(Number(rows[0].s));
        await new Promise((r) => setTimeout(r, 20));
      }
    })();
    try {
      await waitFor('the initial snapshot', async () => (await jobs()).length > 0 && (await jobs()).every((j) => j.status === 'done'), 180_000, 200);
      await store.request({ schema: 'public', table: 'hist' });
      for (let k = 0; k < 2; k++) {
        await waitFor('the snapshot to run', async () => (await jobs()).some((j) => j.status === 'running'), 60_000, 20);
        await new Promise((r) => setTimeout(r, 700 + k * 400));
        await kill9(capture);
        if (k === 0) {
          await kill9(apply);
          apply = start('apply');
        }
        capture = start('capture');
      }
      await waitFor('the snapshot to finish', async () => (await jobs()).every((j) => j.status === 'done'), 180_000, 200);
      await new Promise((r) => setTimeout(r, 2000));
    } finally {
      await workload.stop();
    }
    const srcAcc = (await source.query<{ r: string }>("SELECT string_agg(id || ':' || bal, ',' ORDER BY id) AS r FROM acc")).rows[0]?.r;
    const srcHist = (await source.query<{ r: string }>('SELECT md5(string_agg(aid || \':\' || delta || \':\' || filler, \',\' ORDER BY aid, delta, filler)) AS r FROM hist')).rows[0]?.r;
    const began = Date.now();
    await waitFor('the target to equal the source', async () => {
      const a = (await target.query<{ r: string }>("SELECT string_agg(id || ':' || bal, ',' ORDER BY id) AS r FROM acc")).rows[0]?.r;
      const h = (await target.query<{ r: string }>('SELECT md5(string_agg(aid || \':\' || delta || \':\' || filler, \',\' ORDER BY aid, delta, filler)) AS r FROM hist')).rows[0]?.r;
      return a === srcAcc && h === srcHist;
    }, 180_000, 500).catch(async (err: unknown) => {
      const counts = await target.query('SELECT (SELECT count(*) FROM hist) AS hist, (SELECT sum(bal) FROM acc) AS s');
      const srcCounts = await source.query('SELECT (SELECT count(*) FROM hist) AS hist, (SELECT sum(bal) FROM acc) AS s');
      throw new Error(`${String(err)}; target ${JSON.stringify(counts.rows)} source ${JSON.stringify(srcCounts.rows)}`);
    });
    console.log(`converged ${Date.now() - began} ms after the workload`);
    reading = false;
    await reader;
    const dl = await target.query<{ n: string }>('SELECT count(*)::text AS n FROM syncline.dead_letter').catch(() => ({ rows: [{ n: '0' }] }));
    expect(dl.rows[0]?.n).toBe('0');
    expect(torn).toEqual([]);
  }, 600_000);
});
