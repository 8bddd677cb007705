import { createRequire } from 'node:module';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { deliveryPosition } from '../../src/stream/nats/ack-subject.js';

// nats.js's own reading of an ack subject (what `JsMsg.info` runs) is the reference.
const require = createRequire(import.meta.url);
const { parseInfo } = require('nats/lib/jetstream/jsmsg.js') as { parseInfo(s: string): { streamSequence: number; timestampNanos: number } };

const at = (subject: string) => deliveryPosition(Buffer.from(subject, 'utf8'));

describe('NATS ack subject (deliveryPosition)', () => {
  it('reads the stream sequence and store time of the current format', () => {
    expect(at('$JS.ACK._.ACCHASH.t_p0.grp.1.4711.12.1764900000123456789.5.tok')).toEqual({ seq: 4711, timestampMs: 1764900000123 });
    expect(at('$JS.ACK.dom.ACCHASH.t_p0.grp.3.8.2.1764900000123456789.0')).toEqual({ seq: 8, timestampMs: 1764900000123 });
  });

  it('reads the older 9-token format', () => {
    expect(at('$JS.ACK.t_p1.grp.1.42.42.1764900000999000000.0')).toEqual({ seq: 42, timestampMs: 1764900000999 });
  });

  it('refuses what is not an ack subject', () => {
    expect(at('')).toBeNull();
    expect(at('_INBOX.abc.def')).toBeNull();
    expect(at('$JS.ACK.a.b.c')).toBeNull();
    expect(at('$JS.ACK.t_p1.grp.1.x.42.1764900000999000000.0')).toBeNull();
    expect(at('$JS.ACK.t_p1.grp.1.0.42.1764900000999000000.0')).toBeNull();
    expect(at('$JS.ACK.t_p1.grp.1.42.42..0')).toBeNull();
    expect(at('$JS.ACX.t_p1.grp.1.42.42.1764900000999000000.0')).toBeNull();
  });

  it('agrees with nats.js for any stream, consumer, sequence and store time, in both formats', () => {
    const name = fc.stringMatching(/^[A-Za-z0-9_-]{1,20}$/);
    fc.assert(
      fc.property(name, name, fc.integer({ min: 1, max: 2 ** 48 }), fc.bigInt({ min: 0n, max: 4_102_444_800_000_000_000n }), fc.boolean(), (stream, consumer, seq, ns, older) => {
        const tail = `${stream}.${consumer}.1.${seq}.${seq}.${ns}.0`;
        const subject = older ? `$JS.ACK.${tail}` : `$JS.ACK._.HASH.${tail}.tok`;
        const info = parseInfo(subject);
        expect(at(subject)).toEqual({ seq: info.streamSequence, timestampMs: Number(ns / 1_000_000n) });
      }),
    );
  });
});
