/**
 * The NATS producer when its connection dies with a publish on the wire: the bytes in the
 * dead socket are lost, the client reconnects, and the server stores what is published after
 * the reconnect (nats.js drops what is published while it is disconnected). A publish (X)
 * that never reached the server must not let a later one (Y) be stored: capture republishes
 * everything after the slot's confirmed position (X, then Y, deduplicated by id), and X
 * would land after Y — a row's older change applied after its newer one.
 *
 * A TCP proxy between the client and the shared server drops what the client writes for a
 * moment and then cuts the connection.
 */
import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { openNatsStream } from '../../src/stream/nats/nats-stream.js';
import type { OutgoingRecord, StreamRecord } from '../../src/stream/stream.js';
import { tcpProxy, type TcpProxy } from '../helpers/tcp-proxy.js';
import { NATS_URL, natsTopicsOfThisFile } from './nats-topics.js';

const url = NATS_URL;
const created = natsTopicsOfThisFile('The NATS producer reconnect test', 1);

/** A proxy to the NATS server (see tcpProxy), with the URL clients take. */
async function proxy(): Promise<TcpProxy & { url: string }> {
  const p = await tcpProxy(4222);
  return Object.assign(p, { url: `nats://127.0.0.1:${p.port}` });
}

const KEY = 'public.t:["1"]';
const records = (tag: string, n: number): OutgoingRecord[] => Array.from({ length: n }, (_, i) => ({ key: KEY, value: Buffer.from(`${tag}${i}`), id: `0/${tag}:${i}` }));

describe('NATS producer: a connection lost with a publish on the wire', () => {
  it('stores nothing published after the lost one, so republishing both keeps their order', async () => {
    const topic = `syncline-contract-nats-reconnect-${randomBytes(4).toString('hex')}`;
    created.push(topic);
    const p = await proxy();
    const viaProxy = await openNatsStream({ url: p.url, topic, partitions: 1, publishTimeoutMs: 10000 });
    const direct = await openNatsStream({ url, topic, partitions: 1 });
    try {
      const producer = await viaProxy.producer();
      await producer.publish(records('w', 1));
      const x = records('x', 10);
      const y = records('y', 10);
      p.swallow();
      const sentX = producer.publish(x).then(() => 'stored', () => 'rejected'); // written into a socket that never delivers it
      await new Promise((r) => setTimeout(r, 200));
      p.cut();
      // Capture keeps publishing: the next batch goes out once the client has reconnected
      // (nats.js drops what is published while it is disconnected), X still unanswered.
      const reconnects = Date.now() + 10_000;
      while (p.connections() < 2 && Date.now() < reconnects) await new Promise((r) => setTimeout(r, 20));
      await new Promise((r) => setTimeout(r, 200));
      // Y is stored and acknowledged, or refused: either way capture republishes it after X.
      await producer.publish(y).catch(() => undefined);
      expect(await sentX).toBe('rejected');

      // Capture's restart: a new producer republishes everything not confirmed, in order.
      const again = await direct.producer();
      await again.publish(x);
      await again.publish(y);
      await again.close();

      const consumer = await direct.consumer('g');
      const got: StreamRecord[] = [];
      const until = Date.now() + 10_000;
      while (got.length < 21 && Date.now() < until) got.push(...(await consumer.poll(100, 200)));
      await consumer.close();
      expect(got.map((r) => r.value.toString())).toEqual(['w0', ...x.map((r) => r.value.toString()), ...y.map((r) => r.value.toString())]);
    } finally {
      await viaProxy.close();
      await direct.close();
      await p.close();
    }
  }, 60_000);

  it('an idle producer keeps publishing after a reconnect', async () => {
    const topic = `syncline-contract-nats-reconnect-${randomBytes(4).toString('hex')}`;
    created.push(topic);
    const p = await proxy();
    const viaProxy = await openNatsStream({ url: p.url, topic, partitions: 1, publishTimeoutMs: 10_000 });
    try {
      const producer = await viaProxy.producer();
      await producer.publish(records('a', 3));
      p.cut();
      const reconnects = Date.now() + 10_000;
      while (p.connections() < 2 && Date.now() < reconnects) await new Promise((r) => setTimeout(r, 20));
      await new Promise((r) => setTimeout(r, 200));
      await producer.publish(records('b', 3));
      expect(await viaProxy.endOffsets()).toEqual(new Map([[0, 6n]]));
    } finally {
      await viaProxy.close();
      await p.close();
    }
  }, 30_000);
});
