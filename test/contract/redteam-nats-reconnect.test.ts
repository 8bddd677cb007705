/**
 * Red-team of the NATS producer's wait for a reconnect (nats-producer.ts): a publish() made
 * while the client is away waits for the Reconnect and is sent then, in call order. What
 * must hold, whatever the outage: the stored records of a partition are a prefix of the
 * records in call order (nothing stored after one that was not), every resolved call's
 * records are stored, every call settles, and close() returns.
 */
import { randomBytes } from 'node:crypto';
import { connect, type NatsConnection } from 'nats';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openNatsStream } from '../../src/stream/nats/nats-stream.js';
import type { OutgoingRecord, StreamProducer } from '../../src/stream/stream.js';
import { tcpProxy, type TcpProxy } from '../helpers/tcp-proxy.js';
import { storedValues } from './nats-stored.js';
import { NATS_URL, natsTopicsOfThisFile } from './nats-topics.js';

const created = natsTopicsOfThisFile('The NATS reconnect red-team test', 1);
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

const records = (tag: string, n: number): OutgoingRecord[] => Array.from({ length: n }, (_, i) => ({ key: `public.t:["${i % 7}"]`, value: Buffer.from(`${tag}-${i}`), id: `0/${tag}:${i}` }));

interface Outcome {
  tag: string;
  recs: OutgoingRecord[];
  state: 'pending' | 'ok' | 'failed';
  code?: string;
}

function track(producer: StreamProducer, tag: string, n: number, out: Outcome[]): Promise<void> {
  const o: Outcome = { tag, recs: records(tag, n), state: 'pending' };
  out.push(o);
  return producer.publish(o.recs).then(
    () => void (o.state = 'ok'),
    (e: { code?: string }) => {
      o.state = 'failed';
      o.code = e.code;
    },
  );
}

/** The invariant: stored is a prefix of the records in call order; every resolved call is in it; every call settled. */
async function check(nc: NatsConnection, topic: string, out: Outcome[]): Promise<string[]> {
  const stored = await storedValues(nc, topic, 0);
  const all = out.flatMap((o) => o.recs.map((r) => r.value.toString()));
  expect(out.filter((o) => o.state === 'pending').map((o) => o.tag)).toEqual([]);
  expect(stored).toEqual(all.slice(0, stored.length));
  const storedSet = new Set(stored);
  for (const o of out) if (o.state === 'ok') for (const r of o.recs) expect(storedSet.has(r.value.toString()), `${o.tag} resolved but ${r.value.toString()} not stored`).toBe(true);
  return stored;
}

describe('NATS producer: publishes made while the client reconnects', () => {
  let nc: NatsConnection;
  let proxy: TcpProxy;
  beforeAll(async () => {
    nc = await connect({ servers: NATS_URL });
    proxy = await tcpProxy(4222);
  });
  afterAll(async () => {
    await proxy?.close();
    await nc?.close();
  });

  const open = async (publishTimeoutMs = 30_000) => {
    const topic = `syncline-rt-reconnect-${randomBytes(4).toString('hex')}`;
    created.push(topic);
    // Create the streams directly, then publish through the proxy.
    await (await openNatsStream({ url: NATS_URL, topic, partitions: 1 })).close();
    const stream = await openNatsStream({ url: `nats://127.0.0.1:${proxy.port}`, topic, partitions: 1, publishTimeoutMs });
    return { topic, stream, producer: await stream.producer() };
  };

  it('S1 idle producer, broker down, calls made meanwhile are stored in call order at the reconnect', async () => {
    const { topic, stream, producer } = await open();
    const out: Outcome[] = [];
    await track(producer, 'warm', 5, out);
    await proxy.down();
    await sleep(200);
    const ps = [track(producer, 'a', 50, out), track(producer, 'b', 50, out), track(producer, 'c', 50, out)];
    await sleep(1000);
    await proxy.up();
    await Promise.all(ps);
    await track(producer, 'd', 10, out);
    await producer.close();
    await stream.close();
    const stored = await check(nc, topic, out);
    expect(out.map((o) => o.state)).toEqual(['ok', 'ok', 'ok', 'ok', 'ok']);
    expect(stored.length).toBe(165);
  }, 60_000);

  it('S2 calls in flight at a cut fail, and the calls made after fail too', async () => {
    const { topic, stream, producer } = await open();
    const out: Outcome[] = [];
    await track(producer, 'warm', 5, out);
    const ps = [track(producer, 'a', 2000, out)];
    proxy.cut();
    ps.push(track(producer, 'b', 10, out));
    await sleep(0);
    ps.push(track(producer, 'c', 10, out));
    await sleep(20);
    ps.push(track(producer, 'd', 10, out));
    await Promise.all(ps);
    await producer.close();
    await stream.close();
    await check(nc, topic, out);
    console.log('S2', out.map((o) => `${o.tag}:${o.state}:${o.code ?? ''}`).join(' '));
  }, 60_000);

  it('S3 an outage longer than the publish timeout fails the waiting calls, nothing of them stored; close returns', async () => {
    const { topic, stream, producer } = await open(1500);
    const out: Outcome[] = [];
    await track(producer, 'warm', 5, out);
    await proxy.down();
    await sleep(100);
    const ps = [track(producer, 'a', 10, out), track(producer, 'b', 10, out)];
    await sleep(2500);
    await Promise.all(ps);
    const later = track(producer, 'c', 10, out);
    await proxy.up();
    await later;
    await sleep(3000);
    const t0 = Date.now();
    await producer.close();
    await stream.close();
    expect(Date.now() - t0).toBeLessThan(1000);
    const stored = await check(nc, topic, out);
    expect(stored.length).toBe(5);
    expect(out.map((o) => o.state)).toEqual(['ok', 'failed', 'failed', 'failed']);
  }, 60_000);

  it('S4 close() while calls wait returns at once and rejects them', async () => {
    const { topic, stream, producer } = await open();
    const out: Outcome[] = [];
    await track(producer, 'warm', 5, out);
    await proxy.down();
    await sleep(100);
    const ps = [track(producer, 'a', 10, out)];
    await sleep(100);
    const t0 = Date.now();
    await producer.close();
    await Promise.all(ps);
    expect(Date.now() - t0).toBeLessThan(1000);
    await proxy.up();
    await stream.close();
    await sleep(500);
    await check(nc, topic, out);
    expect(out.map((o) => o.state)).toEqual(['ok', 'failed']);
  }, 60_000);

  it('S5 flapping broker with a steady stream of calls keeps the prefix invariant', async () => {
    for (let round = 0; round < 2; round++) {
      const { topic, stream, producer } = await open(4000);
      const out: Outcome[] = [];
      const ps: Promise<void>[] = [];
      let stop = false;
      let i = 0;
      const pump = (async () => {
        while (!stop) {
          ps.push(track(producer, `r${round}c${i++}`, 1 + Math.floor(Math.random() * 40), out));
          await sleep(Math.floor(Math.random() * 15));
        }
      })();
      const t0 = Date.now();
      while (Date.now() - t0 < 7000) {
        await sleep(200 + Math.random() * 1500);
        const r = Math.random();
        if (r < 0.4) proxy.cut();
        else if (r < 0.8) {
          await proxy.down();
          await sleep(Math.random() * 2500);
          await proxy.up();
        } else {
          // Cut again right when the client reconnects.
          const before = proxy.connections();
          proxy.cut();
          while (proxy.connections() === before && Date.now() - t0 < 9000) await sleep(1);
          await sleep(Math.random() * 5);
          proxy.cut();
        }
      }
      stop = true;
      await pump;
      const settled = Promise.all(ps);
      await Promise.race([settled, sleep(20_000)]);
      const t1 = Date.now();
      await Promise.race([producer.close(), sleep(20_000)]);
      const closeMs = Date.now() - t1;
      await stream.close();
      console.log(`S5 round ${round}: ${out.length} calls, ok ${out.filter((o) => o.state === 'ok').length}, failed ${out.filter((o) => o.state === 'failed').length} (${[...new Set(out.map((o) => o.code).filter(Boolean))].join(',')}), pending ${out.filter((o) => o.state === 'pending').length}, close ${closeMs} ms`);
      await check(nc, topic, out);
      expect(closeMs).toBeLessThan(15_000);
    }
  }, 240_000);

  it('S6 idle producer, a cut during the reconnect handshake or right after it, calls made meanwhile', async () => {
    for (let round = 0; round < 8; round++) {
      const { topic, stream, producer } = await open(6000);
      const out: Outcome[] = [];
      await track(producer, `w${round}`, 3, out);
      const ps: Promise<void>[] = [];
      await proxy.down();
      await sleep(50);
      ps.push(track(producer, `a${round}`, 20, out));
      const before = proxy.connections();
      await proxy.up();
      ps.push(track(producer, `b${round}`, 20, out));
      while (proxy.connections() === before) await sleep(1);
      const delay = round * 4;
      await sleep(delay);
      proxy.cut();
      ps.push(track(producer, `c${round}`, 20, out));
      await sleep(Math.random() * 50);
      ps.push(track(producer, `d${round}`, 20, out));
      await Promise.race([Promise.all(ps), sleep(20_000)]);
      const t1 = Date.now();
      await Promise.race([producer.close(), sleep(20_000)]);
      const closeMs = Date.now() - t1;
      await stream.close();
      console.log(`S6 round ${round} cut ${delay} ms after connect: ${out.map((o) => `${o.tag}:${o.state}:${o.code ?? ''}`).join(' ')} close ${closeMs} ms`);
      await check(nc, topic, out);
      expect(closeMs).toBeLessThan(15_000);
    }
  }, 300_000);

  it('S7 capture-like: republish from the first unconfirmed call on a fresh producer after each failure; all stored once, in order', async () => {
    const topic = `syncline-rt-reconnect-${randomBytes(4).toString('hex')}`;
    created.push(topic);
    await (await openNatsStream({ url: NATS_URL, topic, partitions: 1 })).close();
    const stream = await openNatsStream({ url: `nats://127.0.0.1:${proxy.port}`, topic, partitions: 1, publishTimeoutMs: 5000 });
    const calls = Array.from({ length: 300 }, (_, i) => records(`k${i}`, 1 + (i % 13)));
    let confirmed = 0;
    let stop = false;
    const chaos = (async () => {
      while (!stop) {
        await sleep(100 + Math.random() * 700);
        const r = Math.random();
        if (r < 0.5) proxy.cut();
        else {
          await proxy.down();
          await sleep(Math.random() * 1500);
          await proxy.up();
        }
      }
    })();
    const t0 = Date.now();
    let restarts = 0;
    while (confirmed < calls.length && Date.now() - t0 < 90_000) {
      const producer = await stream.producer();
      const inflight: Promise<void>[] = [];
      let failed = false;
      for (let i = confirmed; i < calls.length && !failed; i++) {
        const idx = i;
        inflight.push(producer.publish(calls[idx] as OutgoingRecord[]).then(() => void (confirmed = Math.max(confirmed, idx + 1)), () => void (failed = true)));
        if (inflight.length > 4) await inflight.shift();
        await sleep(Math.random() * 10);
      }
      await Promise.all(inflight);
      await producer.close();
      if (failed) restarts++;
    }
    stop = true;
    await chaos;
    await stream.close();
    const stored = await storedValues(nc, topic, 0);
    console.log(`S7 restarts ${restarts}, confirmed ${confirmed}/${calls.length}, stored ${stored.length}`);
    expect(stored).toEqual(calls.flat().slice(0, stored.length).map((r) => r.value.toString()));
    expect(confirmed).toBe(calls.length);
  }, 200_000);

  it('S8 a reconnect whose handshake hangs and times out (extra Disconnect/Reconnect statuses) sends the waiting calls once, in order', async () => {
    const { topic, stream, producer } = await open(15_000);
    const out: Outcome[] = [];
    await track(producer, 'warm', 3, out);
    await proxy.down();
    await sleep(50);
    const ps = [track(producer, 'a', 10, out)];
    proxy.swallow();
    await proxy.up();
    ps.push(track(producer, 'b', 10, out));
    await sleep(4500); // the client's 3 s connect timeout passes
    ps.push(track(producer, 'c', 10, out));
    proxy.cut(); // stop swallowing
    await Promise.all(ps);
    await track(producer, 'd', 10, out);
    await producer.close();
    await stream.close();
    console.log('S8', out.map((o) => `${o.tag}:${o.state}:${o.code ?? ''}`).join(' '));
    await check(nc, topic, out);
  }, 60_000);

  it('S9 a producer opened while the broker is down waits for it', async () => {
    const { topic, stream, producer: first } = await open(10_000);
    await first.close();
    await proxy.down();
    await sleep(100);
    const out: Outcome[] = [];
    const producer = await Promise.race([stream.producer(), sleep(3000).then(() => null)]);
    console.log('S9 producer opened while down:', producer !== null);
    if (producer !== null) {
      const ps = [track(producer, 'a', 10, out), track(producer, 'b', 10, out)];
      await sleep(500);
      await proxy.up();
      await Promise.all(ps);
      await track(producer, 'c', 10, out);
      await producer.close();
    } else await proxy.up();
    await stream.close();
    console.log('S9', out.map((o) => `${o.tag}:${o.state}:${o.code ?? ''}`).join(' '));
    await check(nc, topic, out);
  }, 60_000);
});
