/**
 * The NATS reader's protocol parser on a real nats-server connection: installed on the
 * nats.js connection the reader uses (else the reader silently keeps nats.js's slower one),
 * and what arrives through it, headers, large payloads cut over many socket reads and the
 * server's PINGs included, is what was published. The exactness against nats.js's Parser
 * for every cut is test/unit/nats-fast-parser.test.ts.
 */
import { randomBytes } from 'node:crypto';
import { StorageType, connect, createInbox, headers, type Msg, type NatsConnection } from 'nats';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FastParser } from '../../src/stream/nats/fast-parser.js';
import { requireListening } from './broker-check.js';

const url = 'nats://127.0.0.1:4222';
let nc: NatsConnection;

beforeAll(async () => {
  await requireListening('127.0.0.1', 4222, 'The NATS fast parser test needs nats-server on 127.0.0.1:4222 (see test/contract/nats.contract.test.ts)');
  nc = await connect({ servers: url });
});

afterAll(async () => {
  await nc?.close();
});

describe('NATS fast parser on a real connection', () => {
  it('is installed on a nats.js connection and reads what the server sends', async () => {
    expect(FastParser.install(nc)).toBe(true);
    const parse = (nc as unknown as { protocol: { parser: { parse: unknown } } }).protocol.parser.parse;
    const subject = createInbox();
    const sent: { data: Buffer; id: string | undefined }[] = [];
    for (let i = 0; i < 300; i++) {
      // Mostly small, some larger than a socket read (64 KiB), some with headers.
      const size = i % 50 === 7 ? 300_000 + i : i % 3 === 0 ? 0 : 1 + ((i * 7919) % 2000);
      sent.push({ data: randomBytes(size), id: i % 2 === 0 ? `m-${i}` : undefined });
    }
    const received: { data: Buffer; id: string | undefined }[] = [];
    const done = new Promise<void>((resolve) => {
      nc.subscribe(subject, {
        callback: (_err, msg: Msg) => {
          received.push({ data: Buffer.from(msg.data), id: msg.headers?.get('Nats-Msg-Id') || undefined });
          if (received.length === sent.length) resolve();
        },
      });
    });
    await nc.flush();
    for (const m of sent) {
      if (m.id === undefined) nc.publish(subject, m.data);
      else {
        const h = headers();
        h.set('Nats-Msg-Id', m.id);
        nc.publish(subject, m.data, { headers: h });
      }
    }
    await done;
    // Round trips (PING/PONG) and request replies still work through it.
    await nc.flush();
    const echo = createInbox();
    const sub = nc.subscribe(echo, { callback: (_e, msg) => msg.respond(msg.data) });
    const reply = await nc.request(echo, Buffer.from('ping?'), { timeout: 2000 });
    sub.unsubscribe();
    // A JetStream publish: its PubAck comes as a message with an empty reply subject, which
    // nats-server writes with two spaces before the size.
    const jsm = await nc.jetstreamManager();
    const stream = `fastparser_${randomBytes(4).toString('hex')}`;
    await jsm.streams.add({ name: stream, subjects: [`${stream}.>`], storage: StorageType.Memory });
    try {
      const ack = await nc.jetstream().publish(`${stream}.x`, Buffer.from('stored'));
      expect(ack.seq).toBe(1);
    } finally {
      await jsm.streams.delete(stream);
    }
    // Nothing of it was left to nats.js's own Parser.
    expect(FastParser.readsFast(nc)).toBe(true);
    expect(Buffer.from(reply.data).toString()).toBe('ping?');
    expect(received.map((r) => r.id)).toEqual(sent.map((s) => s.id));
    expect(received.every((r, i) => r.data.equals((sent[i] as { data: Buffer }).data))).toBe(true);
    // Still the parser installed above (nothing reconnected).
    expect((nc as unknown as { protocol: { parser: { parse: unknown } } }).protocol.parser.parse).toBe(parse);
  });
});
