// What the pipeline benchmarks share: one-shot queries, metric totals, polling.
import pg from 'pg';

/** Runs one statement on its own connection. */
export async function query(url, sql, params) {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  try { return await c.query(sql, params); } finally { await c.end(); }
}

/** The sum of a metric's values over its labels. */
export async function counter(metrics, name) {
  const m = await metrics.registry.getSingleMetric(name)?.get();
  return (m?.values ?? []).reduce((s, v) => s + v.value, 0);
}

/** Polls `check` every 20 ms until it holds. */
export async function until(check, timeoutMs = 600_000) {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) { if (await check()) return; await new Promise((r) => setTimeout(r, 20)); }
  throw new Error('benchmark timed out');
}

/**
 * Deletes a run's Kafka topic, or its NATS partition streams and positions bucket: each run
 * writes its changes to a topic of its own, which would otherwise pile up on the broker's disk.
 */
export async function dropBrokerTopic(broker, topic, partitions) {
  if (broker === 'kafka') {
    const { Kafka, logLevel } = await import('kafkajs');
    const admin = new Kafka({ brokers: ['127.0.0.1:9092'], logLevel: logLevel.NOTHING }).admin();
    await admin.connect();
    await admin.deleteTopics({ topics: [topic] }).catch(() => undefined);
    await admin.disconnect();
  } else if (broker === 'nats') {
    const { connect } = await import('nats');
    const { partitionStreamName, positionsBucketName } = await import('../dist/stream/nats/nats-names.js');
    const nc = await connect({ servers: 'nats://127.0.0.1:4222' });
    const jsm = await nc.jetstreamManager();
    for (let p = 0; p < partitions; p++) await jsm.streams.delete(partitionStreamName(topic, p)).catch(() => undefined);
    await jsm.streams.delete(`KV_${positionsBucketName(topic)}`).catch(() => undefined);
    await nc.close();
  }
}
