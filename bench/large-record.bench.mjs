#!/usr/bin/env node
// One large record (a row with a TOASTed value of several MB) through NATS and Kafka: publish
// each alone, then consume them, checking every byte. On NATS a record over the server's
// max_payload goes through the topic's object store (src/stream/nats/claim-check.ts); on
// Kafka it is a plain record (topics syncline creates take 64 MiB). Prints one JSON line per broker.
//
// Usage: npm run build && node bench/large-record.bench.mjs [bytes, default 10 MiB] [records, default 5]
// Needs NATS with JetStream at nats://127.0.0.1:4222 and Kafka at 127.0.0.1:9092.
import { randomBytes } from 'node:crypto';
import { Kafka, logLevel } from 'kafkajs';
import { connect } from 'nats';
import { openKafkaStream } from '../dist/stream/kafka/kafka-stream.js';
import { objectsBucketName, partitionStreamName, positionsBucketName } from '../dist/stream/nats/nats-names.js';
import { openNatsStream } from '../dist/stream/nats/nats-stream.js';

const SIZE = Number(process.argv[2] ?? 10 * 1024 * 1024);
const N = Number(process.argv[3] ?? 5);

async function drop(broker, topic) {
  if (broker === 'kafka') {
    const admin = new Kafka({ brokers: ['127.0.0.1:9092'], logLevel: logLevel.NOTHING }).admin();
    await admin.connect();
    await admin.deleteTopics({ topics: [topic] }).catch(() => undefined);
    await admin.disconnect();
    return;
  }
  const nc = await connect({ servers: 'nats://127.0.0.1:4222' });
  const jsm = await nc.jetstreamManager();
  for (const name of [partitionStreamName(topic, 0), `KV_${positionsBucketName(topic)}`, `OBJ_${objectsBucketName(topic)}`]) await jsm.streams.delete(name).catch(() => undefined);
  await nc.close();
}

for (const broker of ['nats', 'kafka']) {
  const topic = `syncline-bench-large-${randomBytes(3).toString('hex')}`;
  const stream = broker === 'nats' ? await openNatsStream({ url: 'nats://127.0.0.1:4222', topic, partitions: 1 }) : await openKafkaStream({ brokers: ['127.0.0.1:9092'], topic, partitions: 1 });
  try {
    const producer = await stream.producer();
    const value = randomBytes(SIZE);
    let t = performance.now();
    const c0 = process.cpuUsage();
    for (let i = 0; i < N; i++) await producer.publish([{ key: `public.t:["${i}"]`, value, id: `0/${i}` }]);
    const publishMs = (performance.now() - t) / N;
    const publishCpu = process.cpuUsage(c0);
    await producer.close();
    const consumer = await stream.consumer('bench');
    t = performance.now();
    const c1 = process.cpuUsage();
    let got = 0;
    while (got < N) {
      for (const r of await consumer.poll(10, 1000)) {
        if (!r.value.equals(value)) throw new Error(`${broker}: record ${r.offset} differs`);
        got++;
      }
    }
    const consumeMs = (performance.now() - t) / N;
    const consumeCpu = process.cpuUsage(c1);
    await consumer.close();
    const ms = (u) => +((u.user + u.system) / 1000 / N).toFixed(1);
    console.log(JSON.stringify({ bench: 'large-record', broker, bytes: SIZE, records: N, publishMsPerRecord: +publishMs.toFixed(1), publishCpuMsPerRecord: ms(publishCpu), consumeMsPerRecord: +consumeMs.toFixed(1), consumeCpuMsPerRecord: ms(consumeCpu) }));
  } finally {
    await stream.close();
    await drop(broker, topic);
  }
}
