import { createRequire } from 'node:module';
import fc from 'fast-check';
import type { Msg, MsgHdrs } from 'nats';
import { describe, expect, it } from 'vitest';
import { deliveredKey, keyInHeaderBlock } from '../../src/stream/nats/delivered-key.js';
import { keyOf } from '../../src/stream/nats/nats-names.js';
import { recordHeaders } from '../../src/stream/nats/record-headers.js';

// nats.js's own header decoder (what `JsMsg.headers` runs) is the reference.
const require = createRequire(import.meta.url);
const { MsgHdrsImpl } = require('nats/lib/nats-base-client/headers.js') as { MsgHdrsImpl: { decode(a: Uint8Array): MsgHdrs } };

/** A delivered message as nats.js 2.x builds it: header block and payload in `_rdata`. */
function delivered(block: Uint8Array | null, payload = Buffer.from('{}')): Msg {
  const rdata = block === null ? payload : Buffer.concat([block, payload]);
  return { _rdata: rdata, _msg: { hdr: block === null ? -1 : block.length }, headers: block === null ? undefined : MsgHdrsImpl.decode(block) } as unknown as Msg;
}

describe('the key of a delivered NATS message', () => {
  const key = fc.oneof(
    fc.string({ unit: 'grapheme', maxLength: 60 }),
    fc.tuple(fc.constantFrom('public.t', ' s.t ', 'we\rird.t', 'a.b'), fc.string({ maxLength: 30 })).map(([t, k]) => `${t}:[${JSON.stringify(k)}]`),
    fc.constantFrom('public.t:["line\nbreak"]', 'x:Syncline-Key: y', '\r\nSyncline-Key: z', '  ', '', 'k%zz'),
  );

  it('reads the raw header block as nats.js decodes it, for any key and id', () => {
    fc.assert(
      fc.property(key, fc.option(fc.string({ maxLength: 20 }), { nil: undefined }), (k, id) => {
        const block = recordHeaders(k, id).encode();
        const expected = keyOf(MsgHdrsImpl.decode(block));
        expect(keyInHeaderBlock(Buffer.from(block).toString('utf8'))).toBe(expected);
        expect(deliveredKey(delivered(block))).toBe(expected);
      }),
      { numRuns: 500 },
    );
  });

  it('reads headers written by another publisher (other order, extra headers)', () => {
    const block = Buffer.from('NATS/1.0\r\nX-Other: 1\r\nSyncline-Key-Encoding: uri\r\nSyncline-Key:   a%0Ab  \r\nSyncline-Key: second\r\n\r\n');
    expect(deliveredKey(delivered(block))).toBe('a\nb');
    expect(keyOf(MsgHdrsImpl.decode(block))).toBe('a\nb');
  });

  it('is empty without headers, and uses the decoded headers when nats.js keeps no raw bytes', () => {
    expect(deliveredKey(delivered(null))).toBe('');
    const block = recordHeaders('public.t:["1"]', 'i').encode();
    expect(deliveredKey({ headers: MsgHdrsImpl.decode(block) } as unknown as Msg)).toBe('public.t:["1"]');
  });
});
