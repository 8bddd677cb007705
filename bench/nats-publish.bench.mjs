#!/usr/bin/env node
// NATS JetStream publishing as capture does it (200k × 330 B records over 6 partitions, calls
// of 1,000, 8 in flight), printing the CPU per record of this process and of nats-server
// (from /proc: the server must run on this machine) — the server's CPU is what bounds capture
// on NATS. Pass another build's dist/ to compare builds in one sitting (run them alternately).
// Usage: npm run build && node bench/nats-publish.bench.mjs [records] [distDir] [natsUrl]
import { execSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { connect } from 'nats';

const N = Number(process.argv[2] ?? 200_000);
const DIST = path.resolve(process.argv[3] ?? new URL('../dist', import.meta.url).pathname);
const URL_ = process.argv[4] ?? 'nats://127.0.0.1:4222';
const PARTITIONS = 6;
const { openNatsStream } = await import(pathToFileURL(path.join(DIST, 'stream/nats/nats-stream.js')).href);
const serverPid = Number(execSync('pgrep -x nats-server').toString().trim().split('\n')[0]);
const serverCpu = () => { const f = readFileSync(`/proc/${serverPid}/stat`, 'utf8').split(') ')[1].split(' '); return (Number(f[11]) + Number(f[12])) / 100; };

const topic = `bench-nats-publish-${process.pid}`;
const stream = await openNatsStream({ url: URL_, topic, partitions: PARTITIONS });
const producer = await stream.producer();
const value = Buffer.alloc(330, 120);
const s0 = serverCpu();
const c0 = process.cpuUsage();
const t0 = process.hrtime.bigint();
const inFlight = new Set();
for (let i = 0; i < N; i += 1000) {
  const records = Array.from({ length: Math.min(1000, N - i) }, (_, j) => ({ key: `public.bench:["${i + j}"]`, value, id: `0/1${i}:${j}` }));
  const p = producer.publish(records).then(() => inFlight.delete(p));
  inFlight.add(p);
  if (inFlight.size >= 8) await Promise.race(inFlight);
}
await Promise.all(inFlight);
const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
const server = serverCpu() - s0;
const own = process.cpuUsage(c0);
const stored = [...(await stream.endOffsets()).values()].reduce((a, b) => a + b, 0n);
console.log(JSON.stringify({ bench: 'nats-publish', dist: DIST, records: N, stored: Number(stored), records_per_s: Math.round(N / seconds), producer_cpu_us_per_record: +((own.user + own.system) / N).toFixed(2), server_cpu_us_per_record: +((server * 1e6) / N).toFixed(2), loadavg: readFileSync('/proc/loadavg', 'utf8').split(' ')[0] }));
await producer.close();
await stream.close();
const nc = await connect({ servers: URL_ });
const jsm = await nc.jetstreamManager();
for (let p = 0; p < PARTITIONS; p++) await jsm.streams.delete(`${topic}_p${p}`).catch(() => undefined);
await jsm.streams.delete(`KV_${topic}_positions`).catch(() => undefined);
await nc.close();
