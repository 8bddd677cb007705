import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import amqp from 'amqplib';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createPipeline, type ChangeEvent, type SynclineConfigInput } from 'syncline';
import { rabbitMqSink } from '../../examples/rabbitmq-sink.js';
import { transforms } from '../../examples/transform-chain.js';
import { requireListening } from '../contract/broker-check.js';
import { freshDatabase, machinePg15, waitFor, uniqueName } from '../helpers/postgres.js';

const SLOT = uniqueName('syncline_lib11_rmq');
const AMQP_URL = 'amqp://guest:guest@127.0.0.1:5672';
const isBarrier = (m: unknown): boolean => (m as { barrier?: boolean }).barrier === true;

/** examples/rabbitmq-sink.ts (with examples/transform-chain.ts) against the machine's RabbitMQ and PostgreSQL 15. */
describe('example: a custom RabbitMQ sink through createPipeline (real broker)', () => {
  let dir: string;
  let sourceUrl: string;
  let gateUrl: string;
  let source: pg.Client;
  let connection: amqp.ChannelModel;
  let channel: amqp.Channel;
  const exchange = `syncline_lib11_${process.pid}`;
  const queue = `${exchange}_q`;
  const received: ChangeEvent[] = [];

  beforeAll(async () => {
    await requireListening('127.0.0.1', 5672, 'RabbitMQ must run on 127.0.0.1:5672 (guest/guest)');
    const server = await machinePg15();
    sourceUrl = await freshDatabase(server, 'syncline_lib11_rmq_source');
    gateUrl = await freshDatabase(server, 'syncline_lib11_rmq_gate');
    source = new pg.Client({ connectionString: sourceUrl });
    await source.connect();
    await source.query('CREATE TABLE users (id integer PRIMARY KEY, email text, national_id text, tenant text); CREATE TABLE audit_log (id serial PRIMARY KEY, what text)');
    dir = await mkdtemp(path.join(os.tmpdir(), 'syncline-lib11-rmq-'));
    connection = await amqp.connect(AMQP_URL);
    channel = await connection.createChannel();
    await channel.assertExchange(exchange, 'topic', { durable: true });
    await channel.assertQueue(queue, { durable: false, autoDelete: true });
    await channel.bindQueue(queue, exchange, '#');
    await channel.consume(queue, (m) => {
      if (m) received.push(JSON.parse(m.content.toString()) as ChangeEvent);
    }, { noAck: true });
  });

  afterAll(async () => {
    await channel?.deleteExchange(exchange).catch(() => undefined);
    await connection?.close().catch(() => undefined);
    await source?.query('SELECT pg_drop_replication_slot($1) FROM pg_replication_slots WHERE slot_name = $1 AND NOT active', [SLOT]).catch(() => undefined);
    await source?.end();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  const config = (): SynclineConfigInput => ({
    source: { url: sourceUrl, slots: [{ name: SLOT, publication: `${SLOT}_pub`, tables: ['users', 'audit_log'] }], snapshot: 'never' },
    stream: { broker: 'embedded', path: path.join(dir, 'stream'), partitions: 2 },
    consumer: { group_id: 'rmq', batch_wait_ms: 5, retry: { backoff_base_ms: 10, backoff_max_ms: 100 } },
    dead_letter: { url: gateUrl },
    monitoring: { enabled: false },
  });

  it('publishes each transformed change once, with confirms; a full replay publishes nothing again', async () => {
    const pipeline = createPipeline({ config: config(), role: 'run', transforms, sink: rabbitMqSink({ url: AMQP_URL, exchange, gateStoreUrl: gateUrl }) });
    await pipeline.start();
    try {
      await source.query("INSERT INTO users SELECT g, 'u' || g || '@x.org', 'N' || g, CASE WHEN g = 5 THEN 'test' ELSE 'acme' END FROM generate_series(1, 10) g");
      await source.query("INSERT INTO audit_log (what) VALUES ('login'), ('logout')");
      // In one batch with the insert, the update would be folded into it (one message).
      await waitFor('9 messages', async () => received.length >= 9, 30_000);
      await source.query('UPDATE users SET email = NULL WHERE id = 1');
      await source.query('DELETE FROM users WHERE id = 2');
      // 9 inserts (tenant test filtered) + 1 update; the delete and audit_log are dropped.
      await waitFor('10 messages', async () => received.length >= 10, 30_000);
      await waitFor('positions past the dropped delete', async () => pipeline.status().dropped === 4, 10_000);
    } finally {
      await pipeline.stop();
    }
    expect(received).toHaveLength(10);
    expect(received.every((c) => c.schema === 'crm' && c.table === 'contacts' && 'user_id' in c.key)).toBe(true);
    const first = received.find((c) => c.key.user_id === '3');
    expect(first?.payload).toMatchObject({ user_id: '3', email: '***', tenant: 'acme' });
    expect(first?.payload?.national_id).toMatch(/^[0-9a-f]{64}$/);
    expect(received.some((c) => c.key.user_id === '5')).toBe(false);
    expect(received.find((c) => c.op === 'UPDATE')?.payload?.email).toBeNull();

    // Replay the whole stream through a fresh apply: the gate in PostgreSQL knows every version.
    const replay = createPipeline({ config: config(), role: 'apply', from: 'beginning', transforms, sink: rabbitMqSink({ url: AMQP_URL, exchange, gateStoreUrl: gateUrl }) });
    await replay.start();
    try {
      await waitFor('the replay to pass every change', async () => replay.status().dropped === 4 && replay.status().stale >= 9, 30_000);
    } finally {
      await replay.stop();
    }
    // Insert and update of row 1 may share a batch and fold into one (stale) change.
    expect(replay.status()).toMatchObject({ applied: 0, dropped: 4, deadLettered: 0 });
    expect(replay.status().stale).toBeGreaterThanOrEqual(9);
    // Published now, this message queues behind every delivery the broker confirmed: once it
    // arrives, any delivery of the replay would have too.
    channel.publish(exchange, 'test.barrier', Buffer.from(JSON.stringify({ barrier: true })));
    await waitFor('the barrier message', () => received.some(isBarrier), 10_000, 10);
    expect(received.filter((m) => !isBarrier(m))).toHaveLength(10);
  });
});
