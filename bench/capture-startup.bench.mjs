#!/usr/bin/env node
// Start-up of `syncline capture` as a whole process: from spawn to `/metrics` answering and to
// the first change stored (sync_events_published_total > 0; polled every 20 ms), then SIGTERM;
// and the process's CPU seconds (user + system, from the kernel's accounting of the reaped
// child). The slot holds one new change each round; the source's bookkeeping (state schema)
// exists from the first round on, as on every restart of a deployment: the first round of each
// build is a warm-up and not counted.
//
// Usage: npm run build && node bench/capture-startup.bench.mjs [rounds=8] [folder with dist/ ...] [adminUrl via SYNCLINE_BENCH_PG_URL]
// Several folders (e.g. this checkout and a worktree of main, built) alternate round by round;
// prints one JSON line per folder with the medians and every round, then the load average.
import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { query } from './bench-helpers.mjs';

const ROUNDS = Number(process.argv[2] ?? 8);
const HERE = path.dirname(fileURLToPath(import.meta.url));
const ROOTS = process.argv.length > 3 ? process.argv.slice(3).map((r) => path.resolve(r)) : [path.resolve(HERE, '..')];
const ADMIN = process.env.SYNCLINE_BENCH_PG_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
const DB = `syncline_startup_${process.pid}`;
const SRC = (() => { const u = new URL(ADMIN); u.pathname = `/${DB}`; return u.toString(); })();
const CLK_TCK = Number(execFileSync('getconf', ['CLK_TCK']).toString().trim()) || 100;
const dir = mkdtempSync(path.join(os.tmpdir(), 'syncline-startup-'));
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const loadavg = () => readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ');
const childrenCpuTicks = () => {
  const stat = readFileSync('/proc/self/stat', 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return Number(f[13]) + Number(f[14]);
};
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

const results = new Map(ROOTS.map((r) => [r, []]));
try {
  await query(ADMIN, `DROP DATABASE IF EXISTS ${DB} WITH (FORCE)`);
  await query(ADMIN, `CREATE DATABASE ${DB}`);
  await query(SRC, 'CREATE TABLE bench (id bigint PRIMARY KEY, v text)');
  await query(SRC, 'CREATE PUBLICATION startup_pub FOR TABLE bench');
  let id = 0;
  for (let round = 0; round <= ROUNDS; round++) {
    for (const [k, root] of ROOTS.entries()) {
      const slot = `startup_${k}`;
      if (round === 0) await query(SRC, "SELECT pg_create_logical_replication_slot($1, 'pgoutput')", [slot]);
      await query(SRC, 'INSERT INTO bench VALUES ($1, $2)', [++id, 'x']);
      const r = await runOnce(root, slot);
      if (round > 0) results.get(root).push(r);
    }
  }
  for (const [root, rs] of results) {
    console.log(JSON.stringify({
      bench: 'capture-startup',
      root,
      rounds: rs.length,
      metrics_up_s: +median(rs.map((r) => r.up)).toFixed(3),
      first_change_s: +median(rs.map((r) => r.first)).toFixed(3),
      cpu_s: +median(rs.map((r) => r.cpu)).toFixed(2),
      all: rs.map((r) => `${r.up.toFixed(2)}/${r.first.toFixed(2)}/${r.cpu.toFixed(2)}`).join(' '),
    }));
  }
  console.log(JSON.stringify({ loadavg: loadavg() }));
} finally {
  await query(ADMIN, 'SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = $1 AND NOT active', [DB]).catch(() => undefined);
  await query(ADMIN, `DROP DATABASE IF EXISTS ${DB} WITH (FORCE)`).catch(() => undefined);
  rmSync(dir, { recursive: true, force: true });
}

/** One `syncline capture` from spawn to its first change stored, then SIGTERM: seconds to /metrics up and to that change, CPU seconds. */
async function runOnce(root, slot) {
  const port = await freePort();
  const config = path.join(dir, `${slot}.yaml`);
  writeFileSync(config, `source:
  url: ${SRC}
  # The slot was made before the workload (its WAL is the benchmark's): nothing to snapshot.
  snapshot: never
  slots: [{ name: ${slot}, publication: startup_pub, tables: [bench] }]
stream: { broker: embedded, path: ${path.join(dir, `${slot}-stream`)}, partitions: 6 }
consumer: { group_id: startup }
sink: { url: ${SRC} }
monitoring: { host: 127.0.0.1, port: ${port} }
`);
  const cpu0 = childrenCpuTicks();
  const t0 = performance.now();
  const child = spawn(process.execPath, [path.join(root, 'dist', 'cli', 'main.js'), 'capture', '-c', config], { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (b) => { if (stderr.length < 1 << 16) stderr += b; });
  const exited = new Promise((resolve) => child.on('close', (code) => resolve(code)));
  let up;
  let first;
  try {
    while (first === undefined) {
      if (performance.now() - t0 > 60_000) throw new Error(`no change stored within 60 s: ${stderr}`);
      try {
        const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
        up ??= (performance.now() - t0) / 1000;
        let published = 0;
        for (const m of text.matchAll(/^sync_events_published_total(?:\{[^}]*\})? (\S+)$/gm)) published += Number(m[1]);
        if (published > 0) first = (performance.now() - t0) / 1000;
      } catch {
        // not listening yet
      }
      if (first === undefined) await Promise.race([sleep(20), exited]);
      if (child.exitCode !== null) throw new Error(`capture exited ${child.exitCode}: ${stderr}`);
    }
  } finally {
    child.kill('SIGTERM');
  }
  const code = await exited;
  if (code !== 0) throw new Error(`capture exited ${code}: ${stderr}`);
  return { up, first, cpu: (childrenCpuTicks() - cpu0) / CLK_TCK };
}

function freePort() {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => { const { port } = s.address(); s.close(() => resolve(port)); });
  });
}
