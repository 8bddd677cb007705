/**
 * A NATS consumer whose connection is cut again and again while it reads (deliveries on the
 * wire lost, heartbeats and commits failing until the client reconnects): every record is
 * still handed out, and a partition's records never skip ahead (a restart from the committed
 * position may repeat some).
 */
import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { openNatsStream } from '../../src/stream/nats/nats-stream.js';
import { tcpProxy, type TcpProxy } from '../helpers/tcp-proxy.js';
import { NATS_URL, natsTopicsOfThisFile } from './nats-topics.js';

const url = NATS_URL;
const PARTITIONS = 3;
const created = natsTopicsOfThisFile('The NATS consumer reconnect test', PARTITIONS);

/** A proxy to the NATS server (see tcpProxy), with the URL clients take. */
async function proxy(): Promise<TcpProxy & { url: string }> {
  const p = await tcpProxy(4222);
  return Object.assign(p, { url: `nats://127.0.0.1:${p.port}` });
}

describe('NATS consumer: its connection cut while it reads', () => {
  it('hands every record out and never skips ahead in a partition', async () => {
    const topic = `syncline-contract-nats-creconnect-${randomBytes(4).toString('hex')}`;
    created.push(topic);
    const total = 6000;
    const direct = await openNatsStream({ url, topic, partitions: PARTITIONS });
    const p = await proxy();
    const viaProxy = await openNatsStream({ url: p.url, topic, partitions: PARTITIONS, fetchBatch: 100, bufferRecords: 600, membership: { heartbeatMs: 200, sessionTimeoutMs: 3000 } });
    try {
      const producer = await direct.producer();
      for (let i = 0; i < total; i += 500) await producer.publish(Array.from({ length: 500 }, (_, j) => ({ key: `public.t:["${i + j}"]`, value: Buffer.from(`v${i + j}`) })));
      let c = await viaProxy.consumer('g');
      const seen = new Map<number, Set<bigint>>();
      const problems: string[] = [];
      const last = new Map<number, bigint>();
      const retried = new Set<string>();
      let cuts = 0;
      let nextCut = Date.now() + 300;
      const until = Date.now() + 60_000;
      const count = () => [...seen.values()].reduce((a, s) => a + s.size, 0);
      while (count() < total && Date.now() < until) {
        if (Date.now() >= nextCut && cuts < 10) {
          p.cut();
          cuts++;
          nextCut = Date.now() + 1500;
        }
        let got;
        try {
          got = await c.poll(30, 100);
        } catch (err) {
          // A retriable error (a KV call cut off) is apply's to retry; a final one is not.
          // A retriable error: apply closes the consumer and opens another (pipeline/apply.ts).
          if ((err as { retriable?: boolean }).retriable === true) {
            retried.add(String(err));
            await c.close().catch(() => undefined);
            c = await viaProxy.consumer('g').catch(() => c);
            continue;
          }
          problems.push(`poll: ${String(err)}`);
          break;
        }
        const top = new Map<number, bigint>();
        for (const r of got) {
          const prev = last.get(r.partition);
          if (prev !== undefined && r.offset > prev + 1n) problems.push(`p${r.partition}: ${prev} then ${r.offset}`);
          last.set(r.partition, r.offset);
          top.set(r.partition, r.offset + 1n);
          seen.set(r.partition, (seen.get(r.partition) ?? new Set()).add(r.offset));
        }
        if (top.size > 0) await c.commit(top).catch(() => undefined);
        await new Promise((r) => setTimeout(r, 30)); // a sink's pace: the reading spans several cuts
      }
      if (count() < total) {
        // Where the member stands, for whoever looks into a stall.
        const ci = c as unknown as { readers: Record<string, unknown>[]; membership: { expired(): boolean; held: Set<number>; lastBeat: number }; buffer: { count(p: number): number } };
        console.error('retriable errors', [...retried]);
        console.error('member', Date.now(), 'expired', ci.membership.expired(), 'held', [...ci.membership.held], 'lastBeat', ci.membership.lastBeat);
        for (const r of ci.readers) console.error('reader', r.partition, { active: r.active, want: r.want, next: r.next, position: r.position, pull: r.pull !== null, loop: r.loop !== null, epoch: r.epoch, msgs: (r.msgs as unknown[]).length, buffered: ci.buffer.count(r.partition as number) });
      }
      expect(problems.slice(0, 10)).toEqual([]);
      expect({ count: count(), assigned: c.assignment(), perPartition: [...seen].map(([q, s]) => `${q}:${s.size}`) }).toEqual({ count: total, assigned: [0, 1, 2], perPartition: expect.anything() });
      expect(cuts).toBeGreaterThan(1);
      await c.close();
    } finally {
      await viaProxy.close();
      await direct.close();
      await p.close();
    }
  }, 120_000);
});
