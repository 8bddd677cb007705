import { randomBytes } from 'node:crypto';
import { connect } from 'nats';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openDeadLetterQueue } from '../../src/compose/dead-letters.js';
import { openStream } from '../../src/compose/stream.js';
import { runApply } from '../../src/compose/apply.js';
import { parseConfig } from '../../src/config/load.js';
import { partitionKeyOf, type ChangeEvent } from '../../src/core/change.js';
import { Metrics } from '../../src/metrics/metrics.js';
import { natsName, partitionStreamName, positionsBucketName } from '../../src/stream/nats/nats-names.js';
import { requireListening } from '../contract/broker-check.js';
import { freshDatabase, machinePg15, testLogger, waitFor } from '../helpers/postgres.js';

const NATS = 'nats://127.0.0.1:4222';
const topic = `syncline-maxdeliver-${randomBytes(4).toString('hex')}`;

function change(id: number, seq: number): ChangeEvent {
  return {
    source: 'src', schema: 'public', table: 't', op: 'INSERT', lsn: '0/10', commit_lsn: '0/10', xid: 1, seq,
    commit_ts: new Date().toISOString(), key: { id: String(id) }, payload: { id: String(id), v: `v${id}` },
    _version: String((0x10n << 32n) | BigInt(seq)), _schema_version: 1,
  };
}

/**
 * The apply side of NATS max_deliver: a record the stream hands out marked (every reader
 * died on it, see test/contract/nats.contract.test.ts for the counting) is dead-lettered
 * with MAX_DELIVER_EXCEEDED instead of applied, and apply goes on with the next one.
 */
describe('NATS max_deliver: the exhausted record goes to the dead-letter queue', () => {
  let target: pg.Client;
  let targetUrl: string;

  beforeAll(async () => {
    await requireListening('127.0.0.1', 4222, 'Start NATS with JetStream: nats-server -js -a 127.0.0.1 -p 4222');
    targetUrl = await freshDatabase(await machinePg15(), 'syncline_maxdeliver_target');
    target = new pg.Client({ connectionString: targetUrl });
    await target.connect();
    await target.query('CREATE TABLE t (id integer PRIMARY KEY, v text)');
  });

  afterAll(async () => {
    await target?.end();
    const nc = await connect({ servers: NATS });
    const jsm = await nc.jetstreamManager();
    await jsm.streams.delete(partitionStreamName(topic, 0)).catch(() => undefined);
    await jsm.streams.delete(`KV_${positionsBucketName(topic)}`).catch(() => undefined);
    await nc.close();
  });

  it('parks the record that killed every reader and applies the rest', async () => {
    const config = parseConfig(
      `source: { name: src, url: 'postgres://unused/x', slots: [{ name: s, publication: p }] }
stream: { broker: nats, url: '${NATS}', topic: ${topic}, partitions: 1, max_deliver: 2 }
consumer: { group_id: g }
sink: { url: '${targetUrl}' }
monitoring: { enabled: false }
`,
      {},
    );
    const stream = await openStream(config);
    try {
      const producer = await stream.producer();
      await producer.publish([change(1, 1), change(2, 2)].map((c) => ({ key: partitionKeyOf(c), value: Buffer.from(JSON.stringify(c)) })));
      await producer.close();
      // Two lone deliveries of offset 0 already ended with a dead reader.
      const nc = await connect({ servers: NATS });
      const kv = await nc.jetstream().views.kv(positionsBucketName(topic));
      await kv.put(`${natsName('g')}.delivery.0`, JSON.stringify({ offset: '0', count: 6, singles: 1, handed: 1 }));
      await nc.close();

      const ctl = new AbortController();
      const running = runApply(config, stream, new Metrics(), await testLogger(), ctl.signal);
      try {
        await waitFor('row 2 applied', async () => (await target.query('SELECT count(*)::int AS n FROM t WHERE id = 2')).rows[0]?.n === 1, 30_000);
      } finally {
        ctl.abort();
        await running;
      }
      expect((await target.query('SELECT count(*)::int AS n FROM t WHERE id = 1')).rows[0]?.n).toBe(0);
      const dlq = openDeadLetterQueue(config);
      await dlq?.prepare();
      const entries = (await dlq?.list({})) ?? [];
      await dlq?.close();
      expect(entries).toHaveLength(1);
      expect(entries[0]).toMatchObject({ errorCode: 'MAX_DELIVER_EXCEEDED', rowKey: '["1"]', offset: 0n });
      expect(entries[0]?.error).toMatch(/delivered 7 times/);
    } finally {
      await stream.close();
    }
  }, 60_000);
});
