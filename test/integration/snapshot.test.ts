import { execFile, spawnSync } from 'node:child_process';
import { promisify } from 'node:util';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runPipeline } from '../../src/api/run-pipeline.js';
import { loadConfigFile, parseConfig } from '../../src/config/load.js';
import { Metrics } from '../../src/metrics/metrics.js';
import { compareTable } from '../../src/verify/compare.js';
import { embeddedPg17, freePort, machinePg15, testLogger, waitFor, sourceAndTarget, type PgServer, uniqueName } from '../helpers/postgres.js';

const SNAP_SLOT = uniqueName('syncline_snap');
const PSNAP_SLOT = uniqueName('syncline_psnap');

const CLI = path.resolve('dist/cli/main.js');

describe('snapshots while streaming (PostgreSQL 15)', () => {
  let dir: string;
  let configFile: string;
  let source: pg.Client;
  let target: pg.Client;
  let stop: () => Promise<void>;
  const metrics = new Metrics();
  const drift = async (): Promise<number | undefined> =>
    (await metrics.registry.getSingleMetric('sync_drift_rows')?.get())?.values.find((v) => v.labels.table === 'public.snap')?.value;

  beforeAll(async () => {
    const server = await machinePg15();
    dir = await mkdtemp(path.join(os.tmpdir(), 'syncline-snap-'));
    const pair = await sourceAndTarget(server, 'syncline_snap');
    ({ source, target } = pair);
    const { sourceUrl, targetUrl } = pair;
    for (const c of [source, target]) {
      await c.query('CREATE TABLE snap (id integer PRIMARY KEY, v integer NOT NULL, t text)');
      await c.query('CREATE TABLE later (a text, b integer, payload jsonb, PRIMARY KEY (a, b))');
    }
    // Rows that exist before syncline ever runs: only a snapshot can bring them.
    await source.query("INSERT INTO snap SELECT g, g, md5(g::text) FROM generate_series(1, 30000) g");
    await source.query("INSERT INTO later SELECT 'k' || (g % 100), g, jsonb_build_object('g', g) FROM generate_series(1, 5000) g");
    configFile = path.join(dir, 'sync.yaml');
    await writeFile(
      configFile,
      `source:
  url: ${sourceUrl}
  slots: [{ name: ${SNAP_SLOT}, publication: syncline_snap_pub, tables: [snap] }]
  snapshot_chunk_size: 1000
stream: { path: ${path.join(dir, 'stream')}, partitions: 4 }
consumer: { group_id: snap }
sink: { url: ${targetUrl} }
monitoring: { port: ${await freePort()} }
`,
    );
    const ctl = new AbortController();
    const running = runPipeline(loadConfigFile(configFile), 'run', await testLogger(), ctl.signal, metrics);
    running.catch(() => undefined);
    stop = async () => {
      ctl.abort();
      await running;
    };
  }, 60_000);

  afterAll(async () => {
    await stop?.();
    await source?.end();
    await target?.end();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  const equal = async (table: string): Promise<boolean> => (await compareTable(source, target, { schema: 'public', table })).differing === 0;

  it('the initial snapshot brings existing rows while concurrent writes stream, and never overwrites a newer change', async () => {
    // Write while the snapshot runs: updates, deletes and inserts across the key range.
    const deadline = Date.now() + 4000;
    let i = 0;
    while (Date.now() < deadline) {
      i++;
      const id = 1 + ((i * 7919) % 30000);
      await source.query('UPDATE snap SET v = -v, t = $2 WHERE id = $1', [id, `updated ${i}`]);
      if (i % 5 === 0) await source.query('DELETE FROM snap WHERE id = $1', [1 + ((i * 104729) % 30000)]);
      if (i % 3 === 0) await source.query('INSERT INTO snap VALUES ($1, $1, $2)', [100000 + i, 'new']);
    }
    await waitFor('target equals source', () => equal('snap'), 90_000, 500);
    const { rows } = await source.query("SELECT status, rows::int, chunks FROM syncline.snapshots WHERE table_name = 'snap'");
    expect(rows).toHaveLength(1);
    expect(rows[0]?.status).toBe('done');
    expect(rows[0]?.chunks).toBeGreaterThanOrEqual(30);
  }, 120_000);

  it('syncline snapshot brings the rows of a table added to the publication later', async () => {
    // Asynchronously: the pipeline runs in this process and must keep running meanwhile.
    const r = await promisify(execFile)(process.execPath, [CLI, 'snapshot', 'later', '-c', configFile, '--timeout', '90s'], { encoding: 'utf8' });
    expect(r.stderr).toBe('');
    expect(r.stdout).toMatch(/added public\.later to publication syncline_snap_pub/);
    expect(r.stdout).toMatch(/later: done 5000 rows/);
    await source.query("UPDATE later SET payload = '{\"after\": true}' WHERE b < 10");
    await waitFor('later equals source', () => equal('later'), 30_000, 300);
    const list = JSON.parse(spawnSync(process.execPath, [CLI, 'snapshot', '--list', '--json', '-c', configFile], { encoding: 'utf8' }).stdout) as { table: string; status: string }[];
    expect(list.map((j) => `${j.table}:${j.status}`)).toEqual(['public.snap:done', 'public.later:done']);
  }, 120_000);

  it('verify names drifted keys (exit 1); repair re-syncs them through the normal path (exit 0)', async () => {
    const run = promisify(execFile);
    await target.query("UPDATE snap SET t = 'tampered' WHERE id = (SELECT min(id) FROM snap)");
    await target.query('DELETE FROM snap WHERE id = (SELECT max(id) FROM snap WHERE id < 100000)');
    await target.query("INSERT INTO snap VALUES (777777777, 0, 'only at the target')");
    const verify = await run(process.execPath, [CLI, 'verify', '-c', configFile, '--table', 'snap', '--json'], { encoding: 'utf8' }).catch((e: { code: number; stdout: string }) => e);
    expect((verify as { code?: number }).code).toBe(1);
    const report = JSON.parse((verify as { stdout: string }).stdout) as { drift: boolean; tables: { missing: string[]; extra: string[]; different: string[] }[] };
    expect(report.drift).toBe(true);
    expect(report.tables[0]?.extra).toEqual(['["777777777"]']);
    expect(report.tables[0]?.missing).toHaveLength(1);
    expect(report.tables[0]?.different).toHaveLength(1);
    // The running pipeline exports what verify found.
    await waitFor('sync_drift_rows{table="public.snap"} = 3', async () => (await drift()) === 3, 20_000, 250);

    const repair = await run(process.execPath, [CLI, 'repair', '-c', configFile, '--table', 'snap', '--timeout', '60s'], { encoding: 'utf8' });
    expect(repair.stdout).toMatch(/1 missing, 1 different, 1 extra -> removed 1, re-reading/);
    expect(repair.stdout).toMatch(/no drift remains/);
    // Its wait polls the snapshot jobs on one connection, one query at a time (pg deprecates overlapping queries).
    expect(repair.stderr).not.toMatch(/DeprecationWarning|already executing a query/);
    const again = await run(process.execPath, [CLI, 'verify', '-c', configFile, '--table', 'snap'], { encoding: 'utf8' });
    expect(again.stdout).toMatch(/identical/);
    await waitFor('sync_drift_rows back to 0', async () => (await drift()) === 0, 20_000, 250);
  }, 120_000);
});

for (const [label, startServer] of [
  ['PostgreSQL 15 (machine)', machinePg15],
  ['PostgreSQL 17 (embedded)', embeddedPg17],
] as const) {
  describe(`parallel snapshot chunks under concurrent writes on ${label}`, () => {
    const ROWS = 60_000;
    let server: PgServer;
    let dir: string;
    let source: pg.Client;
    let target: pg.Client;
    let stop: () => Promise<void>;

    beforeAll(async () => {
      server = await startServer();
      dir = await mkdtemp(path.join(os.tmpdir(), 'syncline-psnap-'));
      const pair = await sourceAndTarget(server, 'syncline_psnap');
      ({ source, target } = pair);
      for (const c of [source, target]) await c.query('CREATE TABLE snap (id integer PRIMARY KEY, v integer NOT NULL, t text)');
      // Even keys exist before syncline runs; odd keys are inserted inside chunks while they are read.
      await source.query(`INSERT INTO snap SELECT 2 * g, g, md5(g::text) FROM generate_series(1, ${ROWS}) g`);
      const config = parseConfig(
        `source:
  url: ${pair.sourceUrl}
  slots: [{ name: ${PSNAP_SLOT}, publication: syncline_psnap_pub, tables: [snap] }]
  snapshot_chunk_size: 300
  snapshot_parallelism: 3
stream: { path: ${path.join(dir, 'stream')}, partitions: 4 }
consumer: { group_id: psnap }
sink: { url: ${pair.targetUrl} }
monitoring: { enabled: false }
`,
        {},
      );
      const ctl = new AbortController();
      const running = runPipeline(config, 'run', await testLogger(), ctl.signal);
      running.catch(() => undefined);
      stop = async () => {
        ctl.abort();
        await running;
      };
    }, 120_000);

    afterAll(async () => {
      await stop?.();
      await source?.end();
      await target?.end();
      await server?.stop();
      if (dir) await rm(dir, { recursive: true, force: true });
    });

    it('three chunks at a time, each in its own watermark window: the target ends equal to the source', async () => {
      const job = async (): Promise<{ status: string; rows: number; chunks: number } | undefined> =>
        (await source.query("SELECT status, rows::int, chunks FROM syncline.snapshots WHERE table_name = 'snap'").catch(() => ({ rows: [] }))).rows[0];
      let i = 0;
      let duringSnapshot = 0;
      const write = async (): Promise<void> => {
        i++;
        const id = 2 * (1 + ((i * 7919) % ROWS));
        await source.query('BEGIN');
        await source.query('UPDATE snap SET v = -v, t = $2 WHERE id = $1', [id, `updated ${i}`]);
        await source.query('INSERT INTO snap VALUES ($1, $1, $2) ON CONFLICT (id) DO UPDATE SET t = EXCLUDED.t', [id + 1, `inserted ${i}`]);
        if (i % 5 === 0) await source.query('DELETE FROM snap WHERE id = $1', [2 * (1 + ((i * 104729) % ROWS))]);
        // A key change: the old key is deleted and a new one inserted, possibly in another chunk.
        if (i % 7 === 0) await source.query('UPDATE snap SET id = id + 2 * $2 + 1 WHERE id = $1 AND NOT EXISTS (SELECT 1 FROM snap WHERE id = $1 + 2 * $2 + 1)', [id, 1 + (i % 500)]);
        await source.query('COMMIT');
      };
      await waitFor('the snapshot to finish', async () => {
        await write();
        const j = await job();
        if (j?.status === 'running') duringSnapshot++;
        return j?.status === 'done';
      }, 120_000, 0);
      for (let k = 0; k < 50; k++) await write();
      await waitFor('target equals source', async () => (await compareTable(source, target, { schema: 'public', table: 'snap' })).differing === 0, 90_000, 500);
      expect(duringSnapshot).toBeGreaterThan(20);
      const j = await job();
      expect(j?.chunks).toBeGreaterThanOrEqual(ROWS / 300);
      // Each chunk is read once: no rereads without a restart.
      expect(j?.rows).toBeLessThan(ROWS + i + 300);
    }, 180_000);
  });
}
