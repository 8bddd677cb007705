#!/usr/bin/env node
// One transaction of N rows (default 1,000,000) through `syncline run` as its own process:
// prints the time from commit to all rows at the target and the process's peak RSS (VmHWM).
// The server streams the transaction before its commit (protocol >= 2); capture spills it
// to disk, so memory stays bounded whatever the transaction's size.
// Usage: npm run build && node bench/large-transaction.bench.mjs [rows] [adminUrl]
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';

const N = Number(process.argv[2] ?? 1_000_000);
const ADMIN = process.argv[3] ?? process.env.SYNCLINE_BENCH_PG_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
const dir = mkdtempSync(path.join(os.tmpdir(), 'syncline-bigtx-'));
const urlOf = (db) => { const u = new URL(ADMIN); u.pathname = `/${db}`; return u.toString(); };
async function query(url, sql, params) {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  try { return await c.query(sql, params); } finally { await c.end(); }
}
const DBS = ['syncline_bigtx_src', 'syncline_bigtx_dst'];
for (const db of DBS) {
  await query(ADMIN, 'SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = $1 AND NOT active', [db]);
  await query(ADMIN, `DROP DATABASE IF EXISTS ${db} WITH (FORCE)`);
  await query(ADMIN, `CREATE DATABASE ${db}`);
  await query(urlOf(db), 'CREATE TABLE big (id bigint PRIMARY KEY, customer text NOT NULL, amount numeric(12,2), status text)');
}
const config = path.join(dir, 'sync.yaml');
writeFileSync(config, `source:
  url: ${urlOf(DBS[0])}
  slots: [{ name: syncline_bigtx, publication: syncline_bigtx_pub, tables: [big] }]
  spill_dir: ${path.join(dir, 'spill')}
stream: { path: ${path.join(dir, 'stream')}, partitions: 6 }
consumer: { group_id: bigtx }
sink: { url: ${urlOf(DBS[1])} }
monitoring: { enabled: false }
`);
const child = spawn(process.execPath, ['dist/cli/main.js', 'run', '-c', config], { stdio: ['ignore', 'ignore', 'inherit'], env: { ...process.env, SYNCLINE_LOG_LEVEL: 'warn' } });
const peakRssMiB = () => {
  const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${child.pid}/status`, 'utf8'));
  return m ? Math.round(Number(m[1]) / 1024) : -1;
};
const until = async (check) => { for (;;) { if (await check()) return; await new Promise((r) => setTimeout(r, 200)); } };
await until(async () => (await query(urlOf(DBS[0]), "SELECT count(*)::int AS n FROM pg_replication_slots WHERE slot_name = 'syncline_bigtx' AND active")).rows[0].n === 1);
const rssIdle = peakRssMiB();

const t0 = Date.now();
await query(urlOf(DBS[0]), `INSERT INTO big SELECT g, 'customer-' || g || repeat('x', 60), g % 10000 + 0.25, 'shipped' FROM generate_series(1, ${N}) g`);
const committed = Date.now();
await until(async () => (await query(urlOf(DBS[1]), 'SELECT count(*)::int AS n FROM big')).rows[0].n === N);
const done = Date.now();
const [src, dst] = await Promise.all(DBS.map((db) => query(urlOf(db), "SELECT md5(string_agg(id || ':' || customer || ':' || amount || ':' || status, ',' ORDER BY id)) AS h FROM big")));
const peak = peakRssMiB();
child.kill('SIGTERM');
await new Promise((r) => child.once('exit', r));
console.log(JSON.stringify({
  bench: 'large-transaction',
  rows: N,
  source_insert_seconds: (committed - t0) / 1000,
  commit_to_applied_seconds: (done - committed) / 1000,
  rows_per_second_after_commit: Math.round(N / ((done - committed) / 1000)),
  target_equals_source: src.rows[0].h === dst.rows[0].h,
  peak_rss_mib: peak,
  rss_before_transaction_mib: rssIdle,
}));
for (const db of DBS) {
  await query(ADMIN, 'SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = $1 AND NOT active', [db]);
  await query(ADMIN, `DROP DATABASE IF EXISTS ${db} WITH (FORCE)`);
}
rmSync(dir, { recursive: true, force: true });
