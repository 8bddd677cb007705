/**
 * Red team of src/stream/nats/fast-parser.ts against bytes a real nats-server writes:
 * 1. records every byte nats-server sends on a connection doing what the NATS stream does
 *    (JetStream pulls answered with deliveries, 100 heartbeats, 404, 408, 409 statuses,
 *    PubAcks, headers, payloads larger than a read, max-delivered subscriptions, -ERR) and
 *    feeds the recording to nats.js's Parser and to the fast parser cut into reads in many
 *    ways: the same events;
 * 2. a partition reader whose socket reads are re-cut at random offsets by a proxy (and its
 *    connection cut mid-frame now and then): every record in order, byte for byte.
 */
import { randomBytes } from 'node:crypto';
import net from 'node:net';
import { AckPolicy, DeliverPolicy, StorageType, connect, createInbox, headers, nanos, type NatsConnection } from 'nats';
import { Parser, type ParserEvent } from 'nats/lib/nats-base-client/parser.js';
import { describe, expect, it } from 'vitest';
import { FastParser } from '../../src/stream/nats/fast-parser.js';
import { PullInbox } from '../../src/stream/nats/pull-inbox.js';
import { startReader } from './nats-reader-host.js';
import { requireListening } from './broker-check.js';

interface Seen {
  kind: number;
  subject?: string;
  reply?: string | undefined;
  sid?: number;
  hdr?: number;
  size?: number;
  data?: string;
}
const hex = (b: Uint8Array | undefined): string | undefined => (b === undefined ? undefined : Buffer.from(b).toString('hex'));

function recording(fast: boolean): { parser: Parser; events: Seen[] } {
  const events: Seen[] = [];
  const parser = new Parser({
    push: (e: ParserEvent) => {
      const m = e.msg;
      events.push(m === undefined ? { kind: e.kind, data: hex(e.data) } : { kind: e.kind, subject: hex(m.subject), reply: hex(m.reply), sid: m.sid, hdr: m.hdr, size: m.size, data: hex(e.data) });
    },
  });
  if (fast) expect(FastParser.install({ protocol: { parser } } as unknown as NatsConnection)).toBe(true);
  return { parser, events };
}

function feedAt(parser: Parser, bytes: Buffer, cuts: number[]): string | undefined {
  let from = 0;
  try {
    for (const c of [...cuts, bytes.length]) {
      if (c > from) parser.parse(Buffer.from(bytes.subarray(from, c)));
      from = Math.max(from, c);
    }
  } catch (err) {
    return String(err);
  }
  return undefined;
}

/** A proxy to nats-server that records what the server sends; optionally re-cuts it into small, spaced writes. */
async function proxy(opts: { chop?: boolean; cutsInBigFrames?: number } = {}) {
  let bigCuts = opts.cutsInBigFrames ?? 0;
  let midFrameCuts = 0;
  const fromServer: Buffer[] = [];
  const sockets = new Set<net.Socket>();
  const server = net.createServer((client) => {
    client.setNoDelay(true);
    const upstream = net.connect(4222, '127.0.0.1');
    sockets.add(client).add(upstream);
    client.on('data', (d) => upstream.write(d));
    let queue: Promise<void> = Promise.resolve();
    upstream.on('data', (d: Buffer) => {
      fromServer.push(Buffer.from(d));
      if (!opts.chop) {
        client.write(d);
        return;
      }
      queue = queue.then(async () => {
        let at = 0;
        // A read larger than 32 KiB is (part of) a large frame: now and then the connection drops halfway through it.
        const stopAt = bigCuts > 0 && d.length > 32_768 && Math.random() < 0.5 ? (bigCuts--, midFrameCuts++, d.length >> 1) : -1;
        while (at < d.length) {
          if (stopAt >= 0 && at >= stopAt) {
            client.destroy();
            return;
          }
          const n = 1 + Math.floor(Math.random() * (Math.random() < 0.3 ? 16 : 3000));
          if (client.destroyed) return;
          client.write(d.subarray(at, at + n));
          at += n;
          if (Math.random() < 0.5) await new Promise((r) => setImmediate(r));
        }
      });
    });
    const end = (): void => {
      client.destroy();
      upstream.destroy();
      sockets.delete(client);
      sockets.delete(upstream);
    };
    client.on('error', end).on('close', end);
    upstream.on('error', end).on('close', end);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as net.AddressInfo).port;
  return {
    url: `nats://127.0.0.1:${port}`,
    bytes: () => Buffer.concat(fromServer),
    midFrameCuts: () => midFrameCuts,
    cut: () => {
      for (const s of sockets) s.destroy();
    },
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise((r) => server.close(() => r(undefined)));
    },
  };
}

/** What a raw client gets from nats-server for a PUB over max_payload and an unknown operation: -ERR lines. */
async function rawErrors(): Promise<Buffer> {
  const chunks: Buffer[] = [];
  const s = net.connect(4222, '127.0.0.1');
  s.on('data', (d) => chunks.push(Buffer.from(d)));
  await new Promise((r) => s.once('connect', r));
  s.write('CONNECT {"verbose":true,"headers":true,"protocol":1}\r\nPING\r\nSUB rtfp.x 1\r\nPUB rtfp.x 2\r\nhi\r\nHPUB rtfp.x 12 14\r\nNATS/1.0\r\n\r\nhi\r\nPUB rtfp.x 99999999\r\n');
  await new Promise((r) => setTimeout(r, 500));
  s.destroy();
  return Buffer.concat(chunks);
}

describe('rtfp: the fast parser on what nats-server really sends', () => {
  it('same events as nats.js for every cut of a recorded JetStream session', async () => {
    await requireListening('127.0.0.1', 4222, 'rtfp needs nats-server on 4222');
    const p = await proxy();
    const nc = await connect({ servers: p.url });
    const jsm = await nc.jetstreamManager();
    const js = nc.jetstream();
    const stream = `rtfp_${randomBytes(4).toString('hex')}`;
    await jsm.streams.add({ name: stream, subjects: [`${stream}.>`], storage: StorageType.Memory, max_msg_size: -1 });
    try {
      for (let i = 0; i < 120; i++) {
        const h = headers();
        h.set('k', `key-${i}`);
        const size = i % 40 === 3 ? 200_000 : i % 5 === 0 ? 0 : (i * 37) % 900;
        await js.publish(`${stream}.p`, randomBytes(size), i % 2 === 0 ? { headers: h } : undefined);
      }
      await jsm.consumers.add(stream, { durable_name: 'rtfp', ack_policy: AckPolicy.All, deliver_policy: DeliverPolicy.All, ack_wait: nanos(60_000) });
      const got: number[] = [];
      const inbox = new PullInbox(nc, stream, 'rtfp', { delivered: (d) => got.push(d.seq), readDone: () => undefined });
      while (got.length < 120) await inbox.pull(50, 300);
      expect(await inbox.pull(10, 300)).toEqual({ received: 0, answered: true }); // 408
      inbox.close();
      // 404 (no_wait), 100 idle heartbeats, 409 (consumer deleted under a waiting pull).
      const raw = createInbox();
      const statuses: string[] = [];
      const sub = nc.subscribe(raw, { callback: (_e, m) => statuses.push(`${m.headers?.code} ${m.headers?.description}`) });
      const next = `$JS.API.CONSUMER.MSG.NEXT.${stream}.rtfp`;
      nc.publish(next, JSON.stringify({ batch: 5, no_wait: true }), { reply: raw });
      nc.publish(next, JSON.stringify({ batch: 5, expires: 1_200_000_000, idle_heartbeat: 200_000_000 }), { reply: raw });
      await new Promise((r) => setTimeout(r, 700));
      await jsm.consumers.delete(stream, 'rtfp');
      await new Promise((r) => setTimeout(r, 300));
      // A subscription that unsubscribes after 3 of 10 messages arriving in one read.
      const few = createInbox();
      let fewGot = 0;
      nc.subscribe(few, { max: 3, callback: () => fewGot++ });
      await nc.flush();
      for (let i = 0; i < 10; i++) nc.publish(few, `m${i}`);
      await nc.flush();
      sub.unsubscribe();
      expect(statuses.some((s) => s.startsWith('404'))).toBe(true);
      expect(statuses.some((s) => s.startsWith('100'))).toBe(true);
      expect(statuses.some((s) => s.startsWith('409'))).toBe(true);
      expect(fewGot).toBe(3);
      // Through the fast parser all along.
      expect(FastParser.readsFast(nc)).toBe(true);
    } finally {
      await jsm.streams.delete(stream).catch(() => undefined);
      await nc.close();
      await p.close();
    }
    const session = p.bytes();
    const errors = await rawErrors();
    expect(errors.toString('latin1')).toContain('-ERR');
    let compared = 0;
    // Kept cheap here (a single cut every 997 bytes, reads of 1, 7, 64 and 1000 bytes); the
    // red-team run compared 308,438 patterns (every cut, reads of 1..64, pairs) in 500 s.
    for (const [bytes, thorough] of [[session, false], [errors, true]] as const) {
      const reference = recording(false);
      expect(feedAt(reference.parser, bytes, [])).toBeUndefined();
      const check = (cuts: number[]): void => {
        const fast = recording(true);
        const err = feedAt(fast.parser, bytes, cuts);
        compared++;
        if (err !== undefined || fast.events.length !== reference.events.length) throw new Error(`cuts ${cuts.join(',')}: ${err ?? ''} ${fast.events.length} vs ${reference.events.length}`);
        expect(fast.events).toEqual(reference.events);
      };
      // Every single cut (every 7th in the whole session), reads of every size 1..64, every pair of cuts in the first 600 bytes.
      for (let c = 1; c < bytes.length; c += thorough ? 1 : 997) check([c]);
      for (const n of thorough ? Array.from({ length: 64 }, (_, k) => k + 1) : [1, 7, 64, 1000]) check(Array.from({ length: Math.floor(bytes.length / n) }, (_, k) => (k + 1) * n));
      if (!thorough) continue;
      for (let a = 1; a < Math.min(600, bytes.length); a++) for (let b = a + 1; b < Math.min(600, bytes.length); b += 3) check([a, b]);
    }
    console.log(`rtfp: recorded ${session.length} + ${errors.length} bytes, ${compared} cut patterns compared`);
  }, 600_000);

  it('a partition reader whose reads are re-cut at random offsets, and its connection cut mid-frame, gets every record intact and in order', async () => {
    await requireListening('127.0.0.1', 4222, 'rtfp needs nats-server on 4222');
    const direct = await connect({ servers: 'nats://127.0.0.1:4222' });
    const jsmDirect = await direct.jetstreamManager();
    const stream = `rtfp_r_${randomBytes(4).toString('hex')}`;
    await jsmDirect.streams.add({ name: stream, subjects: [`${stream}.>`], storage: StorageType.Memory });
    const total = 3000;
    const sent: Buffer[] = [];
    const js = direct.jetstream();
    for (let i = 0; i < total; i++) {
      const size = i % 100 === 17 ? 150_000 + i : 1 + ((i * 7919) % 1500);
      const v = randomBytes(size);
      sent.push(v);
      const h = headers();
      h.set('Syncline-Key', `k${i}`);
      await js.publish(`${stream}.0`, v, { headers: h });
    }
    const p = await proxy({ chop: true, cutsInBigFrames: 4 });
    let disconnects = 0;
    const nc = await connect({ servers: p.url, reconnectTimeWait: 50, maxReconnectAttempts: -1 });
    void (async () => {
      for await (const s of nc.status()) if (s.type === 'disconnect') disconnects++;
    })();
    const jsm = await nc.jetstreamManager();
    const r = await startReader(stream, 0n, true, { nc, jsm, disconnects: () => disconnects });
    const got: { offset: bigint; value: Buffer }[] = [];
    const until = Date.now() + 120_000;
    let cuts = 0;
    let nextCut = Date.now() + 400;
    try {
      while (got.length < total && Date.now() < until && r.failure() === undefined) {
        if (Date.now() >= nextCut && cuts < 8) {
          p.cut();
          cuts++;
          nextCut = Date.now() + 300;
        }
        const batch = r.buffer.take([0], 200);
        for (const rec of batch) got.push({ offset: rec.offset, value: Buffer.from(rec.value) });
        if (batch.length > 0) r.reader.handedOut((batch[batch.length - 1] as { offset: bigint }).offset);
        await new Promise((res) => setTimeout(res, 20));
      }
    } finally {
      await r.close();
      await nc.close();
      await p.close();
      await jsmDirect.streams.delete(stream).catch(() => undefined);
      await direct.close();
    }
    console.log(`rtfp: ${got.length} records through the chopping proxy, ${cuts} cuts, ${p.midFrameCuts()} in large frames, ${disconnects} disconnects, fast=${String(FastParser.readsFast(nc))}`);
    expect(r.failure()).toBeUndefined();
    expect(got.map((g) => g.offset)).toEqual(Array.from({ length: total }, (_, i) => BigInt(i)));
    const bad = got.filter((g, i) => !g.value.equals(sent[i] as Buffer)).map((g) => g.offset);
    expect(bad).toEqual([]);
  }, 300_000);
});
