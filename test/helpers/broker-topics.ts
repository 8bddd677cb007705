import { Kafka, logLevel } from 'kafkajs';
import { connect } from 'nats';
import { objectsBucketName, partitionStreamName, positionsBucketName } from '../../src/stream/nats/nats-names.js';

/**
 * Deletes a test's Kafka topic, or its NATS partition streams, positions bucket and object store: the
 * brokers outlive the suite, and every run's topics would pile up on their disks.
 */
export async function dropBrokerTopic(broker: 'kafka' | 'nats', topic: string, partitions: number): Promise<void> {
  if (broker === 'kafka') {
    const admin = new Kafka({ brokers: ['127.0.0.1:9092'], logLevel: logLevel.NOTHING }).admin();
    await admin.connect();
    await admin.deleteTopics({ topics: [topic] }).catch(() => undefined);
    await admin.disconnect();
    return;
  }
  const nc = await connect({ servers: 'nats://127.0.0.1:4222' });
  const jsm = await nc.jetstreamManager();
  for (let p = 0; p < partitions; p++) await jsm.streams.delete(partitionStreamName(topic, p)).catch(() => undefined);
  await jsm.streams.delete(`KV_${positionsBucketName(topic)}`).catch(() => undefined);
  await jsm.streams.delete(`OBJ_${objectsBucketName(topic)}`).catch(() => undefined);
  await nc.close();
}
