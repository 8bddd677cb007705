#!/usr/bin/env node
// Encode + decode rate of the stream record formats (src/schema) on changes of a typical
// table: bigint key, int, text, numeric(12,2), double, two timestamptz. Each format runs in
// the same process on the same changes; the typed formats use the local schema store (no
// registry round trips after the first registration, as in steady state with a registry).
// Prints one JSON object.
// Usage: npm run build && node bench/codec.bench.mjs [changes]
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { JsonChangeCodec, SchemaChangeCodec } from '../dist/schema/change-codec.js';
import { LocalSchemaStore } from '../dist/schema/local-schema-store.js';

const N = Number(process.argv[2] ?? 100_000);
const dir = mkdtempSync(join(tmpdir(), 'syncline-codec-bench-'));

const definition = {
  schema: 'public',
  table: 'orders',
  schemaVersion: 1,
  columns: [
    { name: 'id', typeOid: 20, typeMod: -1, key: true },
    { name: 'customer', typeOid: 25, typeMod: -1, key: false },
    { name: 'quantity', typeOid: 23, typeMod: -1, key: false },
    { name: 'amount', typeOid: 1700, typeMod: ((12 << 16) | 2) + 4, key: false },
    { name: 'weight', typeOid: 701, typeMod: -1, key: false },
    { name: 'status', typeOid: 25, typeMod: -1, key: false },
    { name: 'created_at', typeOid: 1184, typeMod: -1, key: false },
    { name: 'updated_at', typeOid: 1184, typeMod: -1, key: false },
  ],
};

const changes = [];
for (let i = 0; i < N; i++) {
  const id = String(1_000_000 + i);
  const sec = String(i % 60).padStart(2, '0');
  changes.push({
    source: 'bench', schema: 'public', table: 'orders', op: i % 10 === 0 ? 'UPDATE' : 'INSERT',
    lsn: `0/${(0x1000000 + i * 64).toString(16).toUpperCase()}`, commit_lsn: `0/${(0x1000000 + i * 64 + 32).toString(16).toUpperCase()}`,
    xid: 1000 + i, seq: 1, commit_ts: `2026-12-04T12:34:${sec}.123456Z`,
    key: { id },
    payload: {
      id, customer: `customer-${i % 997} ${'x'.repeat(40)}`, quantity: String(i % 500), amount: `${i % 100000}.${String(i % 100).padStart(2, '0')}`,
      weight: String((i % 1000) / 7), status: i % 3 === 0 ? 'shipped' : 'pending', created_at: `2026-11-26 12:34:${sec}.123456+00`, updated_at: `2026-12-04 08:00:${sec}.5+00`,
    },
    _version: (BigInt(0x1000000 + i * 64 + 32) * 2n ** 32n + 1n).toString(), _schema_version: 1, tx_last: true,
  });
}

async function run(name, codec) {
  // warm-up (and the first registration)
  for (let i = 0; i < Math.min(N, 5000); i++) await codec.decode((await codec.encode(changes[i], definition)).value);
  const values = new Array(N);
  let bytes = 0;
  const cpu0 = process.cpuUsage();
  let t = process.hrtime.bigint();
  for (let i = 0; i < N; i++) {
    const { value } = await codec.encode(changes[i], definition);
    values[i] = value;
    bytes += value.length;
  }
  const encodeNs = Number(process.hrtime.bigint() - t);
  t = process.hrtime.bigint();
  for (let i = 0; i < N; i++) await codec.decode(values[i]);
  const decodeNs = Number(process.hrtime.bigint() - t);
  const cpu = process.cpuUsage(cpu0);
  return {
    format: name,
    encode_per_s: Math.round((N * 1e9) / encodeNs),
    decode_per_s: Math.round((N * 1e9) / decodeNs),
    encode_decode_per_s: Math.round((N * 1e9) / (encodeNs + decodeNs)),
    us_per_change: Number(((encodeNs + decodeNs) / N / 1000).toFixed(2)),
    // CPU time (user + system) of encode + decode: steadier than the rates on a busy machine.
    cpu_us_per_change: Number(((cpu.user + cpu.system) / N).toFixed(2)),
    bytes_per_record: Math.round(bytes / N),
  };
}

const results = [];
results.push(await run('json', new JsonChangeCodec()));
for (const format of ['avro', 'protobuf', 'json_schema']) {
  results.push(await run(format, new SchemaChangeCodec({ format, store: new LocalSchemaStore(join(dir, `${format}.jsonl`)), topic: 'bench', subjectStrategy: 'topic_record' })));
}
rmSync(dir, { recursive: true, force: true });
console.log(JSON.stringify({ bench: 'codec', changes: N, node: process.version, results }, null, 2));
