#!/usr/bin/env node
// Capture's own CPU per change, without PostgreSQL: pre-built pgoutput frames (the workload of
// bench:peers — 1,000-row transactions of ~200-byte inserts into one 6-column table) are fed
// to the real Capture, which decodes, builds, serializes and publishes them into a real
// embedded stream (fdatasync per batch) with the metrics subscribed, as `syncline capture`
// does. The process's CPU time (user + system) from the first frame to the last durable
// batch, per change, is steadier than any figure of a whole process next to a busy server.
//
// Usage: npm run build && node bench/capture-path.bench.mjs [changes=300000] [rounds=3] [dist folder...]
// Each dist folder (default ./dist; e.g. /work/main/dist for a before/after) is measured
// `rounds` times, alternating, each round in a fresh child process; prints one JSON line per
// folder with the median and every round's figures.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const HERE = path.dirname(fileURLToPath(import.meta.url));

async function measure(dist, n) {
  const load = (p) => import(pathToFileURL(path.join(dist, p)).href);
  const [{ Capture }, { openEmbeddedStream }, { Events }, { Metrics }, { silentLogger }] = await Promise.all([
    load('pipeline/capture.js'), load('stream/embedded/embedded-stream.js'), load('core/events.js'), load('metrics/metrics.js'), load('log/logger.js'),
  ]);
  const dir = mkdtempSync(path.join(os.tmpdir(), 'syncline-capture-path-'));
  const { PerformanceObserver } = await import('node:perf_hooks');
  let gcMs = 0;
  const gcObserver = new PerformanceObserver((list) => { for (const e of list.getEntries()) gcMs += e.duration; });
  try {
    const stream = await openEmbeddedStream({ path: path.join(dir, 'stream'), partitions: 6, retentionHours: 24 });
    const producer = await stream.producer();
    const events = new Events();
    const metrics = new Metrics();
    metrics.subscribe(events);
    const warm = Math.min(100_000, n);
    const total = warm + n;
    const source = new FrameSource(total);
    let published = 0;
    let started;
    let cpu0;
    let done;
    const finished = new Promise((r) => (done = r));
    events.on('capture:batch:published', ({ changes }) => {
      published += changes;
      // The first `warm` changes let the JIT settle; the measured part starts after them.
      if (started === undefined && published >= warm) {
        globalThis.gc?.();
        started = process.hrtime.bigint();
        cpu0 = process.cpuUsage();
        gcMs = 0;
        gcObserver.observe({ entryTypes: ['gc'] });
      }
      if (published >= total) done();
    });
    const capture = new Capture(source, producer, events, silentLogger(), {
      source: 'bench', spillDir: path.join(dir, 'spill'), batchSize: 2000, batchWaitMs: 5, maxInFlight: 8, statusIntervalMs: 10_000,
      startLsn: 0n, ignoredSchemas: ['syncline'], primaryKeys: new Map([['public.bench', ['id']]]),
    });
    const stop = new AbortController();
    const running = capture.run(stop.signal);
    await finished;
    const cpu = process.cpuUsage(cpu0);
    const seconds = Number(process.hrtime.bigint() - started) / 1e9;
    gcObserver.disconnect();
    stop.abort();
    await running;
    await producer.close();
    await stream.close();
    const measured = published - warm;
    const cpuSeconds = (cpu.user + cpu.system) / 1e6;
    return { changes: measured, rate: Math.round(measured / seconds), cpu_per_change_us: +((cpuSeconds * 1e6) / measured).toFixed(2), system_share: +(cpu.system / 1e6 / cpuSeconds).toFixed(3), gc_share: +(gcMs / 1000 / cpuSeconds).toFixed(3) };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * The replication connection, replayed from memory: one transaction's frames are built once;
 * each transaction copies them into a fresh buffer (as a socket read would) with its own
 * positions, and hands them out 256 per turn of the event loop as views of that buffer, as
 * pg-protocol hands out CopyData payloads. pause() holds delivery until resume().
 */
class FrameSource {
  constructor(changes) {
    this.changes = changes;
    this.paused = false;
    this.wake = undefined;
    this.closed = false;
  }

  async start(onData) {
    const TXN = 1000;
    const ROW = 200n;
    onData(frame(0n, Buffer.concat([
      Buffer.from('R'), i32(16384), cstr('public'), cstr('bench'), Buffer.from('d'), i16(6),
      Buffer.from([1]), cstr('id'), i32(20), i32(-1),
      Buffer.from([0]), cstr('customer'), i32(25), i32(-1),
      Buffer.from([0]), cstr('amount'), i32(1700), i32(-1),
      Buffer.from([0]), cstr('status'), i32(25), i32(-1),
      Buffer.from([0]), cstr('qty'), i32(23), i32(-1),
      Buffer.from([0]), cstr('created_at'), i32(1184), i32(-1),
    ])));
    // The template: BEGIN, TXN inserts, COMMIT; positions patched per transaction.
    const ts = 850_000_000_000_000n;
    const frames = [frame(0n, Buffer.concat([Buffer.from('B'), i64(0), i64(ts), i32(0)]))];
    for (let g = 1; g <= TXN; g++) {
      frames.push(frame(0n, Buffer.concat([
        Buffer.from('I'), i32(16384), Buffer.from('N'), i16(6),
        text(String(1_000_000 + g)), text(`customer-${1_000_000 + g}${'x'.repeat(90)}`), text(`${g % 10000}.25`), text('shipped'), text(String(g % 17)), text('2026-12-03 10:11:12.123456+00'),
      ])));
    }
    frames.push(frame(0n, Buffer.concat([Buffer.from('C'), Buffer.from([0]), i64(0), i64(0), i64(ts)])));
    const template = Buffer.concat(frames);
    const starts = [];
    let at = 0;
    for (const f of frames) {
      starts.push(at);
      at += f.length;
    }
    starts.push(at);
    let lsn = 0x16000000n;
    for (let done = 0; done < this.changes && !this.closed; done += TXN) {
      const buf = Buffer.from(template);
      const commitLsn = lsn + ROW * BigInt(TXN + 1);
      buf.writeBigUInt64BE(commitLsn, 25 + 1); // BEGIN finalLsn
      buf.writeUInt32BE(1000 + done / TXN, 25 + 17); // xid
      for (let i = 0; i < frames.length; i++) {
        const pos = lsn + ROW * BigInt(i);
        buf.writeBigUInt64BE(i === frames.length - 1 ? commitLsn : pos, (starts[i] ?? 0) + 1);
      }
      const c = starts[frames.length - 1] + 25;
      buf.writeBigUInt64BE(commitLsn, c + 2);
      buf.writeBigUInt64BE(commitLsn + 48n, c + 10);
      for (let i = 0; i < frames.length; i++) {
        while (this.paused && !this.closed) await new Promise((r) => (this.wake = r));
        if (this.closed) return;
        onData(buf.subarray(starts[i], starts[i + 1]));
        if (i % 256 === 255) await new Promise((r) => setImmediate(r));
      }
      await new Promise((r) => setImmediate(r));
      lsn = commitLsn + 48n;
    }
    // Streams until closed, as a replication connection does.
    await new Promise((r) => (this.ended = r));
  }

  acknowledge() {}
  pause() { this.paused = true; }
  resume() {
    this.paused = false;
    const w = this.wake;
    this.wake = undefined;
    w?.();
  }

  async close() {
    this.closed = true;
    this.resume();
    this.ended?.();
  }
}

function frame(lsn, body) {
  const b = Buffer.alloc(25 + body.length);
  b[0] = 0x77;
  b.writeBigUInt64BE(lsn, 1);
  b.writeBigUInt64BE(lsn, 9);
  body.copy(b, 25);
  return b;
}
function cstr(s) { return Buffer.concat([Buffer.from(s), Buffer.from([0])]); }
function i16(n) { const b = Buffer.alloc(2); b.writeInt16BE(n); return b; }
function i32(n) { const b = Buffer.alloc(4); b.writeInt32BE(n); return b; }
function i64(n) { const b = Buffer.alloc(8); b.writeBigInt64BE(BigInt(n)); return b; }
function text(v) { const s = Buffer.from(v); return Buffer.concat([Buffer.from('t'), i32(s.length), s]); }

// Last: the classes above are initialized by now.
await main();

async function main() {
  if (process.env.CAPTURE_PATH_CHILD) {
    const result = await measure(process.env.CAPTURE_PATH_CHILD, Number(process.argv[2]));
    process.stdout.write(`${JSON.stringify(result)}\n`);
  } else {
    const N = Number(process.argv[2] ?? 300_000);
    const rounds = Number(process.argv[3] ?? 3);
    const dists = process.argv.length > 4 ? process.argv.slice(4).map((d) => path.resolve(d)) : [path.join(HERE, '..', 'dist')];
    const runs = new Map(dists.map((d) => [d, []]));
    for (let r = 0; r < rounds; r++) {
      for (const d of dists) {
        const out = execFileSync(process.execPath, ['--expose-gc', fileURLToPath(import.meta.url), String(N)], { env: { ...process.env, CAPTURE_PATH_CHILD: d }, encoding: 'utf8' });
        runs.get(d).push(JSON.parse(out.trim().split('\n').pop()));
      }
    }
    const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
    for (const [d, rs] of runs) {
      console.log(JSON.stringify({
        bench: 'capture-path',
        dist: d,
        changes: N,
        cpu_per_change_us: median(rs.map((r) => r.cpu_per_change_us)),
        rate: median(rs.map((r) => r.rate)),
        system_share: median(rs.map((r) => r.system_share)),
      gc_share: median(rs.map((r) => r.gc_share)),
        rounds: rs.map((r) => `${r.cpu_per_change_us}us/${r.rate}/s`).join(' '),
        loadavg: os.loadavg().map((x) => +x.toFixed(2)).join(' '),
      }));
    }
  }
}
