/**
 * Red team 2: two pipelines whose dead-letter queues share a store (`dead_letter.url` of one
 * ops database for a webhook and a mysql pipeline; fan-in, where every source's queue defaults
 * to the one postgres sink's; the default dead-letter topic `db-changes.dlq` on one Kafka).
 * Before, the queue ignored whose entry it was: the mysql pipeline's INSERT of acct 9100 was
 * dead-lettered BLOCKED_BY_EARLIER behind the webhook pipeline's poison of its own acct 9100,
 * and `syncline dlq replay -c mysql.yaml --id <that entry>` wrote the webhook pipeline's change
 * into MySQL and removed it from the webhook's queue (never delivered there). Each pipeline
 * now sees, holds rows behind, counts, replays and purges only the entries of its own source.
 */
import { randomBytes } from 'node:crypto';
import { Kafka, logLevel } from 'kafkajs';
import pg from 'pg';
import { afterAll, describe, expect, it } from 'vitest';
import type { DeadLetterQueue } from '../../src/dlq/dead-letter-queue.js';
import { PostgresDeadLetterQueue } from '../../src/dlq/postgres-dead-letter-queue.js';
import { TopicDeadLetterQueue } from '../../src/dlq/topic-dead-letter-queue.js';
import { openKafkaStream } from '../../src/stream/kafka/kafka-stream.js';
import { ChangeFactory } from '../../src/testing/sink-contract.js';
import { freshDatabase, machinePg15 } from '../helpers/postgres.js';

const brokers = [process.env.SYNCLINE_TEST_KAFKA ?? '127.0.0.1:9092'];
const topics: string[] = [];
afterAll(async () => {
  if (topics.length === 0) return;
  const admin = new Kafka({ brokers, logLevel: logLevel.NOTHING }).admin();
  await admin.connect();
  await admin.deleteTopics({ topics }).catch(() => undefined);
  await admin.disconnect();
});

const stores: [string, () => Promise<{ open: (source: string) => DeadLetterQueue; legacy?: () => Promise<void> }>][] = [
  [
    'PostgreSQL table',
    async () => {
      const url = await freshDatabase(await machinePg15(), 'rt2_dlq');
      return {
        open: (source) => new PostgresDeadLetterQueue(url, 'syncline', source),
        // An entry of a layout before the scoping (no source) is everyone's, as it was.
        legacy: async () => {
          const c = new pg.Client({ connectionString: url });
          await c.connect();
          try {
            await c.query(`INSERT INTO syncline.dead_letter (source, table_name, row_key, raw, error, error_code, attempts, stream_partition, stream_offset) VALUES ('', '', '', 'old', 'bad', 'UNDECODABLE', 1, 3, 1)`);
          } finally {
            await c.end();
          }
        },
      };
    },
  ],
  [
    'Kafka topic',
    async () => {
      const topic = `rt2-dlq-${randomBytes(4).toString('hex')}`;
      topics.push(topic);
      return { open: (source) => new TopicDeadLetterQueue(() => openKafkaStream({ brokers, topic, partitions: 1, compacted: true }), topic, source) };
    },
  ],
];

describe.each(stores)('red team 2: a dead-letter store shared by two pipelines (%s)', (_name, make) => {
  it('each pipeline holds, lists, counts and removes only its own entries', async () => {
    const store = await make();
    const a = store.open('pipeline_a');
    const b = store.open('pipeline_b');
    try {
      await a.prepare();
      await b.prepare();
      const poison = new ChangeFactory('public', 'pipeline_a').insert('acct', '9100', 100, 'poison');
      await a.add([{ change: poison, error: 'refused', errorCode: 'WEBHOOK_400', attempts: 1, partition: 0, offset: 5n }]);
      await a.add([{ change: undefined, raw: 'garbage a', error: 'bad', errorCode: 'UNDECODABLE', attempts: 1, partition: 1, offset: 7n }]);

      expect([...(await b.blockedRows())]).toEqual([]);
      expect(await b.list({})).toEqual([]);
      expect((await b.depth()).count).toBe(0);
      const mine = await a.list({});
      expect(mine.map((e) => e.raw ?? e.change?.payload?.v)).toEqual(['garbage a', 'poison']);
      expect(await b.remove(mine.map((e) => e.id))).toBe(0);
      expect((await a.list({})).length).toBe(2);
      expect([...(await a.blockedRows())]).toEqual(['public.acct\u0000["9100"]']);
      expect((await a.depth()).count).toBe(2);
      if (store.legacy) {
        // Undecodable records of both pipelines at the same stream position are two entries.
        await b.add([{ change: undefined, raw: 'garbage b', error: 'bad', errorCode: 'UNDECODABLE', attempts: 1, partition: 1, offset: 7n }]);
        expect((await b.list({})).map((e) => e.raw)).toEqual(['garbage b']);
        await store.legacy();
        expect((await a.depth()).count).toBe(3);
        expect((await b.depth()).count).toBe(2);
      }
    } finally {
      await a.close();
      await b.close();
    }
  });
});
