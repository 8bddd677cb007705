#!/usr/bin/env node
// Capture and apply rates per stream.format, in the same run over the same WAL: one workload,
// one slot per format (created before it), each format captured alone then applied alone
// into its own target. json is today's envelope; avro (and json_schema, protobuf) go through
// the schema codec: the embedded stream with its local schema file, or with
// SYNCLINE_BENCH_BROKER=kafka Kafka (127.0.0.1:9092) and the registry at
// SYNCLINE_BENCH_REGISTRY_URL (default http://127.0.0.1:8081/apis/ccompat/v7).
// Usage: npm run build && node bench/formats.bench.mjs [changes] [formats, default json,avro]
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { parseConfig } from '../dist/config/load.js';
import { runPipeline } from '../dist/api/run-pipeline.js';
import { silentLogger } from '../dist/log/logger.js';
import { Metrics } from '../dist/metrics/metrics.js';
import { counter, query, until } from './bench-helpers.mjs';

const N = Number(process.argv[2] ?? 100_000);
const FORMATS = (process.argv[3] ?? 'json,avro').split(',');
const ADMIN = process.env.SYNCLINE_BENCH_PG_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
const BROKER = process.env.SYNCLINE_BENCH_BROKER ?? 'embedded';
const REGISTRY = process.env.SYNCLINE_BENCH_REGISTRY_URL ?? 'http://127.0.0.1:8081/apis/ccompat/v7';
const TXN = 1000;
const RUN = `${process.pid}_${Date.now().toString(36)}`;
const dir = mkdtempSync(path.join(os.tmpdir(), 'syncline-bench-formats-'));
const urlOf = (db) => { const u = new URL(ADMIN); u.pathname = `/${db}`; return u.toString(); };
const DDL = `CREATE TABLE bench (id bigint PRIMARY KEY, customer text NOT NULL, amount numeric(12,2), status text, qty integer, created_at timestamptz NOT NULL)`;
const SRC_DB = `syncline_bench_fmt_src_${RUN}`;
const dstDb = (f) => `syncline_bench_fmt_${f}_${RUN}`;

for (const db of [SRC_DB, ...FORMATS.map(dstDb)]) {
  await query(ADMIN, `CREATE DATABASE ${db}`);
  await query(urlOf(db), DDL);
}
const SRC = urlOf(SRC_DB);
await query(SRC, 'CREATE PUBLICATION bench_pub FOR TABLE bench');
for (const f of FORMATS) await query(SRC, `SELECT pg_create_logical_replication_slot('bench_${f}', 'pgoutput')`);

const src = new pg.Client({ connectionString: SRC });
await src.connect();
for (let start = 1; start <= N; start += TXN) {
  await src.query(
    `INSERT INTO bench SELECT g, 'customer-' || g || repeat('x', 90), g % 10000 + 0.25, 'shipped', g % 17, now()
       FROM generate_series($1::bigint, $2::bigint) g`, [start, Math.min(N, start + TXN - 1)]);
}
await src.end();

const results = [];
try {
  for (const format of FORMATS) {
    const topic = `syncline-bench-fmt-${format}-${RUN}`;
    const stream = BROKER === 'kafka'
      ? `{ broker: kafka, brokers: ['127.0.0.1:9092'], topic: ${topic}, partitions: 6, format: ${format}${format === 'json' ? '' : `, schema_registry: true, schema_registry_url: '${REGISTRY}'`} }`
      : `{ broker: embedded, path: ${path.join(dir, format)}, partitions: 6, format: ${format} }`;
    const config = parseConfig(`source:
  url: ${SRC}
  # The slot was made before the workload (its WAL is the benchmark's): nothing to snapshot.
  snapshot: never
  slots: [{ name: bench_${format}, publication: bench_pub, tables: [bench] }]
stream: ${stream}
consumer: { group_id: bench }
sink: { url: ${urlOf(dstDb(format))} }
monitoring: { enabled: false }
`, {});
    const capMetrics = new Metrics();
    const capStop = new AbortController();
    let t = process.hrtime.bigint();
    let cpu = process.cpuUsage();
    const capture = runPipeline(config, 'capture', silentLogger(), capStop.signal, capMetrics);
    await until(async () => (await counter(capMetrics, 'sync_events_published_total')) >= N);
    const captureSeconds = Number(process.hrtime.bigint() - t) / 1e9;
    const captureCpu = process.cpuUsage(cpu);
    capStop.abort();
    await capture;

    const applyMetrics = new Metrics();
    const applyStop = new AbortController();
    t = process.hrtime.bigint();
    cpu = process.cpuUsage();
    const apply = runPipeline(config, 'apply', silentLogger(), applyStop.signal, applyMetrics);
    await until(async () => (await counter(applyMetrics, 'sync_events_applied_total')) >= N);
    const applySeconds = Number(process.hrtime.bigint() - t) / 1e9;
    const applyCpu = process.cpuUsage(cpu);
    applyStop.abort();
    await apply;
    const rows = (await query(urlOf(dstDb(format)), 'SELECT count(*)::int AS n FROM bench')).rows[0].n;
    results.push({
      format,
      target_rows: rows,
      capture_changes_per_s: Math.round(N / captureSeconds),
      capture_cpu_us_per_change: +((captureCpu.user + captureCpu.system) / N).toFixed(2),
      apply_changes_per_s: Math.round(N / applySeconds),
      apply_cpu_us_per_change: +((applyCpu.user + applyCpu.system) / N).toFixed(2),
    });
  }
  console.log(JSON.stringify({ bench: 'formats', broker: BROKER, changes: N, results }));
} finally {
  rmSync(dir, { recursive: true, force: true });
  await query(ADMIN, 'SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = $1 AND NOT active', [SRC_DB]);
  for (const db of [SRC_DB, ...FORMATS.map(dstDb)]) await query(ADMIN, `DROP DATABASE IF EXISTS ${db} WITH (FORCE)`);
}
