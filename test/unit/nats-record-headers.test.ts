import { headers, type MsgHdrs } from 'nats';
import { describe, expect, it } from 'vitest';
import { KEY_ENCODING_HEADER, KEY_HEADER, TABLE_HEADER, keyOf, tableOfKey } from '../../src/stream/nats/nats-names.js';
import { RecordHeaders, headersAndValueFit, natsMsgIdOf, recordHeaderBlock, recordHeaders } from '../../src/stream/nats/record-headers.js';

/** The headers as the producer built them with nats.js's own `headers()` before. */
function viaNatsJs(key: string, id: string | undefined, expectedLastMsgId?: string): MsgHdrs {
  const h = headers();
  // The server's headers first (see recordHeaderBlock).
  if (id !== undefined) {
    const raw = `${id} ${key}`;
    const msgId = /[\r\n]/.test(raw) ? encodeURIComponent(raw) : raw;
    h.set('Nats-Msg-Id', /nats-/i.test(msgId) ? msgId.trim().replaceAll('-', '%2D') : msgId);
  }
  if (expectedLastMsgId !== undefined) h.set('Nats-Expected-Last-Msg-Id', expectedLastMsgId);
  if (/[\r\n]/.test(key)) {
    h.set(KEY_HEADER, encodeURIComponent(key));
    h.set(KEY_ENCODING_HEADER, 'uri');
  } else {
    h.set(KEY_HEADER, key);
  }
  const table = tableOfKey(key);
  if (table !== undefined && !/[\r\n]/.test(table)) h.set(TABLE_HEADER, table);
  return h;
}

const encoded = (h: MsgHdrs): string => new TextDecoder().decode((h as MsgHdrs & { encode(): Uint8Array }).encode());

describe('NATS record headers (one-pass encoding)', () => {
  const cases: [string, string | undefined][] = [
    ['public.orders:["1"]', '0/16B3748:1'],
    ['public.orders:["1"]', undefined],
    ['keyless', '0/1:2'],
    ['  spaced.t:["x"]  ', '0/1:3'],
    ['public.t:["line\nbreak"]', '0/1:4'],
    ['we\rird.t:["a"]', undefined],
    ['ünï.cödé:["€"]', '0/A:5'],
    ['public.t:["Nats-Msg-Id"]', '0/1:6'],
    ['public.t:["nats-expected-last-msg-id\n"]', '0/1:7'],
  ];
  it.each(cases)('encodes %j (id %j) byte for byte as nats.js does', (key, id) => {
    expect(encoded(recordHeaders(key, id))).toBe(encoded(viaNatsJs(key, id)));
  });

  it('reads back like nats.js headers', () => {
    for (const [key, id] of cases) {
      const ours = recordHeaders(key, id);
      const theirs = viaNatsJs(key, id);
      expect(keyOf(ours)).toBe(keyOf(theirs));
      expect(ours.keys()).toEqual(theirs.keys());
      expect(ours.get('Nats-Msg-Id')).toBe(theirs.get('Nats-Msg-Id'));
      expect([...ours]).toEqual([...theirs]);
    }
  });

  it.each(cases)('encodes %j (id %j) in a chain, after the Msg-Id of the record before it, as nats.js does', (key, id) => {
    const before = natsMsgIdOf('public.orders:["0"]', '0/16B3740:1') as string;
    expect(encoded(new RecordHeaders(recordHeaderBlock(key, natsMsgIdOf(key, id), before)))).toBe(encoded(viaNatsJs(key, id, before)));
  });

  it('writes no Msg-Id holding a JetStream header name, and the server headers before the key', () => {
    for (const [key, id] of cases) {
      const block = recordHeaderBlock(key, natsMsgIdOf(key, id), natsMsgIdOf('Nats-Msg-Id.t:["Nats-Expected-Last-Msg-Id"]', '0/1:1'));
      // nats-server's lookup: the first occurrence of the name must start a line.
      for (const name of ['Nats-Msg-Id', 'Nats-Expected-Last-Msg-Id']) {
        const at = block.indexOf(name);
        if (name === 'Nats-Msg-Id' && id === undefined) expect(at === -1 || block.slice(at - 2, at) !== '\r\n').toBe(true);
        else expect(block.slice(at - 2, at)).toBe('\r\n');
      }
    }
  });
});

describe('headersAndValueFit', () => {
  it('says what measuring the header block says, at and around the limit', () => {
    const keys = ['public.t:["1"]', 'ünï.cödé:["€€€"]', 'public.t:["line\nbreak€"]', `public.t:["${'x'.repeat(300)}"]`];
    for (const key of keys) {
      for (const exp of [undefined, natsMsgIdOf('public.t:["0"]', '0/1:1'), natsMsgIdOf(key, '0/1:2')]) {
        const msgId = natsMsgIdOf(key, '0/2:1');
        const exact = Buffer.byteLength(recordHeaderBlock(key, msgId, exp), 'utf8');
        for (const value of [0, 10, 5000]) {
          for (const limit of [exact + value - 1, exact + value, exact + value + 1, 1 << 20]) {
            expect(headersAndValueFit(key, msgId, exp, value, limit)).toBe(exact + value <= limit);
          }
        }
      }
    }
  });
});
