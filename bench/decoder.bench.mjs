#!/usr/bin/env node
// CPU cost per change from replication frame to serialized stream record: frame parse,
// pgoutput decode, change-event build, partition key and JSON encoding.
// Usage: npm run build && node bench/decoder.bench.mjs [changes]
import { PgoutputDecoder } from '../dist/pgoutput/decoder.js';
import { parseReplicationFrame } from '../dist/pgoutput/replication-frames.js';
import { ChangeBuilder } from '../dist/pipeline/change-builder.js';
import { partitionKeyOf } from '../dist/core/change.js';

const N = Number(process.argv[2] ?? 1_000_000);

function frame(body) {
  const b = Buffer.alloc(25 + body.length);
  b[0] = 0x77;
  body.copy(b, 25);
  return b;
}
function cstr(s) { return Buffer.concat([Buffer.from(s), Buffer.from([0])]); }
function i16(n) { const b = Buffer.alloc(2); b.writeInt16BE(n); return b; }
function i32(n) { const b = Buffer.alloc(4); b.writeInt32BE(n); return b; }
function i64(n) { const b = Buffer.alloc(8); b.writeBigInt64BE(BigInt(n)); return b; }
function text(v) { const s = Buffer.from(v); return Buffer.concat([Buffer.from('t'), i32(s.length), s]); }

const relation = frame(Buffer.concat([
  Buffer.from('R'), i32(16384), cstr('public'), cstr('orders'), Buffer.from('d'), i16(5),
  Buffer.from([1]), cstr('id'), i32(20), i32(-1),
  Buffer.from([0]), cstr('customer'), i32(25), i32(-1),
  Buffer.from([0]), cstr('amount'), i32(1700), i32(-1),
  Buffer.from([0]), cstr('status'), i32(25), i32(-1),
  Buffer.from([0]), cstr('created_at'), i32(1184), i32(-1),
]));
const begin = frame(Buffer.concat([Buffer.from('B'), i64(0x1000000), i64(820000000000000), i32(1234)]));
const inserts = [];
for (let i = 0; i < 1000; i++) {
  inserts.push(frame(Buffer.concat([
    Buffer.from('I'), i32(16384), Buffer.from('N'), i16(5),
    text(String(1000000 + i)), text(`customer-${i} ${'x'.repeat(90)}`), text(`${i}.25`), text('shipped'), text('2026-11-26 12:34:56.123456+00'),
  ])));
}
const avgBytes = inserts.reduce((s, b) => s + b.length, 0) / inserts.length;

function run(n) {
  const decoder = new PgoutputDecoder();
  const builder = new ChangeBuilder('bench');
  const out = [];
  let bytes = 0;
  for (const f of [relation, begin]) {
    const fr = parseReplicationFrame(f);
    builder.handle(decoder.decode(f, fr.dataOffset), fr.dataStart, out);
  }
  for (let i = 0; i < n; i++) {
    const f = inserts[i % inserts.length];
    const fr = parseReplicationFrame(f);
    builder.handle(decoder.decode(f, fr.dataOffset), fr.dataStart, out);
    if (out.length >= 2000) {
      for (const e of out) bytes += partitionKeyOf(e).length + Buffer.byteLength(JSON.stringify(e));
      out.length = 0;
    }
  }
  return bytes;
}

run(50_000); // warm up the JIT
const t0 = process.hrtime.bigint();
const cpu0 = process.cpuUsage();
run(N);
const wallNs = Number(process.hrtime.bigint() - t0);
const cpu = process.cpuUsage(cpu0);
const cpuUs = cpu.user + cpu.system;
console.log(JSON.stringify({
  bench: 'decoder',
  changes: N,
  frame_bytes_avg: Math.round(avgBytes),
  us_per_change_cpu: +(cpuUs / N).toFixed(3),
  us_per_change_wall: +(wallNs / 1000 / N).toFixed(3),
  changes_per_second: Math.round(N / (wallNs / 1e9)),
}));
