import type { ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { connect, type NatsConnection, type ObjectInfo } from 'nats';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runPipeline } from '../../src/api/run-pipeline.js';
import { openStream } from '../../src/compose/stream.js';
import { parseConfig } from '../../src/config/load.js';
import type { SynclineConfig } from '../../src/config/schema.js';
import type { ChangeEvent } from '../../src/core/change.js';
import { Metrics } from '../../src/metrics/metrics.js';
import { natsName, objectsBucketName, partitionStreamName } from '../../src/stream/nats/nats-names.js';
import { requireListening } from '../contract/broker-check.js';
import { dropBrokerTopic } from '../helpers/broker-topics.js';
import { captureFixture, kill9, startCli, waitForSlotToConfirm, type CaptureFixture } from '../helpers/cli-process.js';
import { waitForEqualTables } from '../helpers/compare-rows.js';
import { freshDatabase, machinePg15, slotStreaming, sourceAndTarget, testLogger, uniqueName, waitFor } from '../helpers/postgres.js';

const NATS = 'nats://127.0.0.1:4222';
const KAFKA = '127.0.0.1:9092';
const MB = 1024 * 1024;
const DDL = 'CREATE TABLE docs (id integer PRIMARY KEY, body text, data bytea, n integer)';

/** `bytes` random (incompressible) characters of text, made by the server. */
const bigText = (bytes: number): string => `(SELECT string_agg(md5(random()::text), '') FROM generate_series(1, ${bytes / 32}))`;
/** `bytes` random bytes, made by the server. */
const bigBytea = (bytes: number): string => `(SELECT decode(string_agg(md5(random()::text), ''), 'hex') FROM generate_series(1, ${bytes / 16}))`;

/** What the target must hold byte for byte: every row's values as digests (and sizes). */
async function digests(c: pg.ClientBase): Promise<string[]> {
  const { rows } = await c.query<{ r: string }>(
    "SELECT concat_ws(' ', id, md5(body), length(body), md5(data), length(data), n) AS r FROM docs ORDER BY id",
  );
  return rows.map((x) => x.r);
}

/**
 * Source transactions around a 3 MB text value and a 5 MB bytea value: both inserted, both
 * updated to another large value, one updated in another column only (its value unchanged
 * and not sent), small rows before, between and after them. Returns the number of changes.
 */
async function writeLargeRows(source: pg.ClientBase): Promise<number> {
  await source.query("INSERT INTO docs (id, body, n) VALUES (1, 'small one', 1), (2, 'small two', 2)");
  await source.query(`INSERT INTO docs (id, body, n) VALUES (10, ${bigText(3 * MB)}, 10)`);
  await source.query("INSERT INTO docs (id, body, n) VALUES (3, 'small three', 3)");
  await source.query(`INSERT INTO docs (id, data, n) VALUES (11, ${bigBytea(5 * MB)}, 11)`);
  await source.query("UPDATE docs SET body = 'small one again' WHERE id = 1");
  await source.query('BEGIN');
  await source.query(`UPDATE docs SET body = ${bigText(3 * MB)} WHERE id = 10`);
  await source.query(`UPDATE docs SET data = ${bigBytea(5 * MB)} WHERE id = 11`);
  await source.query("INSERT INTO docs (id, body, n) VALUES (4, 'small four', 4)");
  await source.query('COMMIT');
  await source.query('UPDATE docs SET n = 100 WHERE id = 10');
  await source.query("INSERT INTO docs (id, body, n) VALUES (5, 'small five', 5)");
  return 11;
}

/** LSN text `X/Y` as a number to compare. */
const lsnOf = (s: string): bigint => {
  const [hi, lo] = s.split('/') as [string, string];
  return (BigInt(`0x${hi}`) << 32n) | BigInt(`0x${lo}`);
};

/**
 * Reads every record of the stream through syncline's own consumer (a group of its own) and
 * checks that each partition holds the table's changes once each, in commit order, with the
 * large values whole. Returns the changes read.
 */
async function readBack(config: SynclineConfig, expected: number): Promise<ChangeEvent[]> {
  const stream = await openStream(config);
  try {
    const ends = await stream.endOffsets();
    const consumer = await stream.consumer(`inspect_${randomBytes(3).toString('hex')}`);
    const seen = new Map<number, bigint>();
    const changes: { partition: number; change: ChangeEvent }[] = [];
    try {
      await waitFor('every record read back', async () => {
        for (const r of await consumer.poll(1000, 500)) {
          seen.set(r.partition, r.offset + 1n);
          const change = JSON.parse(r.value.toString('utf8')) as ChangeEvent;
          if (change.table === 'docs') changes.push({ partition: r.partition, change });
        }
        return [...ends].every(([p, end]) => (seen.get(p) ?? 0n) >= end);
      }, 60_000, 0);
    } finally {
      await consumer.close();
    }
    for (const p of new Set(changes.map((c) => c.partition))) {
      const order = changes.filter((c) => c.partition === p).map((c) => [lsnOf(c.change.commit_lsn), c.change.seq] as const);
      const sorted = [...order].sort((a, b) => (a[0] === b[0] ? a[1] - b[1] : a[0] < b[0] ? -1 : 1));
      expect(order).toEqual(sorted);
    }
    const ids = changes.map((c) => `${c.change.commit_lsn}:${c.change.seq}`);
    expect(new Set(ids).size).toBe(ids.length);
    expect(ids).toHaveLength(expected);
    const big = changes.filter((c) => ['10', '11'].includes(String(c.change.key.id)) && c.change.unchanged === undefined);
    for (const { change } of big) {
      const value = String(change.payload?.body ?? change.payload?.data ?? '');
      expect(value.length).toBeGreaterThanOrEqual(3 * MB);
    }
    return changes.map((c) => c.change);
  } finally {
    await stream.close();
  }
}

for (const broker of ['kafka', 'nats'] as const) {
  /**
   * DESIGN promise 4: bad input never stops the line, and a large row is not even bad input.
   * Before, a change record over the broker's limit (Kafka's 1 MB max.message.bytes, NATS's
   * 1 MB max_payload) ended capture for good (KAFKA_MESSAGE_TOO_LARGE, NATS_MAX_PAYLOAD_EXCEEDED)
   * at every restart.
   */
  describe(`rows larger than the ${broker} record limit go end to end (syncline run)`, () => {
    const topic = `syncline-oversize-${broker}-${randomBytes(4).toString('hex')}`;
    const slot = uniqueName(`syncline_oversize_${broker}`);
    let source: pg.Client;
    let target: pg.Client;
    let config: SynclineConfig;
    let stop: () => Promise<void>;
    let failed: Promise<never>;

    beforeAll(async () => {
      await requireListening('127.0.0.1', broker === 'kafka' ? 9092 : 4222, broker === 'kafka' ? 'start Kafka: bash scripts/kafka.sh start' : 'start NATS with JetStream');
      const pair = await sourceAndTarget(await machinePg15(), `syncline_oversize_${broker}`);
      ({ source, target } = pair);
      await source.query(DDL);
      await target.query(DDL);
      const stream = broker === 'kafka' ? `{ broker: kafka, brokers: ['${KAFKA}'], topic: ${topic}, partitions: 2 }` : `{ broker: nats, url: '${NATS}', topic: ${topic}, partitions: 2 }`;
      config = parseConfig(
        `source:
  url: ${pair.sourceUrl}
  slots: [{ name: ${slot}, publication: syncline_oversize_pub, tables: [docs] }]
  snapshot: never
stream: ${stream}
consumer: { group_id: oversize }
sink: { url: ${pair.targetUrl} }
monitoring: { enabled: false }
`,
        {},
      );
      const ctl = new AbortController();
      const running = runPipeline(config, 'run', await testLogger(), ctl.signal, new Metrics());
      // A part that fails ends the run: the test fails with its error instead of a timeout.
      failed = running.then(() => Promise.reject(new Error('the pipeline stopped')));
      failed.catch(() => undefined);
      stop = async () => {
        ctl.abort();
        await running.catch(() => undefined);
      };
      await waitFor('slot streaming', () => slotStreaming(source, slot), 60_000);
    }, 120_000);

    afterAll(async () => {
      await stop?.();
      await source?.end();
      await target?.end();
      await dropBrokerTopic(broker, topic, 2).catch(() => undefined);
    });

    it('a 3 MB text and a 5 MB bytea, inserted and updated, arrive byte for byte, in order with the small rows around them', async () => {
      const changes = await writeLargeRows(source);
      await Promise.race([waitForEqualTables(source, target, ['docs'], 120_000), failed]);
      expect(await digests(target)).toEqual(await digests(source));
      await readBack(config, changes);
    }, 180_000);
  });
}

/**
 * On NATS a large record's value goes to the topic's object store before its record is
 * published: capture killed (kill -9) after the put and before the record is stored must
 * neither lose the change nor leave it twice (two records, or two objects) after the restart.
 * The window is held open by taking the partition's subjects away from its stream (every
 * publish there is refused with 503, which capture retries); the restarted capture gives them
 * back (its start checks the streams).
 */
describe('NATS: capture killed between putting a large value and publishing its record', () => {
  const topic = `syncline-oversize-kill-${randomBytes(4).toString('hex')}`;
  const slot = uniqueName('syncline_oversize_kill');
  const streamName = partitionStreamName(topic, 0);
  let fx: CaptureFixture | undefined;
  let target: pg.Client;
  let nc: NatsConnection;
  let child: ChildProcess | undefined;

  beforeAll(async () => {
    await requireListening('127.0.0.1', 4222, 'start NATS with JetStream');
    const targetUrl = await freshDatabase(await machinePg15(), 'syncline_oversize_kill_t');
    target = new pg.Client({ connectionString: targetUrl });
    await target.connect();
    await target.query(DDL);
    fx = await captureFixture('syncline_oversize_kill', DDL, (url) => `source:
  url: ${url}
  slots: [{ name: ${slot}, publication: syncline_oversize_kill_pub, tables: [docs] }]
  snapshot: never
stream: { broker: nats, url: '${NATS}', topic: ${topic}, partitions: 1 }
consumer: { group_id: oversize, retry: { backoff_base_ms: 100, backoff_max_ms: 500 } }
sink: { url: ${targetUrl} }
monitoring: { enabled: false }
`);
    nc = await connect({ servers: NATS });
  }, 60_000);

  afterAll(async () => {
    child?.kill('SIGKILL');
    await target?.end();
    await nc?.close();
    await fx?.close();
    await dropBrokerTopic('nats', topic, 1).catch(() => undefined);
  });

  it('loses and doubles nothing', async () => {
    const { source, dir, configFile } = fx as CaptureFixture;
    const jsm = await nc.jetstreamManager();
    const lastSeq = async (): Promise<number> => (await jsm.streams.info(streamName)).state.last_seq;
    child = startCli(path.join(dir, 'capture.log'), 'capture', '-c', configFile);
    await waitFor('slot streaming', () => slotStreaming(source, slot), 60_000);
    await source.query("INSERT INTO docs (id, body, n) VALUES (1, 'small one', 1)");
    await waitFor('the first record stored', async () => (await lastSeq()) === 1, 30_000);

    // Publishes to the partition are refused from now on (no stream takes its subjects).
    const info = await jsm.streams.info(streamName);
    await jsm.streams.update(streamName, { ...info.config, subjects: [`${natsName(topic)}_held.0`] });
    await source.query(`INSERT INTO docs (id, data, n) VALUES (11, ${bigBytea(5 * MB)}, 11)`);
    await source.query("INSERT INTO docs (id, body, n) VALUES (2, 'small two', 2)");
    const objects = `OBJ_${objectsBucketName(topic)}`;
    const objectMessages = async (): Promise<number> => (await jsm.streams.info(objects).catch(() => null))?.state.messages ?? 0;
    const listed = async (): Promise<ObjectInfo[]> => {
      const os = await nc.jetstream().views.os(objectsBucketName(topic));
      return os.list();
    };
    // The put is complete once the object is listed (its meta message follows all its chunks).
    await waitFor('the value put in the object store', async () => (await objectMessages()) > 0 && (await listed()).length > 0, 60_000, 20);
    // Capture keeps trying the refused publish meanwhile (503, retriable), finding its object in place.
    await new Promise((resolve) => setTimeout(resolve, 1500));
    await kill9(child);
    expect(await lastSeq()).toBe(1);
    const before = await listed();
    expect(before).toHaveLength(1);
    // 5 MB of bytea is a JSON record of over 10 MB: its chunks of 128 KiB and a meta message, nothing else.
    expect(before[0]?.size).toBeGreaterThan(10 * MB);
    expect(await objectMessages()).toBe((before[0]?.chunks ?? 0) + 1);
    // Other bytes under its name (as a put of another value would leave them): the restarted
    // capture must replace them, not take them.
    await (await nc.jetstream().views.os(objectsBucketName(topic))).putBlob({ name: before[0]?.name ?? '' }, Buffer.from('not the value'));

    child = startCli(path.join(dir, 'capture.log'), 'capture', '-c', configFile);
    await waitForSlotToConfirm(source, slot, 60_000);
    expect(await lastSeq()).toBe(3);
    // The record in the middle names the object and carries nothing itself; the last is the small row after it.
    const middle = await jsm.streams.getMessage(streamName, { seq: 2 });
    expect(middle.data.length).toBe(0);
    const name = middle.header.get('Syncline-Object');
    expect(name).not.toBe('');
    const last = JSON.parse(Buffer.from((await jsm.streams.getMessage(streamName, { seq: 3 })).data).toString('utf8')) as ChangeEvent;
    expect(String(last.key.id)).toBe('2');
    // One object, and only its own chunks.
    const after = await listed();
    expect(after.map((o) => o.name)).toEqual([name]);
    expect(await objectMessages()).toBe((after[0]?.chunks ?? 0) + 1);
    await kill9(child);
    child = undefined;

    const apply = startCli(path.join(dir, 'apply.log'), 'apply', '-c', configFile);
    try {
      await waitForEqualTables(source, target, ['docs'], 120_000);
      expect(await digests(target)).toEqual(await digests(source));
    } finally {
      await kill9(apply);
    }
  }, 240_000);
});
