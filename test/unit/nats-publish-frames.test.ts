import { createRequire } from 'node:module';
import fc from 'fast-check';
import { createInbox, ErrorCode, type Msg, type NatsConnection, type NatsError, type PublishOptions, type Status } from 'nats';
import { describe, expect, it } from 'vitest';
import { SynclineError } from '../../src/core/errors.js';
import type { BrokerClients } from '../../src/stream/common/broker-stream.js';
import { FrameWriter } from '../../src/stream/nats/frame-writer.js';
import { natsError } from '../../src/stream/nats/nats-errors.js';
import { NatsProducer } from '../../src/stream/nats/nats-producer.js';
import type { PublishPlan } from '../../src/stream/nats/publish-chains.js';
import { publishFrames } from '../../src/stream/nats/publish-frames.js';
import { RecordHeaders, natsMsgIdOf, recordHeaderBlock, recordHeaders } from '../../src/stream/nats/record-headers.js';
import type { OutgoingRecord } from '../../src/stream/stream.js';

// nats.js's own framing (ProtocolHandler.publish into its outbound DataBuffer) is the reference.
const require = createRequire(import.meta.url);
const { ProtocolHandler } = require('nats/lib/nats-base-client/protocol.js') as { ProtocolHandler: { prototype: object } };
const { DataBuffer } = require('nats/lib/nats-base-client/databuffer.js') as { DataBuffer: new () => { drain(): Uint8Array } };
const { NatsConnectionImpl } = require('nats/lib/nats-base-client/nats.js') as { NatsConnectionImpl: { prototype: object } };

interface FakeProtocol {
  info: { max_payload: number; headers: boolean } | undefined;
  outbound: { drain(): Uint8Array };
  outMsgs: number;
  outBytes: number;
  noMorePublishing: boolean;
  _closed: boolean;
  publish(subject: string, data: Uint8Array, options: PublishOptions): void;
}

/** nats.js's ProtocolHandler without a socket: what it would write stays in its outbound buffer. */
function fakeProtocol(maxPayload = 1024 * 1024): FakeProtocol {
  return Object.assign(Object.create(ProtocolHandler.prototype) as FakeProtocol, {
    info: { max_payload: maxPayload, headers: true },
    outbound: new DataBuffer(),
    pendingLimit: Number.POSITIVE_INFINITY,
    outMsgs: 0,
    outBytes: 0,
    noMorePublishing: false,
    _closed: false,
    flushPending: () => undefined,
  });
}

const written = (p: FakeProtocol): Buffer => Buffer.from(p.outbound.drain());
const REPLY = '_INBOX.FRAMES.7';
const subjectOf = (key: string): string => `t.${key.length % 3}.s.t`;

/** A plan answering every record on REPLY, or as `replies` and `expected` say (a chain). */
function planOf(records: readonly OutgoingRecord[], replies?: (string | undefined)[], expected?: (string | undefined)[]): PublishPlan {
  return {
    subjects: records.map((r) => subjectOf(r.key)),
    replies: replies ?? records.map(() => REPLY),
    msgIds: records.map((r) => natsMsgIdOf(r.key, r.id)),
    expected: expected ?? records.map(() => undefined),
    answers: 0,
  };
}

/** The bytes nats.js writes for the records of `plan`, published one by one as the producer did before. */
function viaNatsJs(records: readonly OutgoingRecord[], plan = planOf(records), p = fakeProtocol()): Buffer {
  records.forEach((r, i) => p.publish(plan.subjects[i] as string, r.value, { headers: new RecordHeaders(recordHeaderBlock(r.key, plan.msgIds[i], plan.expected[i])), reply: plan.replies[i] }));
  return written(p);
}

const record = (key: string, id?: string, value = '{"v":1}'): OutgoingRecord => ({ key, value: Buffer.from(value), ...(id === undefined ? {} : { id }) });

describe('NATS publish frames', () => {
  const cases: OutgoingRecord[] = [
    record('public.orders:["1"]', '0/16B3748:1'),
    record('public.orders:["1"]'),
    record('keyless', '0/1:2'),
    record('  spaced.t:["x"]  ', ' 0/1:3 '),
    record('public.t:["line\nbreak"]', '0/1:4'),
    record('we\rird.t:["a"]'),
    record('s.t:["a"]', 'id\r\nwith break'),
    record('ünï.cödé:["€ 😀"]', '0/A:5', '{"€":"ü"}'),
    record('lone.s:["\ud800"]', '0/B:6'),
    record('', undefined, ''),
    record(':["colon first"]', '0/C:7'),
  ];

  it.each(cases.map((r) => [r.key, r.id ?? null, r] as const))('frames key %j (id %j) byte for byte as nats.js does', (_key, _id, r) => {
    expect(publishFrames([r], planOf([r]), 1024 * 1024).bytes.equals(viaNatsJs([r]))).toBe(true);
  });

  it('frames a whole call in record order as nats.js does, for arbitrary keys, ids, values, replies and chains', () => {
    const key = fc.oneof(
      fc.string({ unit: 'grapheme', maxLength: 40 }),
      fc.string({ unit: 'binary', maxLength: 20 }),
      fc.tuple(fc.constantFrom('public.t', ' s.t ', 'we\rird.t', 'a.b'), fc.string({ maxLength: 20 })).map(([t, k]) => `${t}:[${JSON.stringify(k)}]`),
    );
    const rec = fc.record({
      key,
      id: fc.option(fc.string({ unit: 'grapheme', maxLength: 20 }), { nil: undefined }),
      value: fc.uint8Array({ maxLength: 64 }),
      answered: fc.boolean(),
      expected: fc.option(fc.string({ maxLength: 30 }).map((x) => x.replace(/[\r\n]/g, '').trim()), { nil: undefined }),
    });
    fc.assert(
      fc.property(fc.array(rec, { minLength: 1, maxLength: 20 }), (rs) => {
        const records = rs.map(({ key: k, id, value }) => ({ key: k, value: Buffer.from(value), ...(id === undefined ? {} : { id }) }));
        const plan = planOf(records, rs.map((r) => (r.answered ? `${REPLY}.1` : undefined)), rs.map((r) => r.expected));
        const frames = publishFrames(records, plan, 1024 * 1024);
        const p = fakeProtocol();
        expect(frames.bytes.equals(viaNatsJs(records, plan, p))).toBe(true);
        expect(frames.messageBytes).toBe(p.outBytes);
      }),
    );
  });

  it('refuses a record over max_payload with the error nats.js throws, and takes one at it', () => {
    const small = record('public.t:["1"]', '0/1:1');
    const atLimit = record('public.t:["2"]', '0/1:2', 'x'.repeat(100));
    const limit = recordHeaders(atLimit.key, atLimit.id).encode().length + 100;
    expect(() => publishFrames([small, atLimit], planOf([small, atLimit]), limit)).not.toThrow();
    const over = record('public.t:["2"]', '0/1:2', 'x'.repeat(101));
    let ours: unknown;
    let theirs: unknown;
    try {
      publishFrames([small, over], planOf([small, over]), limit);
    } catch (err) {
      ours = err;
    }
    try {
      fakeProtocol(limit).publish(subjectOf(over.key), over.value, { headers: recordHeaders(over.key, over.id), reply: REPLY });
    } catch (err) {
      theirs = err;
    }
    expect((ours as NatsError).code).toBe(ErrorCode.MaxPayloadExceeded);
    expect(natsError(ours, 'publishing')).toMatchObject({ code: natsError(theirs, 'publishing').code, message: natsError(theirs, 'publishing').message });
  });
});

/** A connection that records what it would write: nats.js's NatsConnectionImpl on fakeProtocol. */
function fakeConnection(protocol: FakeProtocol, internals: boolean): { nc: NatsConnection; inbox: () => string } {
  const impl = Object.assign(Object.create(NatsConnectionImpl.prototype) as NatsConnection, { protocol, draining: false });
  let inbox = '';
  const statuses = { stop: () => undefined, [Symbol.asyncIterator]: () => ({ next: () => new Promise<IteratorResult<Status>>(() => undefined) }) };
  const nc = {
    subscribe: (subject: string, opts: { callback: (err: NatsError | null, msg: Msg) => void }) => {
      inbox = subject.slice(0, -'.*'.length);
      void opts;
      return { unsubscribe: () => undefined };
    },
    status: () => statuses,
    publish: (s: string, d: Uint8Array, o: PublishOptions) => impl.publish(s, d, o),
    isClosed: () => impl.isClosed(),
    get info() {
      return impl.info;
    },
    ...(internals ? { protocol } : {}),
  } as unknown as NatsConnection;
  return { nc, inbox: () => inbox };
}

const clients = { delete: () => undefined } as unknown as BrokerClients;

describe('NatsProducer writing its own frames', () => {
  const records = [record('public.orders:["1"]', '0/1:1'), record('public.t:["line\nbreak"]'), record('ünï.cödé:["€"]', '0/A:5'), record('keyless', '0/1:2')];

  /** What a producer writes for `calls`, with its inbox replaced by INBOX. */
  function wire(internals: boolean, calls: OutgoingRecord[][]): { bytes: string; protocol: FakeProtocol } {
    const protocol = fakeProtocol();
    const { nc, inbox } = fakeConnection(protocol, internals);
    const producer = new NatsProducer(nc, { topic: 'frames', partitions: 3, publishTimeoutMs: 60_000 }, clients);
    for (const c of calls) void producer.publish(c).catch(() => undefined);
    return { bytes: written(protocol).toString('latin1').replaceAll(inbox(), 'INBOX'), protocol };
  }

  it('writes what nc.publish record by record wrote, one reply token per call (and partition, until answered)', () => {
    const calls = [records, records.slice(1, 3), [records[0] as OutgoingRecord]];
    const ours = wire(true, calls);
    const before = wire(false, calls);
    expect(ours.bytes).toBe(before.bytes);
    // No answers came: every record is answered on <inbox>.<call>.<partition>, none chained.
    expect(ours.bytes).toMatch(/ INBOX\.0\.\d /);
    expect(ours.bytes).toMatch(/ INBOX\.2\.\d /);
    expect(ours.bytes).not.toContain('Nats-Expected-Last-Msg-Id');
    expect([ours.protocol.outMsgs, ours.protocol.outBytes]).toEqual([before.protocol.outMsgs, before.protocol.outBytes]);
  });

  it('fails a call with a record whose key alone is over max_payload, having written none of it', async () => {
    // A record over max_payload with a key that fits goes through the object store (test/contract/nats-chain-max-payload).
    const big = record(`public.t:["${'k'.repeat(2000)}"]`, '0/1:9');
    for (const internals of [true, false]) {
      const protocol = fakeProtocol(1000);
      const { nc } = fakeConnection(protocol, internals);
      const producer = new NatsProducer(nc, { topic: 'frames', partitions: 3 }, clients);
      const failure = await producer.publish([record('public.t:["1"]'), big]).catch((err: unknown) => err);
      expect(failure).toBeInstanceOf(SynclineError);
      expect((failure as SynclineError).code).toBe('NATS_MAX_PAYLOAD_EXCEEDED');
      // Refused before anything of the call is written, with frames or record by record.
      expect(written(protocol).length).toBe(0);
    }
  });

  it('fails on a closed or draining connection as nc.publish did', async () => {
    for (const [field, code] of [['_closed', 'NATS_CONNECTION_CLOSED'], ['noMorePublishing', 'NATS_CONNECTION_DRAINING']] as const) {
      for (const internals of [true, false]) {
        const protocol = fakeProtocol();
        const { nc } = fakeConnection(protocol, internals);
        const producer = new NatsProducer(nc, { topic: 'frames', partitions: 3 }, clients);
        protocol[field] = true;
        const failure = await producer.publish(records).catch((err: unknown) => err);
        expect((failure as SynclineError).code).toBe(code);
        expect(written(protocol).length).toBe(0);
      }
    }
  });
});

describe('FrameWriter', () => {
  it('is there only for a connection shaped like nats.js 2.29', () => {
    expect(FrameWriter.of(fakeConnection(fakeProtocol(), true).nc)).toBeInstanceOf(FrameWriter);
    expect(FrameWriter.of(fakeConnection(fakeProtocol(), false).nc)).toBeUndefined();
    const odd = Object.assign(fakeProtocol(), { outMsgs: undefined });
    expect(FrameWriter.of(fakeConnection(odd, true).nc)).toBeUndefined();
    expect(FrameWriter.of({ protocol: null, inbox: createInbox() } as unknown as NatsConnection)).toBeUndefined();
  });

  it('takes no limit before the server INFO and refuses a server without headers', () => {
    const protocol = fakeProtocol();
    const writer = FrameWriter.of(fakeConnection(protocol, true).nc) as FrameWriter;
    expect(writer.maxPayload()).toBe(1024 * 1024);
    protocol.info = undefined;
    expect(writer.maxPayload()).toBe(Number.POSITIVE_INFINITY);
    protocol.info = { max_payload: 10, headers: false };
    expect(() => writer.maxPayload()).toThrow(expect.objectContaining({ code: ErrorCode.ServerOptionNotAvailable }) as Error);
  });
});
