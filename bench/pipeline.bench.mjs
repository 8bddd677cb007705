#!/usr/bin/env node
// End-to-end throughput on a real PostgreSQL, each stage measured alone and compared in the
// same run with its natural ceiling:
//   capture  (slot -> embedded stream, durable)  vs  pg_recvlogical draining the same WAL
//   apply    (stream -> PostgreSQL target)       vs  a server-side version-gated upsert
// Usage: npm run build && node bench/pipeline.bench.mjs [changes] [adminUrl]
// SYNCLINE_BENCH_BROKER=kafka|nats runs the same through a real broker (Kafka on
// 127.0.0.1:9092 via scripts/kafka.sh start; NATS JetStream on 127.0.0.1:4222).
// SYNCLINE_BENCH_BROKER=all runs embedded, kafka and nats back to back (one process each) and
// prints their lines, then one line comparing the brokers with the embedded stream of the same run.
// SYNCLINE_BENCH_CONSISTENCY=transactional applies whole source transactions (sink.consistency).
// SYNCLINE_BENCH_CPU_PROFILE=<dir> writes capture.cpuprofile and apply.cpuprofile there (each stage alone).
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { Session } from 'node:inspector/promises';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { parseConfig } from '../dist/config/load.js';
import { runPipeline } from '../dist/api/run-pipeline.js';
import { silentLogger } from '../dist/log/logger.js';
import { Metrics } from '../dist/metrics/metrics.js';
import { counter, dropBrokerTopic, query, until } from './bench-helpers.mjs';

const N = Number(process.argv[2] ?? 200_000);
const ADMIN = process.argv[3] ?? process.env.SYNCLINE_BENCH_PG_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
const TXN = 1000;
const BROKER = process.env.SYNCLINE_BENCH_BROKER ?? 'embedded';
const CONSISTENCY = process.env.SYNCLINE_BENCH_CONSISTENCY ?? 'eventual';
const PROFILE_DIR = process.env.SYNCLINE_BENCH_CPU_PROFILE;
const loadavg = () => readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ');

if (BROKER === 'all') {
  const runs = {};
  for (const broker of ['embedded', 'kafka', 'nats']) {
    const out = execFileSync(process.execPath, [...process.execArgv, process.argv[1], ...process.argv.slice(2)], {
      env: { ...process.env, SYNCLINE_BENCH_BROKER: broker },
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    runs[broker] = JSON.parse(out.trim().split('\n').pop());
    console.log(JSON.stringify(runs[broker]));
  }
  const ratio = (broker, field) => +(runs[broker][field] / runs.embedded[field]).toFixed(2);
  console.log(JSON.stringify({
    bench: 'pipeline-brokers',
    changes: N,
    kafka_vs_embedded: { capture: ratio('kafka', 'capture_changes_per_s'), apply: ratio('kafka', 'apply_changes_per_s') },
    nats_vs_embedded: { capture: ratio('nats', 'capture_changes_per_s'), apply: ratio('nats', 'apply_changes_per_s') },
    loadavg: loadavg(),
  }));
  process.exit(0);
}

const dir = mkdtempSync(path.join(os.tmpdir(), 'syncline-bench-'));
const urlOf = (db) => { const u = new URL(ADMIN); u.pathname = `/${db}`; return u.toString(); };
// Per-process database names: several benchmarks may share one server (DROP ... WITH (FORCE) would end another's run).
const SRC_DB = `syncline_bench_src_${process.pid}`;
const DST_DB = `syncline_bench_dst_${process.pid}`;
const RECV_SLOT = `bench_recvlogical_${process.pid}`;
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
await query(SRC, "SELECT pg_create_logical_replication_slot($1, 'pgoutput')", [RECV_SLOT]);
await query(SRC, "SELECT pg_create_logical_replication_slot($1, 'pgoutput')", [SYNCLINE_SLOT]);

// The workload: N inserts of ~200-byte rows in transactions of 1,000.
const src = new pg.Client({ connectionString: SRC });
await src.connect();
for (let start = 1; start <= N; start += TXN) {
  await src.query(
    `INSERT INTO bench SELECT g, 'customer-' || g || repeat('x', 90), g % 10000 + 0.25, 'shipped', g % 17, now()
       FROM generate_series($1::bigint, $2::bigint) g`, [start, Math.min(N, start + TXN - 1)]);
}
const endLsn = (await src.query('SELECT pg_current_wal_lsn()::text AS l')).rows[0].l;
await src.end();

// Ceiling 1: the walsender draining the slot into /dev/null.
const u = new URL(SRC);
let t = process.hrtime.bigint();
execFileSync('pg_recvlogical', ['-h', u.hostname, '-p', u.port || '5432', '-U', decodeURIComponent(u.username || 'postgres'), '-d', SRC_DB,
  '--slot', RECV_SLOT, '--start', '--endpos', endLsn, '-o', 'proto_version=1', '-o', 'publication_names=bench_pub', '-f', '/dev/null', '--no-loop']);
const recvSeconds = Number(process.hrtime.bigint() - t) / 1e9;

const topic = `syncline-bench-${process.pid}-${Date.now().toString(36)}`;
const config = parseConfig(`source:
  url: ${SRC}
  # The slot was made before the workload (its WAL is the benchmark's): nothing to snapshot.
  snapshot: never
  slots: [{ name: ${SYNCLINE_SLOT}, publication: bench_pub, tables: [bench] }]
stream: ${streamConfig()}
consumer: { group_id: bench }
sink: { url: ${DST}, consistency: ${CONSISTENCY} }
monitoring: { enabled: false }
`, {});

function streamConfig() {
  switch (BROKER) {
    case 'kafka': return `{ broker: kafka, brokers: ['127.0.0.1:9092'], topic: ${topic}, partitions: 6 }`;
    case 'nats': return `{ broker: nats, url: 'nats://127.0.0.1:4222', topic: ${topic}, partitions: 6 }`;
    default: return `{ broker: embedded, path: ${path.join(dir, 'stream')}, partitions: 6 }`;
  }
}

/** Profiles one stage in-process, so the profile holds that stage alone. */
async function profiled(name, stage) {
  if (!PROFILE_DIR) return stage();
  const session = new Session();
  session.connect();
  await session.post('Profiler.enable');
  await session.post('Profiler.start');
  try {
    return await stage();
  } finally {
    const { profile } = await session.post('Profiler.stop');
    writeFileSync(path.join(PROFILE_DIR, `${name}.cpuprofile`), JSON.stringify(profile));
    session.disconnect();
  }
}

// syncline capture alone.
const capMetrics = new Metrics();
const capStop = new AbortController();
t = process.hrtime.bigint();
const cpu0 = process.cpuUsage();
const capture = runPipeline(config, 'capture', silentLogger(), capStop.signal, capMetrics);
await profiled('capture', () => until(async () => (await counter(capMetrics, 'sync_events_published_total')) >= N));
const captureSeconds = Number(process.hrtime.bigint() - t) / 1e9;
const captureCpu = process.cpuUsage(cpu0);
capStop.abort();
await capture;

// syncline apply alone.
const applyMetrics = new Metrics();
const applyStop = new AbortController();
t = process.hrtime.bigint();
const applyCpu0 = process.cpuUsage();
const apply = runPipeline(config, 'apply', silentLogger(), applyStop.signal, applyMetrics);
await profiled('apply', () => until(async () => (await counter(applyMetrics, 'sync_events_consumed_total')) >= N && (await counter(applyMetrics, 'sync_events_applied_total')) >= N));
const applySeconds = Number(process.hrtime.bigint() - t) / 1e9;
const applyCpu = process.cpuUsage(applyCpu0);
const applyBatches = ((await applyMetrics.registry.getSingleMetric('sync_apply_batch_duration_seconds')?.get())?.values ?? [])
  .filter((v) => v.metricName?.endsWith('_count')).reduce((s, v) => s + v.value, 0);
applyStop.abort();
await apply;
const rows = (await query(DST, 'SELECT count(*)::int AS n FROM bench')).rows[0].n;

// Ceiling 2: the same rows upserted server-side with the same version gate, one statement per 1,000.
await query(DST, `CREATE TABLE bench_upsert (LIKE bench INCLUDING ALL)`);
const dst = new pg.Client({ connectionString: DST });
await dst.connect();
t = process.hrtime.bigint();
for (let start = 1; start <= N; start += TXN) {
  await dst.query(
    `INSERT INTO bench_upsert AS t SELECT g, 'customer-' || g || repeat('x', 90), g % 10000 + 0.25, 'shipped', g % 17, now(), '0/1'::pg_lsn, g::int
       FROM generate_series($1::bigint, $2::bigint) g
     ON CONFLICT (id) DO UPDATE SET customer = EXCLUDED.customer, amount = EXCLUDED.amount, status = EXCLUDED.status, qty = EXCLUDED.qty,
       created_at = EXCLUDED.created_at, _syncline_lsn = EXCLUDED._syncline_lsn, _syncline_seq = EXCLUDED._syncline_seq
     WHERE (t._syncline_lsn, t._syncline_seq) < (EXCLUDED._syncline_lsn, EXCLUDED._syncline_seq)`, [start, Math.min(N, start + TXN - 1)]);
}
const upsertSeconds = Number(process.hrtime.bigint() - t) / 1e9;
await dst.end();

const rate = (s) => Math.round(N / s);
console.log(JSON.stringify({
  bench: 'pipeline',
  broker: BROKER,
  consistency: CONSISTENCY,
  changes: N,
  target_rows: rows,
  pg_recvlogical_changes_per_s: rate(recvSeconds),
  capture_changes_per_s: rate(captureSeconds),
  capture_vs_recvlogical: +(recvSeconds / captureSeconds).toFixed(2),
  capture_cpu_us_per_change: +((captureCpu.user + captureCpu.system) / N).toFixed(2),
  apply_changes_per_s: rate(applySeconds),
  apply_cpu_us_per_change: +((applyCpu.user + applyCpu.system) / N).toFixed(2),
  apply_batches: applyBatches,
  server_side_upsert_rows_per_s: rate(upsertSeconds),
  apply_vs_server_upsert: +(upsertSeconds / applySeconds).toFixed(2),
  peak_rss_mib: Math.round(process.resourceUsage().maxRSS / 1024),
  loadavg: loadavg(),
}));
rmSync(dir, { recursive: true, force: true });
await dropBrokerTopic(BROKER, topic, 6);
// Leave no slot behind: an idle slot retains WAL on the server.
for (const db of [SRC_DB, DST_DB]) {
  await query(ADMIN, 'SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = $1 AND NOT active', [db]);
  await query(ADMIN, `DROP DATABASE IF EXISTS ${db} WITH (FORCE)`);
}
