#!/usr/bin/env node
// Apply through a poison flood, with a dead-letter queue that already holds 0, 20k, 200k…
// entries. The target has a CHECK constraint that refuses every POISON_EVERY-th row of a
// backfill, so those inserts are isolated and dead-lettered, and every later UPDATE of such a
// row follows its head into the queue (BLOCKED_BY_EARLIER): with the defaults 200k changes,
// 50k of them dead-lettered, in every batch. Each run applies the same embedded stream
// (captured once) into a fresh target whose queue was filled beforehand (other rows' entries,
// written with SQL). It prints per run the apply rate, the time to drain the stream, the CPU
// of this process and of the target's backends (on a busy machine steadier than the rates),
// and checks the outcome: rows in the target, entries added, `sync_deadletter_count`.
// Usage: npm run build && node bench/dead-letter-flood.bench.mjs [rows] [adminUrl]
// SYNCLINE_BENCH_DLQ=0,20000,200000 (default) are the pre-existing queue sizes, in order;
// SYNCLINE_BENCH_UPDATES=4 update rounds over every row (changes = rows × (1 + rounds));
// SYNCLINE_BENCH_BATCH=2000 is consumer.batch_size (smaller: more batches that dead-letter).
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { parseConfig } from '../dist/config/load.js';
import { runPipeline } from '../dist/api/run-pipeline.js';
import { PostgresDeadLetterQueue } from '../dist/dlq/postgres-dead-letter-queue.js';
import { silentLogger } from '../dist/log/logger.js';
import { Metrics } from '../dist/metrics/metrics.js';
import { counter, query, until } from './bench-helpers.mjs';

const ROWS = Number(process.argv[2] ?? 40_000);
const ADMIN = process.argv[3] ?? process.env.SYNCLINE_BENCH_PG_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
const ROUNDS = Number(process.env.SYNCLINE_BENCH_UPDATES ?? 4);
const BATCH = Number(process.env.SYNCLINE_BENCH_BATCH ?? 2000);
const POISON_EVERY = 4;
const TXN = 1000;
const N = ROWS * (1 + ROUNDS);
const POISON_ROWS = Math.floor(ROWS / POISON_EVERY);
const LETTERED = POISON_ROWS * (1 + ROUNDS);
const dir = mkdtempSync(path.join(os.tmpdir(), 'syncline-bench-'));
const urlOf = (db) => { const u = new URL(ADMIN); u.pathname = `/${db}`; return u.toString(); };
// Per-process database names: several benchmarks may share one server (DROP ... WITH (FORCE) would end another's run).
const SRC_DB = `syncline_bench_src_${process.pid}`;
const DST_DB = `syncline_bench_dst_${process.pid}`;
const SLOT = `bench_syncline_${process.pid}`;
const DDL = 'CREATE TABLE bench (id bigint PRIMARY KEY, qty integer NOT NULL, note text)';
// The target refuses the poison rows (a constraint the source does not have).
const TARGET_DDL = 'CREATE TABLE bench (id bigint PRIMARY KEY, qty integer NOT NULL CHECK (qty >= 0), note text)';

async function cleanup() {
  for (const db of [SRC_DB, DST_DB]) {
    await query(ADMIN, 'SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = $1 AND NOT active', [db]);
    await query(ADMIN, `DROP DATABASE IF EXISTS ${db} WITH (FORCE)`);
  }
}

await cleanup();
for (const db of [SRC_DB, DST_DB]) await query(ADMIN, `CREATE DATABASE ${db}`);
const SRC = urlOf(SRC_DB);
const DST = urlOf(DST_DB);
await query(SRC, DDL);
await query(SRC, 'CREATE PUBLICATION bench_pub FOR TABLE bench');
await query(SRC, "SELECT pg_create_logical_replication_slot($1, 'pgoutput')", [SLOT]);

try {
  // The workload: a backfill of ROWS rows (every POISON_EVERY-th with qty -1), then ROUNDS
  // rounds of updates of every row, in transactions of 1,000.
  const src = new pg.Client({ connectionString: SRC });
  await src.connect();
  for (let start = 1; start <= ROWS; start += TXN) {
    await src.query(`INSERT INTO bench SELECT g, CASE WHEN g % ${POISON_EVERY} = 0 THEN -1 ELSE 1 END, 'row ' || g FROM generate_series($1::bigint, $2::bigint) g`, [start, Math.min(ROWS, start + TXN - 1)]);
  }
  for (let r = 0; r < ROUNDS; r++) {
    for (let start = 1; start <= ROWS; start += TXN) {
      await src.query(`UPDATE bench SET note = 'round ${r} ' || id WHERE id BETWEEN $1 AND $2`, [start, Math.min(ROWS, start + TXN - 1)]);
    }
  }
  await src.end();

  const yaml = (group) => `source:
  url: ${SRC}
  # The slot was made before the workload (its WAL is the benchmark's): nothing to snapshot.
  snapshot: never
  slots: [{ name: ${SLOT}, publication: bench_pub, tables: [bench] }]
stream: { broker: embedded, path: ${path.join(dir, 'stream')}, partitions: 6 }
consumer: { group_id: ${group}, batch_size: ${BATCH} }
sink: { url: ${DST} }
monitoring: { enabled: false }
`;

  // syncline capture alone.
  const capMetrics = new Metrics();
  const capStop = new AbortController();
  const capture = runPipeline(parseConfig(yaml('bench'), {}), 'capture', silentLogger(), capStop.signal, capMetrics);
  await until(async () => (await counter(capMetrics, 'sync_events_published_total')) >= N);
  capStop.abort();
  await capture;

  const sizes = (process.env.SYNCLINE_BENCH_DLQ ?? '0,20000,200000').split(',').map(Number);
  for (const [run, preexisting] of sizes.entries()) {
    await query(ADMIN, `DROP DATABASE IF EXISTS ${DST_DB} WITH (FORCE)`);
    await query(ADMIN, `CREATE DATABASE ${DST_DB}`);
    await query(DST, TARGET_DDL);
    // The queue as an earlier flood left it: other rows' entries, each row a head with a real
    // error and one follower (as the DLQ writes them, of this pipeline's source).
    const dlq = new PostgresDeadLetterQueue(DST, 'syncline', SLOT);
    await dlq.prepare();
    await dlq.close();
    if (preexisting > 0) {
      await query(DST, `INSERT INTO syncline.dead_letter (source, table_name, row_key, commit_lsn, seq, change, error, error_code, attempts, stream_partition, stream_offset)
        SELECT $1, 'public.old', '["' || (g / 2) || '"]', '0/10'::pg_lsn + g, 1, NULL,
               CASE WHEN g % 2 = 0 THEN 'check constraint' ELSE 'an earlier change to this row is in the dead-letter queue' END,
               CASE WHEN g % 2 = 0 THEN 'SINK_23514' ELSE 'BLOCKED_BY_EARLIER' END, 1, 0, g
          FROM generate_series(0, $2::int - 1) g`, [SLOT, preexisting]);
      await query(DST, 'ANALYZE syncline.dead_letter');
    }
    const load = readFileSync('/proc/loadavg', 'utf8').split(' ')[0];
    const metrics = new Metrics();
    const stop = new AbortController();
    const t0 = process.hrtime.bigint();
    const cpu0 = process.cpuUsage();
    const apply = runPipeline(parseConfig(yaml(`bench_${run}`), {}), 'apply', silentLogger(), stop.signal, metrics);
    const pgCpu = new Map();
    const sample = async () => {
      const { rows: ps } = await query(ADMIN, 'SELECT pid FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()', [DST_DB]);
      for (const { pid } of ps) { try { const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' '); pgCpu.set(pid, (Number(f[11]) + Number(f[12])) / 100); } catch { /* the backend ended */ } }
    };
    let samples = 0;
    await until(async () => {
      if (samples++ % 10 === 0) await sample();
      // Drained: the last batch started, and the positions stored with the batches (one record per change) reach the end.
      if ((await counter(metrics, 'sync_events_consumed_total')) < N) return false;
      const { rows: [stored] } = await query(DST, 'SELECT coalesce(sum(next_offset), 0)::int AS n FROM syncline.positions WHERE group_id = $1', [`bench_${run}`]);
      return stored.n >= N;
    }, 3_600_000);
    await sample();
    const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
    const cpu = process.cpuUsage(cpu0);
    const depthMetric = await counter(metrics, 'sync_deadletter_count');
    stop.abort();
    await apply;
    const rows = (await query(DST, 'SELECT count(*)::int AS n FROM bench')).rows[0].n;
    const entries = (await query(DST, 'SELECT count(*)::int AS n FROM syncline.dead_letter')).rows[0].n;
    console.log(JSON.stringify({
      bench: 'dead-letter-flood', changes: N, batch: BATCH, dead_lettered: LETTERED, dlq_before: preexisting, load,
      apply: Math.round(N / seconds), drain_s: +seconds.toFixed(1),
      node_cpu_s: +((cpu.user + cpu.system) / 1e6).toFixed(1), pg_cpu_s: +[...pgCpu.values()].reduce((a, b) => a + b, 0).toFixed(1),
      ok: rows === ROWS - POISON_ROWS && entries === preexisting + LETTERED && depthMetric === entries,
      rows, entries, sync_deadletter_count: depthMetric,
    }));
  }
} finally {
  rmSync(dir, { recursive: true, force: true });
  // Leave no slot or database behind: an idle slot retains WAL on the server.
  await cleanup();
}
