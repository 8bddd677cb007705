#!/usr/bin/env node
// One transaction of N rows (default 1,000,000) through `syncline run` as its own process:
// prints the time from commit to all rows at the target and the process's peak RSS (VmHWM),
// and where that time goes (from the process's metrics): until the first change is built
// (the server still decoding and streaming the transaction), until all are published
// (capture replaying the spill file), and how many rows apply wrote meanwhile.
// The server streams the transaction before its commit (protocol >= 2); capture spills it
// to disk, so memory stays bounded whatever the transaction's size.
// Usage: npm run build && node bench/large-transaction.bench.mjs [rows] [adminUrl]
// SYNCLINE_BENCH_TXN=1000 inserts the same rows in transactions of that many rows instead (the
// comparison for the goal: one transaction within 2x of 1k-row ones); `start_to_applied_seconds`
// (from the first INSERT) compares the two, commit_to_applied is from the last commit.
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { freePort } from '../dist/demo/ports.js';

const N = Number(process.argv[2] ?? 1_000_000);
const ADMIN = process.argv[3] ?? process.env.SYNCLINE_BENCH_PG_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
const dir = mkdtempSync(path.join(os.tmpdir(), 'syncline-bigtx-'));
const urlOf = (db) => { const u = new URL(ADMIN); u.pathname = `/${db}`; return u.toString(); };
async function query(url, sql, params) {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  try { return await c.query(sql, params); } finally { await c.end(); }
}
const TXN = Number(process.env.SYNCLINE_BENCH_TXN ?? N);
// Per-process names: several benchmarks may share one server.
const DBS = [`syncline_bigtx_src_${process.pid}`, `syncline_bigtx_dst_${process.pid}`];
const SLOT = `syncline_bigtx_${process.pid}`;
for (const db of DBS) {
  await query(ADMIN, 'SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = $1 AND NOT active', [db]);
  await query(ADMIN, `DROP DATABASE IF EXISTS ${db} WITH (FORCE)`);
  await query(ADMIN, `CREATE DATABASE ${db}`);
  await query(urlOf(db), 'CREATE TABLE big (id bigint PRIMARY KEY, customer text NOT NULL, amount numeric(12,2), status text)');
}
const config = path.join(dir, 'sync.yaml');
const metricsPort = await freePort();
writeFileSync(config, `source:
  url: ${urlOf(DBS[0])}
  slots: [{ name: ${SLOT}, publication: syncline_bigtx_pub, tables: [big] }]
  spill_dir: ${path.join(dir, 'spill')}
stream: { path: ${path.join(dir, 'stream')}, partitions: 6 }
consumer: { group_id: bigtx }
sink: { url: ${urlOf(DBS[1])}, apply_lanes: ${process.env.SYNCLINE_BENCH_LANES ?? 2} }
monitoring: { enabled: true, port: ${metricsPort} }
`);
const child = spawn(process.execPath, ['dist/cli/main.js', 'run', '-c', config], { stdio: ['ignore', 'ignore', 'inherit'], env: { ...process.env, SYNCLINE_LOG_LEVEL: 'warn' } });
const peakRssMiB = () => {
  const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${child.pid}/status`, 'utf8'));
  return m ? Math.round(Number(m[1]) / 1024) : -1;
};
const until = async (check) => { for (;;) { if (await check()) return; await new Promise((r) => setTimeout(r, 200)); } };
await until(async () => (await query(urlOf(DBS[0]), 'SELECT count(*)::int AS n FROM pg_replication_slots WHERE slot_name = $1 AND active', [SLOT])).rows[0].n === 1);
const rssIdle = peakRssMiB();

const t0 = Date.now();
{
  const src = new pg.Client({ connectionString: urlOf(DBS[0]) });
  await src.connect();
  for (let start = 1; start <= N; start += TXN) {
    await src.query(`INSERT INTO big SELECT g, 'customer-' || g || repeat('x', 60), g % 10000 + 0.25, 'shipped' FROM generate_series($1::bigint, $2::bigint) g`, [start, Math.min(N, start + TXN - 1)]);
  }
  await src.end();
}
const committed = Date.now();
const counters = async () => {
  const text = await fetch(`http://127.0.0.1:${metricsPort}/metrics`).then((r) => r.text(), () => '');
  const sum = (name) => text.split('\n').filter((l) => l.startsWith(name)).reduce((s, l) => s + Number(l.slice(l.lastIndexOf(' ') + 1)), 0);
  return { captured: sum('sync_events_captured_total'), published: sum('sync_events_published_total'), applied: sum('sync_events_applied_total') };
};
const phases = {};
// Done when the sink's positions, committed in the same transaction as the rows, cover all N
// records, and everything published: a capture that restarted republishes what it had not
// confirmed, so the stream may hold more than N. (Polling count(*) of the growing target
// every 200 ms took a core share from apply on a 2-core machine and added ~10 % to the
// measured time.)
const applied = async (published) => {
  const r = await query(urlOf(DBS[1]), "SELECT coalesce(sum(next_offset), 0)::text AS n FROM syncline.positions WHERE group_id = 'bigtx'").catch(() => undefined);
  return r !== undefined && BigInt(r.rows[0].n) >= BigInt(Math.max(N, published));
};
await until(async () => {
  const m = await counters();
  const at = (Date.now() - committed) / 1000;
  if (phases.first_change_built_seconds === undefined && m.captured > 0) phases.first_change_built_seconds = at;
  if (phases.all_published_seconds === undefined && m.published >= N) Object.assign(phases, { all_published_seconds: at, rows_applied_by_then: m.applied });
  return applied(m.published);
});
const done = Date.now();
const rowsAtDone = (await query(urlOf(DBS[1]), 'SELECT count(*)::int AS n FROM big')).rows[0].n;
const countersAtDone = await counters();
// Diagnostics: the rows should all be there once the positions cover N records.
for (let i = 0; i < 100 && (await query(urlOf(DBS[1]), 'SELECT count(*)::int AS n FROM big')).rows[0].n < N; i++) await new Promise((r) => setTimeout(r, 300));
const targetRows = (await query(urlOf(DBS[1]), 'SELECT count(*)::int AS n FROM big')).rows[0].n;
const [src, dst] = await Promise.all(DBS.map((db) => query(urlOf(db), "SELECT md5(string_agg(id || ':' || customer || ':' || amount || ':' || status, ',' ORDER BY id)) AS h FROM big")));
const peak = peakRssMiB();
const deadLetters = (await query(urlOf(DBS[1]), 'SELECT error_code, count(*)::int AS n, min(error) AS e FROM syncline.dead_letter GROUP BY 1').catch((err) => ({ rows: [{ error: err.message }] }))).rows;
child.kill('SIGTERM');
await new Promise((r) => child.once('exit', r));
console.log(JSON.stringify({
  bench: 'large-transaction',
  rows: N,
  rows_per_transaction: TXN,
  start_to_applied_seconds: (done - t0) / 1000,
  source_insert_seconds: (committed - t0) / 1000,
  commit_to_applied_seconds: (done - committed) / 1000,
  rows_per_second_after_commit: Math.round(N / ((done - committed) / 1000)),
  ...phases,
  target_rows_at_done: rowsAtDone,
  counters_at_done: countersAtDone,
  dead_letters: deadLetters,
  target_rows: targetRows,
  target_equals_source: src.rows[0].h === dst.rows[0].h,
  peak_rss_mib: peak,
  rss_before_transaction_mib: rssIdle,
}));
for (const db of DBS) {
  await query(ADMIN, 'SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = $1 AND NOT active', [db]);
  await query(ADMIN, `DROP DATABASE IF EXISTS ${db} WITH (FORCE)`);
}
rmSync(dir, { recursive: true, force: true });
