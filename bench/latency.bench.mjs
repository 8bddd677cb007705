#!/usr/bin/env node
// End-to-end latency under a steady load: from a change's source commit to its row written at
// a PostgreSQL target, through `syncline run` as its own process, per stream (embedded, Kafka,
// NATS JetStream) and per load rate. Prints one JSON line per stream, rate and round with
// p50_ms, p90_ms, p99_ms, max_ms, the achieved rate and the load average.
//
// The load: every `--tick` ms (10) one transaction (one INSERT statement, autocommit) of rate * tick / 1000 rows,
// paced against the clock and never bursting to catch up (a late tick is skipped; the
// achieved rate is printed). The first `--warmup` seconds of each rate are not measured.
//
// The two timestamps, both taken by the one PostgreSQL server (source and target are two
// databases of it, so one clock):
//   src_ts      the source column's DEFAULT clock_timestamp(), set as the row is inserted.
//               The commit follows within the same statement (source_txn_ms shows how long a
//               whole statement took from the client, an upper bound of the gap), so this is
//               slightly *earlier* than the commit: the figures err on the long side.
//               (The commit time itself, pg_xact_commit_timestamp, needs
//               track_commit_timestamp, which needs a server restart; it is off here.)
//   applied_at  set to clock_timestamp() by a BEFORE INSERT OR UPDATE trigger on the target
//               table as syncline writes the row. Its apply transaction commits after the
//               rest of the batch and the positions are written: a few ms the figures miss.
//
// Usage: npm run build && node bench/latency.bench.mjs [options]
//   --rates 1000,5000,20000   changes per second
//   --streams embedded,kafka,nats   default: all three, a broker that does not answer skipped
//   --seconds 20              measured seconds per rate   --warmup 2   unmeasured seconds first
//   --tick 10                 ms between transactions (each of rate * tick / 1000 rows)
//   --settle 5                idle seconds once the first change went through, before any load
//   --repeat 1                rounds over all rates (one syncline process per stream)
//   --set stream.batch_wait_ms=5   any config key (repeatable), e.g. consumer.batch_wait_ms
// Env: SYNCLINE_BENCH_PG_URL (admin URL), KAFKA_PORT (9092).
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { Kafka, logLevel } from 'kafkajs';
import { connect } from 'nats';
import pg from 'pg';
import YAML from 'yaml';
import { partitionStreamName, positionsBucketName } from '../dist/stream/nats/nats-names.js';
import { freePort } from '../dist/demo/ports.js';
import { query } from './bench-helpers.mjs';

const { values: opts } = parseArgs({
  options: {
    rates: { type: 'string', default: '1000,5000,20000' },
    streams: { type: 'string' },
    seconds: { type: 'string', default: '20' },
    warmup: { type: 'string', default: '2' },
    tick: { type: 'string', default: '10' },
    settle: { type: 'string', default: '5' },
    repeat: { type: 'string', default: '1' },
    set: { type: 'string', multiple: true, default: [] },
  },
});
const RATES = opts.rates.split(',').map(Number);
const SECONDS = Number(opts.seconds);
const WARMUP = Number(opts.warmup);
const REPEAT = Number(opts.repeat);
const TICK_MS = Number(opts.tick);
const PARTITIONS = 6;
const ADMIN = process.env.SYNCLINE_BENCH_PG_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
const KAFKA = `127.0.0.1:${process.env.KAFKA_PORT ?? 9092}`;
const NATS = 'nats://127.0.0.1:4222';
const tag = `${process.pid}_${randomBytes(3).toString('hex')}`;
const SRC_DB = `syncline_latency_src_${tag}`;
const DST_DB = `syncline_latency_dst_${tag}`;
const SLOT = `syncline_latency_${tag}`;
const urlOf = (db) => { const u = new URL(ADMIN); u.pathname = `/${db}`; return u.toString(); };
const SRC = urlOf(SRC_DB);
const DST = urlOf(DST_DB);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const nowMs = () => performance.timeOrigin + performance.now();
const loadavg = () => readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).map(Number);

/** `--set a.b=v` overrides on top of the generated config (v parsed as YAML: numbers stay numbers). */
function applyOverrides(config) {
  for (const s of opts.set) {
    const eq = s.indexOf('=');
    const keys = s.slice(0, eq).split('.');
    let o = config;
    for (const k of keys.slice(0, -1)) o = o[k] ??= {};
    o[keys.at(-1)] = YAML.parse(s.slice(eq + 1));
  }
  return config;
}

function reachable(hostPort) {
  const [host, port] = hostPort.split(':');
  return new Promise((resolve) => {
    const sock = net.connect({ host, port: Number(port), timeout: 1000 });
    sock.once('connect', () => { sock.destroy(); resolve(true); });
    sock.once('error', () => resolve(false));
    sock.once('timeout', () => { sock.destroy(); resolve(false); });
  });
}

/** The stream section and how to remove what the run created on the broker. */
function streamOf(broker, dir, round) {
  const topic = `syncline-latency-${tag}-${round}`;
  switch (broker) {
    case 'kafka':
      return {
        config: { broker: 'kafka', brokers: [KAFKA], topic, partitions: PARTITIONS },
        async cleanup() {
          const admin = new Kafka({ brokers: [KAFKA], logLevel: logLevel.NOTHING }).admin();
          await admin.connect();
          await admin.deleteTopics({ topics: [topic] }).catch(() => undefined);
          await admin.disconnect();
        },
      };
    case 'nats':
      return {
        config: { broker: 'nats', url: NATS, topic, partitions: PARTITIONS },
        async cleanup() {
          const nc = await connect({ servers: NATS });
          const jsm = await nc.jetstreamManager();
          for (let p = 0; p < PARTITIONS; p++) await jsm.streams.delete(partitionStreamName(topic, p)).catch(() => undefined);
          await jsm.streams.delete(`KV_${positionsBucketName(topic)}`).catch(() => undefined);
          await nc.close();
        },
      };
    default: {
      const streamDir = path.join(dir, `stream-${round}`);
      return { config: { broker: 'embedded', path: streamDir, partitions: PARTITIONS }, async cleanup() { rmSync(streamDir, { recursive: true, force: true }); } };
    }
  }
}

async function dropDatabases() {
  for (const db of [SRC_DB, DST_DB]) {
    await query(ADMIN, 'SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = $1 AND NOT active', [db]);
    await query(ADMIN, `DROP DATABASE IF EXISTS ${db} WITH (FORCE)`);
  }
}

async function createDatabases() {
  await dropDatabases();
  for (const db of [SRC_DB, DST_DB]) await query(ADMIN, `CREATE DATABASE ${db}`);
  await query(SRC, `CREATE TABLE lat (id bigint PRIMARY KEY, run int NOT NULL, warm boolean NOT NULL, payload text NOT NULL,
    src_ts timestamptz NOT NULL DEFAULT clock_timestamp())`);
  await query(DST, `CREATE TABLE lat (id bigint PRIMARY KEY, run int NOT NULL, warm boolean NOT NULL, payload text NOT NULL,
    src_ts timestamptz NOT NULL, applied_at timestamptz);
    CREATE FUNCTION lat_applied() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN NEW.applied_at := clock_timestamp(); RETURN NEW; END $$;
    CREATE TRIGGER lat_applied BEFORE INSERT OR UPDATE ON lat FOR EACH ROW EXECUTE FUNCTION lat_applied();`);
}

/** utime + stime of a process in seconds (Linux). */
function cpuSeconds(pid) {
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = f.slice(f.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

function percentile(sorted, p) {
  if (sorted.length === 0) return null;
  return sorted[Math.min(sorted.length - 1, Math.ceil(p * sorted.length) - 1)];
}

/** Inserts `rate` rows per second as a transaction every TICK_MS for `seconds`; never bursts. */
async function drive(client, state, run, warm, rate, seconds) {
  const perTick = Math.max(1, Math.round((rate * TICK_MS) / 1000));
  const txnMs = [];
  let rows = 0;
  let skipped = 0;
  const start = nowMs();
  const end = start + seconds * 1000;
  let next = start;
  while (next < end) {
    const t = nowMs();
    await client.query(
      `INSERT INTO lat (id, run, warm, payload) SELECT g, $3, $4, 'payload-' || g || repeat('x', 100) FROM generate_series($1::bigint, $2::bigint) g`,
      [state.nextId, state.nextId + perTick - 1, run, warm]);
    txnMs.push(nowMs() - t);
    state.nextId += perTick;
    rows += perTick;
    next += TICK_MS;
    const now = nowMs();
    if (now < next) await sleep(next - now);
    else while (next + TICK_MS <= now) { next += TICK_MS; skipped++; } // late: drop the missed ticks
  }
  const elapsed = (nowMs() - start) / 1000;
  txnMs.sort((a, b) => a - b);
  return { rows, elapsed, skipped, txnMs };
}

// SYNCLINE_BENCH_NODE_ARGS: flags for the syncline process (e.g. --cpu-prof --cpu-prof-dir=/tmp/prof).
const NODE_ARGS = (process.env.SYNCLINE_BENCH_NODE_ARGS ?? '').split(' ').filter(Boolean);

async function measureStream(broker, dir, round, results) {
  await createDatabases();
  const stream = streamOf(broker, dir, round);
  const metricsPort = await freePort();
  /** Changes published and applied so far, from the process's metrics (one scrape). */
  const counters = async () => {
    const text = await fetch(`http://127.0.0.1:${metricsPort}/metrics`).then((r) => r.text(), () => '');
    const sum = (name) => text.split('\n').filter((l) => l.startsWith(name)).reduce((s, l) => s + Number(l.slice(l.lastIndexOf(' ') + 1)), 0);
    return {
      published: sum('sync_events_published_total'),
      applied: sum('sync_events_applied_total'),
      batches: sum('sync_apply_batch_duration_seconds_count'),
      batchSeconds: sum('sync_apply_batch_duration_seconds_sum'),
    };
  };
  const config = applyOverrides({
    source: { url: SRC, snapshot: 'never', slots: [{ name: SLOT, publication: `${SLOT}_pub`, tables: ['lat'] }] },
    stream: stream.config,
    consumer: { group_id: 'latency' },
    sink: { url: DST },
    dead_letter: { store: 'table' },
    monitoring: { enabled: true, port: metricsPort },
  });
  const file = path.join(dir, `${broker}.yaml`);
  writeFileSync(file, YAML.stringify(config));
  // The process's log (SYNCLINE_LOG_LEVEL, default info) is kept in the OS temp dir when a run fails.
  const logFile = path.join(os.tmpdir(), `syncline-latency-${tag}-${broker}-${round + 1}.log`);
  const log = openSync(logFile, 'w');
  const child = spawn(process.execPath, [...NODE_ARGS, 'dist/cli/main.js', 'run', '-c', file], { stdio: ['ignore', log, log], env: { ...process.env, SYNCLINE_LOG_LEVEL: process.env.SYNCLINE_LOG_LEVEL ?? 'info' } });
  closeSync(log);
  let failed = true;
  let exited = false;
  const exit = new Promise((r) => child.once('exit', (code, signal) => { exited = true; r({ code, signal }); }));
  const client = new pg.Client({ connectionString: SRC });
  await client.connect();
  try {
    const ready = Date.now() + 60_000;
    while ((await query(SRC, 'SELECT count(*)::int AS n FROM pg_replication_slots WHERE slot_name = $1 AND active', [SLOT])).rows[0].n !== 1) {
      if (exited) throw new Error(`syncline run (${broker}) exited before its slot was active`);
      if (Date.now() > ready) throw new Error(`syncline run (${broker}): slot not active after 60 s`);
      await sleep(100);
    }
    // One row through the whole pipeline before any load: consumer groups joined, tables known.
    // Sent again every 2 s: a slot shows active while it is still being created (waiting for
    // the transactions running on the server to end), and a row committed before its
    // consistent point is, rightly, never decoded.
    const probeDeadline = Date.now() + 180_000;
    for (let probe = -1, sent = 0; ; ) {
      if (Date.now() - sent > 2000) {
        await client.query("INSERT INTO lat (id, run, warm, payload) VALUES ($1, -1, true, 'probe')", [probe--]);
        sent = Date.now();
      }
      if ((await query(DST, 'SELECT count(*)::int AS n FROM lat WHERE run = -1')).rows[0].n > 0) break;
      if (exited) throw new Error(`syncline run (${broker}) exited before the first change arrived`);
      if (Date.now() > probeDeadline) {
        const slot = (await query(SRC, 'SELECT confirmed_flush_lsn::text AS confirmed, pg_current_wal_lsn()::text AS current, active FROM pg_replication_slots WHERE slot_name = $1', [SLOT])).rows[0];
        throw new Error(`syncline run (${broker}): no change arrived within 180 s (slot ${JSON.stringify(slot)}, metrics ${JSON.stringify(await counters())}; log: ${logFile})`);
      }
      await sleep(50);
    }
    // Kafka's broker works for a few seconds after a topic is created and a group joined, on
    // the same 2 cores: the first rate measured right away came out 2-3x worse than later ones.
    await sleep(Number(opts.settle) * 1000);
    const state = { nextId: 1 };
    // Changes inserted (and decoded) so far: the probes that arrived plus ids 1 .. nextId-1.
    const probes = (await query(DST, 'SELECT count(*)::int AS n FROM lat WHERE run = -1')).rows[0].n;
    const inserted = () => probes + state.nextId - 1;
    for (let i = 0; i < RATES.length; i++) {
      const rate = RATES[i];
      const run = round * 100 + i;
      if (WARMUP > 0) await drive(client, state, run, true, rate, WARMUP);
      const load0 = loadavg();
      const cpu0 = cpuSeconds(child.pid);
      const before = await counters();
      // SYNCLINE_LATENCY_TRACE=1: every 250 ms, to stderr, how far capture and apply are behind.
      const trace = process.env.SYNCLINE_LATENCY_TRACE === '1' && setInterval(() => {
        void counters().then((c) => console.error(`trace ${broker} ${rate}/s: unpublished ${inserted() - c.published}, unapplied ${inserted() - c.applied}, load ${loadavg()[0]}`));
      }, 250);
      const d = await drive(client, state, run, false, rate, SECONDS);
      if (trace) clearInterval(trace);
      const cpu = cpuSeconds(child.pid) - cpu0;
      const load1 = loadavg();
      // How far behind capture and apply were at the end of the load.
      const atEnd = await counters();
      // Wait for the tail to arrive (polled only now: no query competes with the measured load).
      const expected = (await query(SRC, 'SELECT count(*)::int AS n FROM lat WHERE run = $1', [run])).rows[0].n;
      const deadline = Date.now() + 120_000;
      let arrived = 0;
      while ((arrived = (await query(DST, 'SELECT count(*)::int AS n FROM lat WHERE run = $1', [run])).rows[0].n) < expected) {
        if (exited) throw new Error(`syncline run (${broker}) exited during the measurement`);
        if (Date.now() > deadline) break;
        await sleep(200);
      }
      const lat = (await query(DST, 'SELECT extract(epoch FROM applied_at - src_ts) * 1000 AS ms FROM lat WHERE run = $1 AND NOT warm', [run]))
        .rows.map((r) => Number(r.ms)).sort((a, b) => a - b);
      const line = {
        bench: 'latency',
        stream: broker,
        round: round + 1,
        rate_target: rate,
        rate_achieved: Math.round(d.rows / d.elapsed),
        count: lat.length,
        missing: expected - arrived,
        p50_ms: +percentile(lat, 0.5).toFixed(1),
        p90_ms: +percentile(lat, 0.9).toFixed(1),
        p99_ms: +percentile(lat, 0.99).toFixed(1),
        max_ms: +lat.at(-1).toFixed(1),
        min_ms: +lat[0].toFixed(1),
        source_txn_ms_p50: +percentile(d.txnMs, 0.5).toFixed(2),
        source_txn_ms_p99: +percentile(d.txnMs, 0.99).toFixed(2),
        rows_per_txn: Math.max(1, Math.round((rate * TICK_MS) / 1000)),
        ticks_skipped: d.skipped,
        unpublished_at_end: inserted() - atEnd.published,
        unapplied_at_end: inserted() - atEnd.applied,
        apply_batches: atEnd.batches - before.batches,
        apply_batch_ms_mean: +((1000 * (atEnd.batchSeconds - before.batchSeconds)) / Math.max(1, atEnd.batches - before.batches)).toFixed(1),
        syncline_cpu_pct: Math.round((cpu / d.elapsed) * 100),
        loadavg_before: load0[0],
        loadavg_after: load1[0],
        loadavg_5m: load1[1],
        ...(opts.set.length > 0 ? { overrides: opts.set } : {}),
      };
      results.push(line);
      console.log(JSON.stringify(line));
      await sleep(1000);
    }
    failed = false;
  } finally {
    if (!failed) rmSync(logFile, { force: true });
    await client.end();
    if (!exited) child.kill('SIGTERM');
    await exit;
    await dropDatabases().catch((err) => console.error(`cleanup failed: ${err}`));
    await stream.cleanup().catch((err) => console.error(`cleanup failed: ${err}`));
  }
}

const available = { embedded: true, kafka: await reachable(KAFKA), nats: await reachable(NATS.slice('nats://'.length)) };
const streams = opts.streams ? opts.streams.split(',') : ['embedded', 'kafka', 'nats'].filter((s) => available[s]);
for (const s of ['kafka', 'nats']) if (!opts.streams && !available[s]) console.log(JSON.stringify({ bench: 'latency', stream: s, skipped: 'broker not reachable' }));
const dir = mkdtempSync(path.join(os.tmpdir(), 'syncline-latency-'));
const results = [];
try {
  for (let round = 0; round < REPEAT; round++) {
    for (const broker of streams) await measureStream(broker, dir, round, results);
  }
} finally {
  rmSync(dir, { recursive: true, force: true });
}
