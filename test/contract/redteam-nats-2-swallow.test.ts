/**
 * Red-team (a77a0f3), end to end: a NATS consumer at the tail of its partition whose
 * connection stops carrying what it sends (a half-dead link: the server never sees its pull
 * requests or API calls) for longer than a JetStream API timeout. Its reader repositions at
 * `next`; that reposition's stream lookup times out, and before the fix the retry went to
 * `position`, where the reader was first positioned: once the link is back, the records
 * already handed out were handed out again by the same consumer.
 */
import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { openNatsStream } from '../../src/stream/nats/nats-stream.js';
import { tcpProxy } from '../helpers/tcp-proxy.js';
import { NATS_URL, natsTopicsOfThisFile } from './nats-topics.js';

const created = natsTopicsOfThisFile('The NATS red-team swallow test', 1);

describe('NATS consumer: a link that swallows its requests for a while', () => {
  it('hands no record out twice in one consumer session', async () => {
    const topic = `syncline-redteam-nats-swallow-${randomBytes(4).toString('hex')}`;
    created.push(topic);
    const direct = await openNatsStream({ url: NATS_URL, topic, partitions: 1 });
    const p = await tcpProxy(4222);
    // A long session timeout: the member keeps its lease through the outage (this is about the reader).
    const viaProxy = await openNatsStream({ url: `nats://127.0.0.1:${p.port}`, topic, partitions: 1, fetchBatch: 100, membership: { heartbeatMs: 500, sessionTimeoutMs: 120_000 } });
    try {
      const producer = await direct.producer();
      await producer.publish(Array.from({ length: 200 }, (_, i) => ({ key: `public.t:["${i}"]`, value: Buffer.from(`v${i}`) })));
      const c = await viaProxy.consumer('g');
      const handed: bigint[] = [];
      const pollFor = async (ms: number, until?: () => boolean): Promise<void> => {
        const end = Date.now() + ms;
        while (Date.now() < end && !(until?.() ?? false)) for (const r of await c.poll(100, 100)) handed.push(r.offset);
      };
      await pollFor(10_000, () => handed.length >= 200);
      expect(handed.length).toBe(200);
      // Two JetStream API timeouts (5 s each) and then some.
      p.swallow();
      await pollFor(13_000);
      p.cut();
      await producer.publish(Array.from({ length: 10 }, (_, i) => ({ key: `public.t:["${200 + i}"]`, value: Buffer.from(`v${200 + i}`) })));
      await pollFor(8_000, () => handed.length >= 260);
      expect(handed).toEqual(Array.from({ length: 210 }, (_, i) => BigInt(i)));
      await c.close();
    } finally {
      await viaProxy.close();
      await direct.close();
      await p.close();
    }
  }, 60_000);
});
