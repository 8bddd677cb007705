#!/usr/bin/env node
// How long a restarted `syncline apply` takes to apply again after the previous one was
// killed: a `syncline capture` and a `syncline apply` (Kafka stream, PostgreSQL 15 source and
// target on the machine's server) run while a writer commits a two-row transaction every
// 20 ms; each round kills the apply (`kill -9`, or SIGTERM with --sigterm for comparison),
// starts a new one after --delay ms and measures from that spawn to the first change the new
// process applies (the target's max(id) passing what it was when the old one died; polled
// every 20 ms). On Kafka the new member's join waits until the dead member has rejoined or
// its session expired, so a kill -9 costs up to the session timeout on top of start-up.
//
// Also from the spawn: `up_s` (its metrics served: Node and syncline started) and
// `assigned_s` (its "partitions assigned" log line: the group's join done); and
// `up_to_first_applied_s`, the time after start-up (which a loaded machine stretches).
//
// Usage: npm run build && node bench/apply-rejoin.bench.mjs [rounds=6] [--consistency transactional|eventual] [--delay 500] [--sigterm] [--roots DIR,DIR]
// --roots: checkouts with a built dist/ (e.g. this one and a worktree of main); the restarted
// apply of round r is the one of root r mod n, so the builds alternate under the same load.
// Environment: SYNCLINE_BENCH_PG_URL (admin URL of PostgreSQL 15), KAFKA_PORT (default 9092).
// Prints one JSON line per round and, per root, one with the medians and the maximum.
import { spawn } from 'node:child_process';
import { createWriteStream, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { dropBrokerTopic, query } from './bench-helpers.mjs';

const args = process.argv.slice(2);
const flag = (name, fallback) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1] : fallback;
};
const ROUNDS = Number(args.find((a) => /^\d+$/.test(a)) ?? 6);
const CONSISTENCY = flag('consistency', 'transactional');
const DELAY_MS = Number(flag('delay', 500));
const SIGNAL = args.includes('--sigterm') ? 'SIGTERM' : 'SIGKILL';
const KAFKA = `127.0.0.1:${process.env.KAFKA_PORT ?? 9092}`;
const HERE = path.dirname(fileURLToPath(import.meta.url));
const ROOTS = (flag('roots', '') || path.resolve(HERE, '..')).split(',').map((r) => path.resolve(r));
const cliOf = (root) => path.join(root, 'dist/cli/main.js');
const ADMIN = process.env.SYNCLINE_BENCH_PG_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
const NAME = `syncline_rejoin_${process.pid}`;
const TOPIC = NAME.replace(/_/g, '-');
const url = (db) => { const u = new URL(ADMIN); u.pathname = `/${db}`; return u.toString(); };
const SRC = url(`${NAME}_src`);
const DST = url(`${NAME}_dst`);
const dir = mkdtempSync(path.join(os.tmpdir(), 'syncline-rejoin-'));
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

function freePort() {
  return new Promise((resolve) => {
    const s = createServer();
    s.listen(0, '127.0.0.1', () => { const { port } = s.address(); s.close(() => resolve(port)); });
  });
}

let starts = 0;
/** Starts a syncline process; `child.seen` maps its log messages (stderr) to when they were first logged (ms). */
async function start(role, config, root = ROOTS[0]) {
  const log = createWriteStream(path.join(dir, `${role}-${starts++}.log`));
  const child = spawn(process.execPath, [cliOf(root), role, '-c', config, '--metrics-port', String(await freePort())], { stdio: ['ignore', 'pipe', 'pipe'] });
  child.stdout.pipe(log);
  child.stderr.pipe(log);
  child.exited = new Promise((r) => child.once('exit', r));
  child.seen = new Map();
  let partial = '';
  child.stderr.on('data', (d) => {
    const lines = (partial + d.toString()).split('\n');
    partial = lines.pop();
    for (const line of lines) {
      try {
        const { msg, time } = JSON.parse(line);
        if (!child.seen.has(msg)) child.seen.set(msg, time);
      } catch { /* not a log line */ }
    }
  });
  return child;
}

const children = [];
let writing = true;
try {
  for (const db of [SRC, DST]) {
    const name = new URL(db).pathname.slice(1);
    await query(ADMIN, `DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
    await query(ADMIN, `CREATE DATABASE ${name}`);
    await query(db, 'CREATE TABLE t (id bigint PRIMARY KEY, v int NOT NULL)');
  }
  await query(SRC, 'CREATE PUBLICATION rejoin_pub FOR TABLE t');
  const config = path.join(dir, 'sync.yaml');
  writeFileSync(config, `source:
  url: ${SRC}
  slots: [{ name: ${NAME}, publication: rejoin_pub, tables: [t] }]
stream: { broker: kafka, brokers: ['${KAFKA}'], topic: ${TOPIC}, partitions: 4, batch_size: 500 }
consumer: { group_id: ${TOPIC}, batch_size: 200, retry: { backoff_base_ms: 50, backoff_max_ms: 1000 } }
sink: { url: '${DST}', consistency: ${CONSISTENCY} }
`);
  children.push(await start('capture', config));
  let apply = await start('apply', config);
  children.push(apply);

  // Two rows per transaction, so that a transaction usually spans two partitions.
  const writer = new pg.Client({ connectionString: SRC });
  writer.on('error', () => undefined); // dropped with its database at the end
  await writer.connect();
  let id = 0;
  const writes = (async () => {
    while (writing) {
      await writer.query('INSERT INTO t VALUES ($1, 0), ($2, 0)', [++id, ++id]);
      await sleep(20);
    }
  })().catch((err) => { if (writing) throw err; });

  const target = new pg.Client({ connectionString: DST });
  target.on('error', () => undefined);
  await target.connect();
  const applied = async () => Number((await target.query('SELECT coalesce(max(id), 0) AS m FROM t')).rows[0].m);
  const waitApplied = async (above, timeoutMs) => {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      if ((await applied()) > above) return true;
      await sleep(20);
    }
    return false;
  };
  if (!(await waitApplied(0, 120_000))) throw new Error(`nothing applied within 120 s; logs in ${dir}`);

  const rounds = [];
  for (let round = 1; round <= ROUNDS; round++) {
    await sleep(4000); // steady state: the group stable, apply caught up
    apply.kill(SIGNAL);
    await apply.exited;
    await sleep(DELAY_MS); // also lets a commit the killed process had sent finish
    const before = await applied();
    const root = ROOTS[round % ROOTS.length];
    const spawned = Date.now();
    apply = await start('apply', config, root);
    children.push(apply);
    const ok = await waitApplied(before, 120_000);
    const since = (msg) => (apply.seen.has(msg) ? +((apply.seen.get(msg) - spawned) / 1000).toFixed(3) : null);
    const r = {
      root, up_s: since('metrics and dashboard served'), assigned_s: since('partitions assigned'),
      restart_to_first_applied_s: ok ? (Date.now() - spawned) / 1000 : null,
    };
    // What the group's join costs, without Node's and syncline's start-up (noisy on a loaded machine).
    r.up_to_first_applied_s = r.up_s !== null && ok ? +(r.restart_to_first_applied_s - r.up_s).toFixed(3) : null;
    rounds.push(r);
    console.log(JSON.stringify({ bench: 'apply-rejoin', round, signal: SIGNAL, consistency: CONSISTENCY, ...r }));
  }
  for (const root of ROOTS) {
    const mine = rounds.filter((r) => r.root === root);
    const done = mine.map((r) => r.restart_to_first_applied_s).filter((s) => s !== null);
    const med = (key) => { const xs = mine.map((r) => r[key]).filter((x) => x !== null); return xs.length ? +median(xs).toFixed(2) : null; };
    console.log(JSON.stringify({
      bench: 'apply-rejoin', root, signal: SIGNAL, consistency: CONSISTENCY, delay_ms: DELAY_MS, rounds: mine.length,
      median_up_s: med('up_s'), median_assigned_s: med('assigned_s'), median_s: med('restart_to_first_applied_s'), median_up_to_first_applied_s: med('up_to_first_applied_s'),
      max_s: done.length ? +Math.max(...done).toFixed(2) : null, failed: mine.length - done.length, loadavg: os.loadavg().map((l) => +l.toFixed(2)),
    }));
  }
  writing = false;
  await writes;
  await writer.end();
  await target.end();
} finally {
  writing = false;
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGTERM');
  await Promise.all(children.map((c) => c.exitCode === null && c.signalCode === null ? Promise.race([c.exited, sleep(45_000)]) : undefined));
  await query(SRC, `SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1 AND NOT active`, [NAME]).catch(() => undefined);
  for (const db of [SRC, DST]) await query(ADMIN, `DROP DATABASE IF EXISTS ${new URL(db).pathname.slice(1)} WITH (FORCE)`).catch(() => undefined);
  await dropBrokerTopic('kafka', TOPIC, 4).catch(() => undefined);
  if (!process.env.SYNCLINE_BENCH_KEEP) rmSync(dir, { recursive: true, force: true });
}
