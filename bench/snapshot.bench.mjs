#!/usr/bin/env node
// Initial snapshot throughput: a table of N rows (~200 B each) read by `syncline capture`
// into the embedded stream (fdatasync'd), with source.snapshot_parallelism 1 and 2 (or
// SYNCLINE_BENCH_PARALLELISM=1,2,4), compared in the same run with its ceiling: the server
// writing the same table with `COPY ... TO STDOUT` to /dev/null (psql).
// Usage: npm run build && node bench/snapshot.bench.mjs [rows] [adminUrl]
// SYNCLINE_BENCH_REPEAT=n repeats each setting (alternating) on this noisy machine;
// SYNCLINE_BENCH_CHUNK sets source.snapshot_chunk_size (default 10000);
// SYNCLINE_BENCH_DB names the database and slot (default syncline_snapbench).
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { parseConfig } from '../dist/config/load.js';
import { runPipeline } from '../dist/api/run-pipeline.js';
import { silentLogger } from '../dist/log/logger.js';
import { Metrics } from '../dist/metrics/metrics.js';

const N = Number(process.argv[2] ?? 1_000_000);
const ADMIN = process.argv[3] ?? process.env.SYNCLINE_BENCH_PG_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
const SETTINGS = (process.env.SYNCLINE_BENCH_PARALLELISM ?? '1,2').split(',').map(Number);
const REPEAT = Number(process.env.SYNCLINE_BENCH_REPEAT ?? 1);
const CHUNK = Number(process.env.SYNCLINE_BENCH_CHUNK ?? 10_000);
const DB = process.env.SYNCLINE_BENCH_DB ?? 'syncline_snapbench';
const urlOf = (db) => { const u = new URL(ADMIN); u.pathname = `/${db}`; return u.toString(); };
const SRC = urlOf(DB);

async function query(url, sql, params) {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  try { return await c.query(sql, params); } finally { await c.end(); }
}

async function counter(metrics, name) {
  const m = await metrics.registry.getSingleMetric(name)?.get();
  return (m?.values ?? []).reduce((s, v) => s + v.value, 0);
}

await query(ADMIN, 'SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = $1', [DB]);
await query(ADMIN, `DROP DATABASE IF EXISTS ${DB} WITH (FORCE)`);
await query(ADMIN, `CREATE DATABASE ${DB}`);
await query(SRC, 'CREATE TABLE bench (id bigint PRIMARY KEY, customer text NOT NULL, amount numeric(12,2), status text, qty integer, created_at timestamptz NOT NULL)');
await query(SRC, `INSERT INTO bench SELECT g, 'customer-' || g || repeat('x', 90), g % 10000 + 0.25, 'shipped', g % 17, now() FROM generate_series(1, ${N}) g`);
// Index-only scans for the chunk boundaries, as on a table autovacuum has visited.
await query(SRC, 'VACUUM ANALYZE bench');

// Ceiling: the server producing the whole table as text, nothing else.
const u = new URL(SRC);
let t = process.hrtime.bigint();
const copy = spawnSync('psql', ['-h', u.hostname, '-p', u.port || '5432', '-U', decodeURIComponent(u.username || 'postgres'), '-d', DB, '-c', 'COPY bench TO STDOUT'], { stdio: ['ignore', 'ignore', 'inherit'] });
if (copy.status !== 0) throw new Error('psql COPY failed');
const copySeconds = Number(process.hrtime.bigint() - t) / 1e9;

async function snapshot(parallelism) {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'syncline-snapbench-'));
  await query(ADMIN, 'SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = $1', [DB]);
  await query(SRC, 'DROP SCHEMA IF EXISTS syncline CASCADE');
  const config = parseConfig(`source:
  url: ${SRC}
  slots: [{ name: ${DB}, publication: ${DB}_pub, tables: [bench] }]
  snapshot: initial
  snapshot_chunk_size: ${CHUNK}
  snapshot_parallelism: ${parallelism}
stream: { broker: embedded, path: ${path.join(dir, 'stream')}, partitions: 6 }
monitoring: { enabled: false }
`, {});
  const metrics = new Metrics();
  const stop = new AbortController();
  const cpu0 = process.cpuUsage();
  const running = runPipeline(config, 'capture', silentLogger(), stop.signal, metrics);
  running.catch(() => undefined);
  let job;
  const deadline = Date.now() + 1_800_000;
  for (;;) {
    job = (await query(SRC, "SELECT status, rows::bigint AS rows, chunks, extract(epoch FROM finished_at - started_at)::float8 AS seconds FROM syncline.snapshots").catch(() => ({ rows: [] }))).rows[0];
    if (job && job.status !== 'pending' && job.status !== 'running') break;
    if (Date.now() > deadline) throw new Error('benchmark timed out');
    await new Promise((r) => setTimeout(r, 50));
  }
  const cpu = process.cpuUsage(cpu0);
  const published = await counter(metrics, 'sync_events_published_total');
  stop.abort();
  await running;
  rmSync(dir, { recursive: true, force: true });
  if (job.status !== 'done') throw new Error(`snapshot ${job.status}`);
  if (published < N) throw new Error(`only ${published} of ${N} rows published`);
  return {
    parallelism,
    rows: Number(job.rows),
    chunks: job.chunks,
    seconds: Number(job.seconds.toFixed(2)),
    rows_per_s: Math.round(Number(job.rows) / job.seconds),
    node_cpu_us_per_row: Number(((cpu.user + cpu.system) / Number(job.rows)).toFixed(2)),
  };
}

const runs = [];
for (let r = 0; r < REPEAT; r++) for (const p of SETTINGS) runs.push(await snapshot(p));
const best = Object.fromEntries(SETTINGS.map((p) => [p, Math.max(...runs.filter((x) => x.parallelism === p).map((x) => x.rows_per_s))]));
console.log(JSON.stringify({
  rows: N,
  chunk_size: CHUNK,
  copy_to_stdout_rows_per_s: Math.round(N / copySeconds),
  runs,
  best_rows_per_s: best,
  ...(best[1] && best[2] ? { speedup_2_vs_1: Number((best[2] / best[1]).toFixed(2)) } : {}),
}, null, 2));

await query(ADMIN, 'SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = $1', [DB]);
await query(ADMIN, `DROP DATABASE IF EXISTS ${DB} WITH (FORCE)`);
