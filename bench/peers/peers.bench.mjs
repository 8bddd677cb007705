#!/usr/bin/env node
// Peers side by side: the same pre-loaded WAL drained, one at a time, by
//   pg_recvlogical   (the walsender's ceiling: pgoutput bytes into /dev/null),
//   syncline capture (the whole CLI process, into the durable embedded stream),
//   Debezium 3.6.1's embedded engine (a counting consumer, snapshot.mode=no_data),
// each from its own slot made before the load, each measured as a whole process: wall
// seconds from spawn to its last change, CPU seconds (user + system, from the kernel's
// accounting of the reaped child) and peak RSS (VmHWM). Prints one JSON line per peer and
// one with the ratios.
//
// Usage: npm run bench:peers -- [changes=500000] [adminUrl]
// Needs PostgreSQL (wal_level=logical) at adminUrl (default postgres://postgres@127.0.0.1:5432/postgres),
// pg_recvlogical on PATH, and for Debezium a JDK 17+ and Maven: the peer in bench/peers/debezium
// is built here (mvn package, from Maven Central into ~/.m2) and run alone on its classpath.
// SYNCLINE_PEERS=pg_recvlogical,syncline,debezium picks peers (and their order);
// SYNCLINE_PEERS_BASELINE=<folder with dist/cli/main.js> adds peer syncline_baseline (another
// build, e.g. main's, on the same WAL: before/after in one run; SYNCLINE_PEERS_BASELINE_NODE_ARGS
// its node flags, default those of syncline);
// SYNCLINE_PEERS_PG_RECVLOGICAL the pg_recvlogical binary; SYNCLINE_PEERS_NODE_ARGS extra node
// flags for syncline (e.g. --cpu-prof --cpu-prof-dir=/tmp/prof); SYNCLINE_PEERS_JVM_ARGS for Debezium's JVM; SYNCLINE_PEERS_JAVA the java
// binary (default: java on PATH); SYNCLINE_PEERS_DEBEZIUM_FORMAT=connect|json (default connect:
// the consumer gets Kafka Connect records, nothing serialized; json: the JSON converter runs,
// as a Kafka Connect deployment would).
import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { query } from '../bench-helpers.mjs';

const N = Number(process.argv[2] ?? 500_000);
const ADMIN = process.argv[3] ?? process.env.SYNCLINE_BENCH_PG_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
/** Another build of syncline (a folder holding dist/cli/main.js, e.g. a worktree of main) drained as peer `syncline_baseline`: before/after on the same WAL. */
const BASELINE = process.env.SYNCLINE_PEERS_BASELINE;
const PEERS = (process.env.SYNCLINE_PEERS ?? `pg_recvlogical,syncline,${BASELINE ? 'syncline_baseline,' : ''}debezium`).split(',').map((s) => s.trim()).filter(Boolean);
const JAVA = process.env.SYNCLINE_PEERS_JAVA ?? 'java';
const DEBEZIUM_FORMAT = process.env.SYNCLINE_PEERS_DEBEZIUM_FORMAT ?? 'connect';
const TXN = 1000;
const DB = 'syncline_peers_src';
const PUBLICATION = 'peers_pub';
const slotOf = (peer) => `peers_${peer}`;
const HERE = path.dirname(fileURLToPath(import.meta.url));
const ROOT = path.resolve(HERE, '..', '..');
const DEBEZIUM_DIR = path.join(HERE, 'debezium');
const CLK_TCK = Number(execFileSync('getconf', ['CLK_TCK']).toString().trim()) || 100;
const dir = mkdtempSync(path.join(os.tmpdir(), 'syncline-peers-'));
const admin = new URL(ADMIN);
const SRC = (() => { const u = new URL(ADMIN); u.pathname = `/${DB}`; return u.toString(); })();
const PGHOST = admin.hostname;
const PGPORT = admin.port || '5432';
const PGUSER = decodeURIComponent(admin.username || 'postgres');
const PGPASSWORD = decodeURIComponent(admin.password || '');
/** Every peer process started, so that a failure leaves none running. */
const children = [];
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

for (const peer of PEERS) {
  if (!['pg_recvlogical', 'syncline', 'syncline_baseline', 'debezium'].includes(peer)) throw new Error(`unknown peer ${peer}`);
  if (peer === 'syncline_baseline' && !BASELINE) throw new Error('peer syncline_baseline needs SYNCLINE_PEERS_BASELINE=<folder with dist/cli/main.js>');
}

try {
  // Built before anything holds a slot: the build's minutes (first time) are nobody's figure.
  const classpath = PEERS.includes('debezium') ? buildDebezium() : '';
  await prepareSource();
  const endLsn = await loadWal();
  const results = {};
  for (const peer of PEERS) {
    const load = loadavg();
    const r = peer === 'pg_recvlogical' ? await runRecvlogical(endLsn)
      : peer === 'syncline' ? await runSyncline(peer, ROOT)
        : peer === 'syncline_baseline' ? await runSyncline(peer, path.resolve(BASELINE))
          : await runDebezium(classpath);
    results[peer] = {
      peer,
      changes: r.changes,
      seconds: +r.seconds.toFixed(3),
      rate: Math.round(r.changes / r.seconds),
      cpu_seconds: +r.cpuSeconds.toFixed(2),
      peak_rss_mib: Math.round(r.peakRssKib / 1024),
      ...(r.firstChangeSeconds !== undefined ? { first_change_seconds: +r.firstChangeSeconds.toFixed(3) } : {}),
      walsender_cpu_seconds: r.walsenderCpuSeconds === null ? null : +r.walsenderCpuSeconds.toFixed(2),
      loadavg_before: load,
      loadavg_after: loadavg(),
    };
    console.log(JSON.stringify(results[peer]));
  }
  const ratio = (a, b) => (results[a] && results[b] ? +(results[a].rate / results[b].rate).toFixed(2) : null);
  console.log(JSON.stringify({
    bench: 'peers',
    changes: N,
    debezium_format: PEERS.includes('debezium') ? DEBEZIUM_FORMAT : undefined,
    syncline_vs_pg_recvlogical: ratio('syncline', 'pg_recvlogical'),
    syncline_vs_debezium: ratio('syncline', 'debezium'),
    ...(BASELINE ? { syncline_vs_baseline: ratio('syncline', 'syncline_baseline') } : {}),
    cpu_per_change_us: Object.fromEntries(Object.values(results).map((r) => [r.peer, +((r.cpu_seconds * 1e6) / r.changes).toFixed(2)])),
    loadavg: loadavg(),
  }));
} finally {
  await cleanup();
}

/** A fresh database, table and publication, and one slot per peer made before the load so each drains the same WAL. */
async function prepareSource() {
  await dropSource();
  await query(ADMIN, `CREATE DATABASE ${DB}`);
  await query(SRC, 'CREATE TABLE bench (id bigint PRIMARY KEY, customer text NOT NULL, amount numeric(12,2), status text, qty integer, created_at timestamptz NOT NULL)');
  await query(SRC, `CREATE PUBLICATION ${PUBLICATION} FOR TABLE bench`);
  for (const peer of PEERS) await query(SRC, "SELECT pg_create_logical_replication_slot($1, 'pgoutput')", [slotOf(peer)]);
}

/** N inserts of ~200-byte rows in transactions of 1,000 (the workload of bench:pipeline); returns the WAL position after the last commit. */
async function loadWal() {
  const src = new pg.Client({ connectionString: SRC });
  await src.connect();
  try {
    for (let start = 1; start <= N; start += TXN) {
      await src.query(
        `INSERT INTO bench SELECT g, 'customer-' || g || repeat('x', 90), g % 10000 + 0.25, 'shipped', g % 17, now()
           FROM generate_series($1::bigint, $2::bigint) g`, [start, Math.min(N, start + TXN - 1)]);
    }
    return (await src.query('SELECT pg_current_wal_lsn()::text AS l')).rows[0].l;
  } finally {
    await src.end();
  }
}

/** pg_recvlogical into /dev/null until the WAL position after the load (--endpos): the walsender's pace. */
async function runRecvlogical(endLsn) {
  const r = await measure(process.env.SYNCLINE_PEERS_PG_RECVLOGICAL ?? 'pg_recvlogical', [
    '-h', PGHOST, '-p', PGPORT, '-U', PGUSER, '-d', DB, '--slot', slotOf('pg_recvlogical'), '--start', '--endpos', endLsn,
    '--no-loop', '-o', 'proto_version=1', '-o', `publication_names=${PUBLICATION}`, '-f', '/dev/null',
  ], { slot: slotOf('pg_recvlogical') });
  if (r.code !== 0) throw new Error(`pg_recvlogical exited ${r.code}: ${r.stderr}`);
  // Into /dev/null nothing can be counted: check instead that it confirmed the whole load.
  const { rows } = await query(SRC, 'SELECT confirmed_flush_lsn >= $2::pg_lsn AS drained FROM pg_replication_slots WHERE slot_name = $1', [slotOf('pg_recvlogical'), endLsn]);
  if (!rows[0]?.drained) throw new Error(`pg_recvlogical stopped before ${endLsn}`);
  return { ...r, changes: N };
}

/**
 * `syncline capture` as a user runs it (node dist/cli/main.js capture -c sync.yaml, metrics
 * endpoint on), into the durable embedded stream. Done when the stream has durably stored N
 * changes (sync_events_published_total, scraped every 100 ms); then SIGTERM, which drains.
 */
async function runSyncline(peer, root) {
  const port = await freePort();
  const config = path.join(dir, `${peer}.yaml`);
  writeFileSync(config, `source:
  url: ${SRC}
  # The slot was made before the workload (its WAL is the benchmark's): nothing to snapshot.
  snapshot: never
  slots: [{ name: ${slotOf(peer)}, publication: ${PUBLICATION}, tables: [bench] }]
stream: { broker: embedded, path: ${path.join(dir, `${peer}-stream`)}, partitions: 6 }
consumer: { group_id: peers }
sink: { url: ${SRC} }
monitoring: { host: 127.0.0.1, port: ${port} }
`);
  const node = process.execPath;
  const nodeArgs = (peer === 'syncline_baseline' ? process.env.SYNCLINE_PEERS_BASELINE_NODE_ARGS : undefined) ?? process.env.SYNCLINE_PEERS_NODE_ARGS ?? '';
  const args = [...nodeArgs.split(' ').filter(Boolean), path.join(root, 'dist', 'cli', 'main.js'), 'capture', '-c', config];
  let published = 0;
  let firstChangeSeconds;
  const r = await measure(node, args, {
    slot: slotOf(peer),
    cwd: dir,
    async done(child, elapsed) {
      published = await scrapePublished(port);
      if (published > 0 && firstChangeSeconds === undefined) firstChangeSeconds = elapsed();
      if (published < N) return false;
      child.kill('SIGTERM');
      return true;
    },
  });
  if (r.code !== 0) throw new Error(`syncline capture exited ${r.code}: ${r.stderr}`);
  return { ...r, changes: published, firstChangeSeconds };
}

/** Debezium's embedded engine on its own JVM; it exits itself once it has counted N changes. */
async function runDebezium(classpath) {
  const offsets = path.join(dir, 'debezium-offsets.dat');
  const jvmArgs = (process.env.SYNCLINE_PEERS_JVM_ARGS ?? '').split(' ').filter(Boolean);
  const r = await measure(JAVA, [
    ...jvmArgs, '-Dorg.slf4j.simpleLogger.defaultLogLevel=warn', '-cp', classpath, 'syncline.bench.DebeziumPeer',
    `changes=${N}`, `host=${PGHOST}`, `port=${PGPORT}`, `user=${PGUSER}`, `password=${PGPASSWORD}`, `dbname=${DB}`,
    `slot=${slotOf('debezium')}`, `publication=${PUBLICATION}`, 'table=public.bench', `offsets=${offsets}`, `format=${DEBEZIUM_FORMAT}`,
  ], { slot: slotOf('debezium') });
  if (r.code !== 0) throw new Error(`debezium peer exited ${r.code}: ${r.stderr.slice(-4000)}`);
  const inside = JSON.parse(r.stdout.trim().split('\n').pop());
  return { ...r, changes: inside.changes, firstChangeSeconds: inside.first_change_s };
}

/** mvn package + the dependency classpath, so the measured JVM runs alone (no Maven around it). */
function buildDebezium() {
  const cpFile = path.join(DEBEZIUM_DIR, 'target', 'classpath.txt');
  execFileSync('mvn', ['-q', '-B', '-Dstyle.color=never', 'package', 'dependency:build-classpath', `-Dmdep.outputFile=${cpFile}`], { cwd: DEBEZIUM_DIR, stdio: ['ignore', 2, 2] });
  return [path.join(DEBEZIUM_DIR, 'target', 'debezium-peer.jar'), readFileSync(cpFile, 'utf8').trim()].join(path.delimiter);
}

/**
 * Runs one peer to its end and measures it. CPU: this process's cutime + cstime grow by what
 * the kernel charged the child (all its threads) once it is reaped, so the figure is exact and
 * needs no polling. Peak RSS: VmHWM, polled (it only grows). The walsender serving the slot is
 * sampled too (the server's share, the same work for every peer).
 */
async function measure(cmd, args, { slot, cwd, done }) {
  const cpu0 = childrenCpuTicks();
  const t0 = process.hrtime.bigint();
  const elapsed = () => Number(process.hrtime.bigint() - t0) / 1e9;
  const child = spawn(cmd, args, { cwd: cwd ?? dir, stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(child);
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (b) => { if (stdout.length < 1 << 20) stdout += b; });
  child.stderr.on('data', (b) => { if (stderr.length < 1 << 20) stderr += b; });
  const exited = new Promise((resolve) => child.on('close', (code, signal) => resolve(code ?? (signal ? 128 : 1))));
  let running = true;
  exited.then(() => { running = false; });

  let peakRssKib = 0;
  let seconds = null;
  let walsenderPid = null;
  let walsenderCpu = null;
  const admin = new pg.Client({ connectionString: SRC });
  await admin.connect();
  try {
    while (running) {
      peakRssKib = Math.max(peakRssKib, vmHwmKib(child.pid));
      if (walsenderPid === null) {
        const { rows } = await admin.query('SELECT active_pid FROM pg_replication_slots WHERE slot_name = $1 AND active', [slot]);
        walsenderPid = rows[0]?.active_pid ?? null;
      }
      if (walsenderPid !== null) walsenderCpu = processCpuTicks(walsenderPid) ?? walsenderCpu;
      if (seconds === null && done && (await done(child, elapsed))) seconds = elapsed();
      await Promise.race([exited, sleep(100)]);
    }
  } finally {
    await admin.end();
  }
  const code = await exited;
  if (seconds === null) seconds = elapsed();
  return {
    code,
    stdout,
    stderr,
    seconds,
    cpuSeconds: (childrenCpuTicks() - cpu0) / CLK_TCK,
    peakRssKib,
    walsenderCpuSeconds: walsenderCpu === null ? null : walsenderCpu / CLK_TCK,
  };
}

/** utime + stime of a process (all its threads), in clock ticks; null once it is gone. */
function processCpuTicks(pid) {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return Number(fields[11]) + Number(fields[12]);
  } catch {
    return null;
  }
}

/** cutime + cstime of this process: the CPU of every child it has reaped. */
function childrenCpuTicks() {
  const stat = readFileSync('/proc/self/stat', 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return Number(fields[13]) + Number(fields[14]);
}

function vmHwmKib(pid) {
  try {
    const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) : 0;
  } catch {
    return 0;
  }
}

async function scrapePublished(port) {
  try {
    const res = await fetch(`http://127.0.0.1:${port}/metrics`);
    const text = await res.text();
    let sum = 0;
    for (const m of text.matchAll(/^sync_events_published_total(?:\{[^}]*\})? (\S+)$/gm)) sum += Number(m[1]);
    return sum;
  } catch {
    return 0; // not listening yet
  }
}

function freePort() {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => { const { port } = s.address(); s.close(() => resolve(port)); });
  });
}

function loadavg() {
  return readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ');
}

async function dropSource() {
  await query(ADMIN, 'SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = $1 AND NOT active', [DB]);
  await query(ADMIN, `DROP DATABASE IF EXISTS ${DB} WITH (FORCE)`);
}

/** Leave no process, no slot (an idle slot retains WAL on the server), no database, no temp dir behind. */
async function cleanup() {
  try {
    for (const child of children) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    // A killed peer's walsender lets go of its slot a moment later.
    for (let i = 0; i < 50; i++) {
      const { rows } = await query(ADMIN, 'SELECT count(*)::int AS n FROM pg_replication_slots WHERE database = $1 AND active', [DB]);
      if (rows[0].n === 0) break;
      await sleep(100);
    }
    await dropSource();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
