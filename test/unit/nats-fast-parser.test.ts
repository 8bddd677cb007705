/**
 * The NATS reader's protocol parser hands nats.js's dispatcher exactly the events nats.js's
 * own Parser does, for any sequence of server operations cut anywhere into socket reads:
 * nats.js's Parser is the reference (see src/stream/nats/fast-parser.ts).
 */
import fc from 'fast-check';
import type { NatsConnection } from 'nats';
import { Parser, type ParserEvent } from 'nats/lib/nats-base-client/parser.js';
import { describe, expect, it } from 'vitest';
import { FastParser } from '../../src/stream/nats/fast-parser.js';

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

/** A Parser whose events are recorded as plain values (its views copied at once, as a reader would use them). */
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

/** Feeds `bytes` cut at `cuts` (offsets) to `parser`; the error it threw, if any. */
function feed(parser: Parser, bytes: Buffer, cuts: number[]): string | undefined {
  const at = [...new Set(cuts.map((c) => c % (bytes.length + 1)))].sort((a, b) => a - b);
  let from = 0;
  try {
    for (const c of [...at, bytes.length]) {
      // Each read in its own Buffer, as the socket gives them.
      if (c > from) parser.parse(Buffer.from(bytes.subarray(from, c)));
      from = Math.max(from, c);
    }
  } catch (err) {
    return String(err);
  }
  return undefined;
}

const token = fc.stringMatching(/^[A-Za-z0-9_$.>*-]{1,40}$/);
const ackSubject = fc
  .tuple(fc.nat({ max: 1e6 }), fc.nat({ max: 1e6 }), fc.bigInt({ min: 10n ** 18n, max: 10n ** 19n - 1n }))
  .map(([s, d, ns]) => `$JS.ACK.STREAM.consumer.1.${s}.${d}.${ns}.${s % 7}`);
const payload = fc.uint8Array({ maxLength: 300 }).map((a) => Buffer.from(a));
const headerBlock = fc.array(fc.tuple(fc.stringMatching(/^[A-Za-z-]{1,12}$/), fc.stringMatching(/^[ -~]{0,30}$/)), { maxLength: 4 }).map((hs) => `NATS/1.0\r\n${hs.map(([k, v]) => `${k}: ${v}\r\n`).join('')}\r\n`);

/** Spaces between a line's fields: nats-server writes two before the size of a reply with an empty reply subject. */
const gap = fc.constantFrom(' ', ' ', ' ', '  ', '   ');
const reply = fc.option(fc.oneof(token, ackSubject, fc.constant('')));
const fields = (items: (string | number)[], gaps: string[]): string => items.map((v, i) => (i === 0 ? `${v}` : `${gaps[i % gaps.length] ?? ' '}${v}`)).join('');

/** One server operation as nats-server writes it. */
const operation: fc.Arbitrary<Buffer> = fc.oneof(
  {
    weight: 6,
    arbitrary: fc.tuple(token, fc.nat({ max: 999 }), reply, payload, fc.array(gap, { minLength: 1, maxLength: 4 })).map(([sub, sid, r, data, gaps]) =>
      Buffer.concat([Buffer.from(`MSG ${fields(r === null ? [sub, sid, data.length] : [sub, sid, r, data.length], gaps)}\r\n`), data, Buffer.from('\r\n')]),
    ),
  },
  {
    weight: 6,
    arbitrary: fc.tuple(token, fc.nat({ max: 999 }), reply, headerBlock, payload, fc.array(gap, { minLength: 1, maxLength: 4 })).map(([sub, sid, r, hdr, data, gaps]) => {
      const h = Buffer.from(hdr);
      const size = h.length + data.length;
      return Buffer.concat([Buffer.from(`HMSG ${fields(r === null ? [sub, sid, h.length, size] : [sub, sid, r, h.length, size], gaps)}\r\n`), h, data, Buffer.from('\r\n')]);
    }),
  },
  { weight: 1, arbitrary: fc.constantFrom('PING\r\n', 'PONG\r\n', '+OK\r\n', "-ERR 'Stale Connection'\r\n", 'INFO {"server_id":"x","max_payload":1048576,"headers":true}\r\n').map((s) => Buffer.from(s)) },
);

/** Operations nats-server does not send but nats.js's Parser reads or rejects its own way. */
const unusual: fc.Arbitrary<Buffer> = fc.constantFrom(
  'MSG\tsub\t1\t3\r\nabc\r\n',
  'msg sub 1 3\r\nabc\r\n',
  'hmsg sub 1 12 12\r\nNATS/1.0\r\n\r\n\r\n',
  'MSG  sub  1  3\r\nabc\r\n',
  'MSG sub 1 3 \r\nabc\r\n',
  'MSG sub\t1 3\r\nabc\r\n',
  'MSG sub 1 re\tply 3\r\nabc\r\n',
  'MSG sub 1 a b 3\r\nabc\r\n',
  'MSG sub 1 3\nabc\r\n',
  'MSG sub 1 3\r\nabc\n',
  'HMSG sub 1 9 3\r\nabc\r\n',
  'MSG sub x 3\r\nabc\r\n',
  'XYZ\r\n',
  'PXNG\r\n',
  'INFO\r\n',
).map((s) => Buffer.from(s));

describe('NATS fast parser', () => {
  it('hands on the same events as nats.js, however the bytes are cut into reads', () => {
    fc.assert(
      fc.property(fc.array(operation, { maxLength: 40 }), fc.array(fc.nat(), { maxLength: 12 }), (ops, cuts) => {
        const bytes = Buffer.concat(ops);
        const reference = recording(false);
        const fast = recording(true);
        const referenceError = feed(reference.parser, bytes, cuts);
        const fastError = feed(fast.parser, bytes, cuts);
        expect(fastError).toBe(referenceError);
        expect(fast.events).toEqual(reference.events);
        expect(referenceError).toBeUndefined();
      }),
      { numRuns: 400 },
    );
  });

  it('leaves a form nats-server does not send to nats.js: the same events, the same failure', () => {
    fc.assert(
      fc.property(fc.array(operation, { maxLength: 8 }), unusual, fc.array(operation, { maxLength: 8 }), fc.array(fc.nat(), { maxLength: 6 }), (before, odd, after, cuts) => {
        const bytes = Buffer.concat([...before, odd, ...after]);
        const reference = recording(false);
        const fast = recording(true);
        const referenceError = feed(reference.parser, bytes, cuts);
        const fastError = feed(fast.parser, bytes, cuts);
        expect(fast.events).toEqual(reference.events);
        // The same error when read at once; cut into reads, nats.js's names the bytes up to
        // the end of the read it failed in, which may be one read earlier than here.
        if (cuts.length === 0) expect(fastError).toBe(referenceError);
        else expect(fastError === undefined).toBe(referenceError === undefined);
      }),
      { numRuns: 300 },
    );
  });

  it('reads a large message cut into many reads once it is complete', () => {
    const data = Buffer.alloc(3 * 1024 * 1024, 7);
    const bytes = Buffer.concat([Buffer.from(`MSG big 9 ${data.length}\r\n`), data, Buffer.from('\r\nPING\r\n')]);
    const cuts = Array.from({ length: 200 }, (_, i) => 10 + i * 16_000);
    const fast = recording(true);
    expect(feed(fast.parser, bytes, cuts)).toBeUndefined();
    expect(fast.events.map((e) => [e.kind, e.size, e.data?.length])).toEqual([
      [2, data.length, data.length * 2],
      [4, undefined, undefined],
    ]);
  });

  it('is installed only on a Parser between operations, and once', () => {
    const { parser } = recording(false);
    parser.parse(Buffer.from('MSG sub 1 10\r\nabc'));
    const nc = { protocol: { parser } } as unknown as NatsConnection;
    expect(FastParser.install(nc)).toBe(false);
    parser.parse(Buffer.from('defghij\r\n'));
    expect(FastParser.install(nc)).toBe(true);
    const installed = parser.parse;
    expect(FastParser.install(nc)).toBe(true);
    expect(parser.parse).toBe(installed);
    expect(FastParser.install({ protocol: { parser: {} } } as unknown as NatsConnection)).toBe(false);
  });
});
