#!/usr/bin/env node
// Apply alone, once per `sink.apply_lanes` value, each into a fresh target from the same
// embedded stream (captured once), with the ceiling beside each run: the same rows upserted
// server-side with the same version gate. Besides the rates it prints the CPU per change of
// this process (apply) and of the target's backends, and the ceiling's backend CPU per row:
// on a busy machine the CPU figures are steadier than the rates.
// Usage: npm run build && node bench/apply-lanes.bench.mjs [changes] [adminUrl]
// SYNCLINE_BENCH_LANES=1,2,1,2 (default) are the runs, in order.
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { parseConfig } from '../dist/config/load.js';
import { runPipeline } from '../dist/api/run-pipeline.js';
import { silentLogger } from '../dist/log/logger.js';
import { Metrics } from '../dist/metrics/metrics.js';
import { counter, query, until } from './bench-helpers.mjs';

const N = Number(process.argv[2] ?? 200_000);
const ADMIN = process.argv[3] ?? process.env.SYNCLINE_BENCH_PG_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
const TXN = 1000;
const dir = mkdtempSync(path.join(os.tmpdir(), 'syncline-bench-'));
const urlOf = (db) => { const u = new URL(ADMIN); u.pathname = `/${db}`; return u.toString(); };
// Per-process database names: several benchmarks may share one server (DROP ... WITH (FORCE) would end another's run).
const SRC_DB = `syncline_bench_src_${process.pid}`;
const DST_DB = `syncline_bench_dst_${process.pid}`;
const SYNCLINE_SLOT = `bench_syncline_${process.pid}`;
const DDL = `CREATE TABLE bench (id bigint PRIMARY KEY, customer text NOT NULL, amount numeric(12,2), status text, qty integer, created_at timestamptz NOT NULL)`;

for (const db of [SRC_DB, DST_DB]) {
  await query(ADMIN, "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = $1", [db]);
  await query(ADMIN, `DROP DATABASE IF EXISTS ${db} WITH (FORCE)`);
  await query(ADMIN, `CREATE DATABASE ${db}`);
  await query(urlOf(db), DDL);
}
const SRC = urlOf(SRC_DB);
const DST = urlOf(DST_DB);
await query(SRC, 'CREATE PUBLICATION bench_pub FOR TABLE bench');
await query(SRC, "SELECT pg_create_logical_replication_slot($1, 'pgoutput')", [SYNCLINE_SLOT]);

// The workload: N inserts of ~200-byte rows in transactions of 1,000.
const src = new pg.Client({ connectionString: SRC });
await src.connect();
for (let start = 1; start <= N; start += TXN) {
  await src.query(
    `INSERT INTO bench SELECT g, 'customer-' || g || repeat('x', 90), g % 10000 + 0.25, 'shipped', g % 17, now()
       FROM generate_series($1::bigint, $2::bigint) g`, [start, Math.min(N, start + TXN - 1)]);
}
await src.end();

const streamCfg = streamConfig();
const config = parseConfig(`source:
  url: ${SRC}
  # The slot was made before the workload (its WAL is the benchmark's): nothing to snapshot.
  snapshot: never
  slots: [{ name: ${SYNCLINE_SLOT}, publication: bench_pub, tables: [bench] }]
stream: ${streamCfg}
consumer: { group_id: bench }
sink: { url: ${DST} }
monitoring: { enabled: false }
`, {});

function streamConfig() {
  return `{ broker: embedded, path: ${path.join(dir, 'stream')}, partitions: 6 }`;
}

// syncline capture alone.
const capMetrics = new Metrics();
const capStop = new AbortController();
const capture = runPipeline(config, 'capture', silentLogger(), capStop.signal, capMetrics);
await until(async () => (await counter(capMetrics, 'sync_events_published_total')) >= N);
capStop.abort();
await capture;

// A/B: apply with several lane counts, each into a fresh target, with the ceiling beside each.
const variants = (process.env.SYNCLINE_BENCH_LANES ?? '1,2,1,2').split(',').map(Number);
for (const lanes of variants) {
  await query(ADMIN, `DROP DATABASE IF EXISTS ${DST_DB} WITH (FORCE)`);
  await query(ADMIN, `CREATE DATABASE ${DST_DB}`);
  await query(DST, DDL);
  const cfg = parseConfig(`source:
  url: ${SRC}
  # The slot was made before the workload (its WAL is the benchmark's): nothing to snapshot.
  snapshot: never
  slots: [{ name: ${SYNCLINE_SLOT}, publication: bench_pub, tables: [bench] }]
stream: ${streamCfg}
consumer: { group_id: bench }
sink: { url: ${DST}, apply_lanes: ${lanes} }
monitoring: { enabled: false }
`, {});
  const load = readFileSync('/proc/loadavg', 'utf8').split(' ')[0];
  const applyMetrics = new Metrics();
  const applyStop = new AbortController();
  let t0 = process.hrtime.bigint();
  const cpu0 = process.cpuUsage();
  const apply = runPipeline(cfg, 'apply', silentLogger(), applyStop.signal, applyMetrics);
  const pgCpu = new Map();
  const tck = 100;
  const sample = async () => {
    const { rows: ps } = await query(ADMIN, 'SELECT pid FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()', [DST_DB]);
    for (const { pid } of ps) { try { const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' '); pgCpu.set(pid, (Number(f[11]) + Number(f[12])) / tck); } catch { /* the backend ended */ } }
  };
  await until(async () => { await sample(); return (await counter(applyMetrics, 'sync_events_consumed_total')) >= N && (await counter(applyMetrics, 'sync_events_applied_total')) >= N; });
  await sample();
  const applyPgCpu = [...pgCpu.values()].reduce((a, b) => a + b, 0);
  const applySeconds = Number(process.hrtime.bigint() - t0) / 1e9;
  const cpu = process.cpuUsage(cpu0);
  applyStop.abort();
  await apply;
  const rows = (await query(DST, 'SELECT count(*)::int AS n FROM bench')).rows[0].n;
  await query(DST, `CREATE TABLE bench_upsert (LIKE bench INCLUDING ALL)`);
  const dst = new pg.Client({ connectionString: DST });
  await dst.connect();
  const dpid = (await dst.query('SELECT pg_backend_pid() AS p')).rows[0].p;
  const cpuOf = () => { const f = readFileSync(`/proc/${dpid}/stat`, 'utf8').split(') ')[1].split(' '); return (Number(f[11]) + Number(f[12])) / 100; };
  const c0 = cpuOf();
  t0 = process.hrtime.bigint();
  for (let start = 1; start <= N; start += TXN) {
    await dst.query(
      `INSERT INTO bench_upsert AS t SELECT g, 'customer-' || g || repeat('x', 90), g % 10000 + 0.25, 'shipped', g % 17, now(), '0/1'::pg_lsn, g::int
         FROM generate_series($1::bigint, $2::bigint) g
       ON CONFLICT (id) DO UPDATE SET customer = EXCLUDED.customer, amount = EXCLUDED.amount, status = EXCLUDED.status, qty = EXCLUDED.qty,
         created_at = EXCLUDED.created_at, _syncline_lsn = EXCLUDED._syncline_lsn, _syncline_seq = EXCLUDED._syncline_seq
       WHERE (t._syncline_lsn, t._syncline_seq) < (EXCLUDED._syncline_lsn, EXCLUDED._syncline_seq)`, [start, Math.min(N, start + TXN - 1)]);
  }
  const upsertSeconds = Number(process.hrtime.bigint() - t0) / 1e9;
  const ceilCpu = cpuOf() - c0;
  await dst.end();
  console.log(JSON.stringify({ bench: 'apply-lanes', changes: N, lanes, load, rows, apply: Math.round(N / applySeconds), ceiling: Math.round(N / upsertSeconds), ratio: +(upsertSeconds / applySeconds).toFixed(2), node_cpu_us_per_change: +((cpu.user + cpu.system) / N).toFixed(1), pg_cpu_us_per_change: +(applyPgCpu * 1e6 / N).toFixed(1), ceiling_pg_cpu_us_per_row: +(ceilCpu * 1e6 / N).toFixed(1) }));
}
rmSync(dir, { recursive: true, force: true });
// Leave no slot behind: an idle slot retains WAL on the server.
for (const db of [SRC_DB, DST_DB]) {
  await query(ADMIN, 'SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = $1 AND NOT active', [db]);
  await query(ADMIN, `DROP DATABASE IF EXISTS ${db} WITH (FORCE)`);
}
