import path from 'node:path';
import type { SynclineConfig } from '../config/schema.js';
import { hostPort, natsServerUrls, tcpConnect } from '../doctor/stream-checks.js';
import { embeddedStreamExists, openEmbeddedStream } from '../stream/embedded/embedded-stream.js';
import type { Stream } from '../stream/stream.js';

/**
 * Opens the configured stream. The only place that names concrete stream adapters. The broker
 * adapters are imported when used: loading kafkajs and nats costs every process that uses
 * neither (a capture into the embedded stream) a few tenths of a second of start-up.
 */
export async function openStream(config: SynclineConfig, baseDir = process.cwd()): Promise<Stream> {
  const s = config.stream;
  switch (s.broker) {
    case 'embedded':
      return openEmbeddedStream({ path: embeddedStreamPath(config, baseDir), partitions: s.partitions, retentionHours: s.retention_hours });
    case 'kafka': {
      const { openKafkaStream } = await import('../stream/kafka/kafka-stream.js');
      return openKafkaStream({ brokers: kafkaBrokers(config), topic: s.topic, partitions: s.partitions, retentionHours: s.retention_hours });
    }
    case 'nats': {
      const { openNatsStream } = await import('../stream/nats/nats-stream.js');
      return openNatsStream({ url: s.url ?? 'nats://127.0.0.1:4222', topic: s.topic, partitions: s.partitions, retentionHours: s.retention_hours, maxDeliver: s.max_deliver });
    }
  }
}

/**
 * Opens the configured stream unless it was never created: an embedded stream is created by
 * opening it, so for one that is not there yet this says why instead (a string).
 */
export async function openExistingStream(config: SynclineConfig, baseDir = process.cwd()): Promise<Stream | string> {
  if (config.stream.broker === 'embedded') {
    const dir = embeddedStreamPath(config, baseDir);
    if (!(await embeddedStreamExists(dir))) return `no embedded stream at ${dir} yet (created by the first capture)`;
  }
  return openStream(config, baseDir);
}

/** The embedded stream's folder: `stream.path`, relative to `baseDir`. */
export function embeddedStreamPath(config: SynclineConfig, baseDir = process.cwd()): string {
  return path.resolve(baseDir, config.stream.path);
}

/** `stream.brokers`, or a broker on this machine. */
export function kafkaBrokers(config: SynclineConfig): string[] {
  return config.stream.brokers ?? ['127.0.0.1:9092'];
}

/**
 * Whether the configured broker accepts a TCP connection now (one of its addresses or more, within
 * `timeoutMs`); the embedded stream always does. The probe a capture restart's wait sends
 * while the broker is away (see captureWithRestarts): a plain connect, nothing a broker logs
 * as a client.
 */
export async function streamAnswers(config: SynclineConfig, timeoutMs: number): Promise<boolean> {
  const s = config.stream;
  if (s.broker === 'embedded') return true;
  const addresses = s.broker === 'kafka' ? kafkaBrokers(config).map((a) => hostPort(a, 9092)) : natsServerUrls(s.url ?? 'nats://127.0.0.1:4222').map((u) => hostPort(u, 4222));
  const tries = addresses.map(({ host, port }) => tcpConnect(host, port, timeoutMs).then(() => true, () => false));
  return (await Promise.all(tries)).some((up) => up);
}
