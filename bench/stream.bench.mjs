#!/usr/bin/env node
// Stream throughput: publish (acknowledged, durable per each broker's contract) and consume
// through the embedded log, Kafka and NATS JetStream, with ~300-byte change records in
// batches of 1000 — the shape capture publishes. Publishes run with `inflight` outstanding
// (1, and capture's default stream.max_in_flight of 8); consumption polls 2000 at a time.
// Prints one JSON line per broker and mode.
//
// Usage: npm run build && node bench/stream.bench.mjs [records] [embedded,kafka,nats]
// Needs a Kafka broker at 127.0.0.1:${KAFKA_PORT:-9092} (bash scripts/kafka.sh start) and
// NATS with JetStream at nats://127.0.0.1:4222.
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Kafka, logLevel } from 'kafkajs';
import { connect } from 'nats';
import { openEmbeddedStream } from '../dist/stream/embedded/embedded-stream.js';
import { openKafkaStream } from '../dist/stream/kafka/kafka-stream.js';
import { openNatsStream } from '../dist/stream/nats/nats-stream.js';
import { partitionStreamName, positionsBucketName } from '../dist/stream/nats/nats-names.js';

const N = Number(process.argv[2] ?? 200_000);
const WHICH = (process.argv[3] ?? 'embedded,kafka,nats').split(',');
const BATCH = 1000;
const PARTITIONS = 6;
const KAFKA = `127.0.0.1:${process.env.KAFKA_PORT ?? 9092}`;
const NATS = 'nats://127.0.0.1:4222';

/** ~300-byte records shaped like capture's change events. */
function makeRecords(n) {
  const out = new Array(n);
  for (let i = 0; i < n; i++) {
    const lsn = `0/${(0x1a2b3c8 + i * 64).toString(16).toUpperCase()}`;
    const key = `public.orders:["${i % 50_000}"]`;
    const value = JSON.stringify({
      source: 'bench', schema: 'public', table: 'orders', op: 'UPDATE', lsn, commit_lsn: lsn, xid: 7000 + (i >> 10), seq: (i % BATCH) + 1,
      commit_ts: '2026-11-26T22:59:01.123456Z', key: { id: String(i % 50_000) },
      payload: { id: String(i % 50_000), customer: `customer-${i % 977}`, status: 'paid', amount: '123.45' },
      _version: String(BigInt(0x1a2b3c8 + i * 64) * 4294967296n + BigInt((i % BATCH) + 1)), _schema_version: 1,
    });
    out[i] = { key, value: Buffer.from(value), id: `${lsn}:${(i % BATCH) + 1}` };
  }
  return out;
}

async function publishAll(producer, records, inflight) {
  const pending = new Set();
  for (let i = 0; i < records.length; i += BATCH) {
    const p = producer.publish(records.slice(i, i + BATCH));
    pending.add(p);
    p.then(() => pending.delete(p), () => undefined);
    if (pending.size >= inflight) await Promise.race(pending);
  }
  await Promise.all(pending);
}

async function consumeAll(consumer, n) {
  let got = 0;
  const deadline = performance.now() + 600_000;
  while (got < n) {
    if (performance.now() > deadline) throw new Error(`consumed ${got} of ${n} within 10 minutes`);
    got += (await consumer.poll(2000, 100)).length;
  }
  return got;
}

function cpuUs(start) {
  const u = process.cpuUsage(start);
  return u.user + u.system;
}

async function run(broker, open, records, inflight) {
  const stream = await open();
  try {
    const producer = await stream.producer();
    // Warm-up (connections, metadata); without ids, so NATS does not deduplicate the real run's first records.
    await producer.publish(records.slice(0, 10).map((r) => ({ key: r.key, value: r.value })));
    let cpu = process.cpuUsage();
    let t = performance.now();
    await publishAll(producer, records, inflight);
    const publishMs = performance.now() - t;
    const publishCpu = cpuUs(cpu);
    await producer.close();

    const consumer = await stream.consumer('bench');
    cpu = process.cpuUsage();
    t = performance.now();
    await consumeAll(consumer, records.length + 10);
    const consumeMs = performance.now() - t;
    const consumeCpu = cpuUs(cpu);
    await consumer.close();
    const bytes = records.reduce((s, r) => s + r.value.length, 0) / records.length;
    console.log(JSON.stringify({
      bench: 'stream', broker, records: records.length, avgValueBytes: Math.round(bytes), batch: BATCH, inflight, partitions: PARTITIONS,
      publishPerSec: Math.round(records.length / (publishMs / 1000)),
      publishMBPerSec: +((records.length * bytes) / 1e6 / (publishMs / 1000)).toFixed(1),
      publishCpuUsPerRecord: +(publishCpu / records.length).toFixed(2),
      consumePerSec: Math.round((records.length + 10) / (consumeMs / 1000)),
      consumeCpuUsPerRecord: +(consumeCpu / records.length).toFixed(2),
    }));
  } finally {
    await stream.close();
  }
}

const records = makeRecords(N);
const cleanups = [];
try {
  for (const inflight of [1, 8]) {
    const topic = () => `syncline-bench-${randomBytes(4).toString('hex')}`;
    if (WHICH.includes('embedded')) {
      const dir = mkdtempSync(path.join(os.tmpdir(), 'syncline-stream-bench-'));
      cleanups.push(async () => rmSync(dir, { recursive: true, force: true }));
      await run('embedded', () => openEmbeddedStream({ path: dir, partitions: PARTITIONS }), records, inflight);
    }
    if (WHICH.includes('kafka')) {
      const t = topic();
      cleanups.push(async () => {
        const admin = new Kafka({ brokers: [KAFKA], logLevel: logLevel.NOTHING }).admin();
        await admin.connect();
        await admin.deleteTopics({ topics: [t] }).catch(() => undefined);
        await admin.disconnect();
      });
      await run('kafka', () => openKafkaStream({ brokers: [KAFKA], topic: t, partitions: PARTITIONS }), records, inflight);
    }
    if (WHICH.includes('nats')) {
      const t = topic();
      cleanups.push(async () => {
        const nc = await connect({ servers: NATS });
        const jsm = await nc.jetstreamManager();
        for (let p = 0; p < PARTITIONS; p++) await jsm.streams.delete(partitionStreamName(t, p)).catch(() => undefined);
        await jsm.streams.delete(`KV_${positionsBucketName(t)}`).catch(() => undefined);
        await nc.close();
      });
      await run('nats', () => openNatsStream({ url: NATS, topic: t, partitions: PARTITIONS }), records, inflight);
    }
  }
} finally {
  for (const c of cleanups) await c().catch((err) => console.error(`cleanup failed: ${err}`));
}
