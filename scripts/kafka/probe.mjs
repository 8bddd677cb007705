// Exits 0 when a Kafka broker at the given host:port answers a metadata request (used by
// scripts/kafka.sh to wait for startup). Usage: node scripts/kafka/probe.mjs 127.0.0.1:9092
import { Kafka, logLevel } from 'kafkajs';

const broker = process.argv[2] ?? '127.0.0.1:9092';
const kafka = new Kafka({
  clientId: 'syncline-probe',
  brokers: [broker],
  connectionTimeout: 1000,
  requestTimeout: 2000,
  retry: { retries: 0 },
  logLevel: logLevel.NOTHING,
});
const admin = kafka.admin();
try {
  await admin.connect();
  await admin.listTopics();
  await admin.disconnect();
  process.exit(0);
} catch (err) {
  console.error(`no Kafka broker answers on ${broker}: ${err instanceof Error ? err.message : String(err)}`);
  await admin.disconnect().catch(() => undefined);
  process.exit(1);
}
