import { describe, expect, it } from 'vitest';
import { rowKeyOf, type ChangeEvent } from '../../src/core/change.js';
import { formatLsn, parseLsn } from '../../src/core/lsn.js';
import { ChangeJsonWriter } from '../../src/pipeline/change-json.js';

function event(over: Partial<ChangeEvent> = {}): ChangeEvent {
  return {
    source: 'src',
    schema: 'public',
    table: 'orders',
    op: 'INSERT',
    lsn: '0/16B3748',
    commit_lsn: '0/16B37A0',
    xid: 743,
    seq: 1,
    commit_ts: '2026-12-05T01:02:03.456789Z',
    key: { id: '1' },
    payload: { id: '1', note: 'plain' },
    _version: '6622471235698688001',
    _schema_version: 1,
    ...over,
  };
}

/** Writes all events into one writer and checks each slice against JSON.stringify. */
function expectSameBytes(events: ChangeEvent[], initialBytes = 16): void {
  const w = new ChangeJsonWriter(initialBytes);
  const ends = events.map((e) => w.write(e));
  let start = 0;
  events.forEach((e, i) => {
    const end = ends[i] as number;
    expect(w.bytes.subarray(start, end).toString('utf8')).toBe(JSON.stringify(e));
    expect(w.bytes.subarray(start, end).equals(Buffer.from(JSON.stringify(e)))).toBe(true);
    start = end;
  });
}

describe('ChangeJsonWriter', () => {
  it('writes the bytes of JSON.stringify for the usual events, with the optional members in the order they were set', () => {
    const last = event({ seq: 2 });
    last.tx_last = true;
    last.tx_prev = '0/16B3000';
    const update = event({ op: 'UPDATE', before: { id: '1', note: null }, unchanged: ['big'] });
    const superseded = event({ unchanged: ['big'] });
    superseded.superseded_at_source = true;
    const reset = event({ op: 'TRUNCATE', key: {}, payload: null });
    reset.snapshot_reset = true;
    expectSameBytes([event(), last, update, superseded, reset, event({ key: {}, payload: { a: null, b: '' } })]);
  });

  it('escapes what JSON escapes and writes non-ASCII text as UTF-8', () => {
    const texts = ['quote " and \\ backslash', 'tab\tnewline\n\u0000\u001f\u007f', 'é ü 中文 😀', 'lone \ud800 surrogate', 'lone \udc00 low', '\u2028\u2029', ''];
    const events = texts.map((t, i) => event({ seq: i + 1, key: { [`k${t}`]: t }, payload: { [t]: t, n: null }, table: t, source: t }));
    expectSameBytes(events);
  });

  it('falls back to JSON.stringify for other shapes and values, leaving out what JSON leaves out', () => {
    const { schema, ...rest } = event();
    const reordered = { ...rest, schema } as ChangeEvent;
    const odd = event({ payload: { a: undefined as unknown as string, b: 5 as unknown as string, c: '1' } });
    const bigXid = event({ xid: 2 ** 60 });
    const nanSeq = event({ seq: NaN });
    const undefinedOptional = event({ before: undefined });
    const keyedNumbers = event({ key: { 2: 'two', 1: 'one', b: 'b' } });
    const dated = event({ payload: new Date(0) as unknown as Record<string, string> });
    expectSameBytes([reordered, odd, bigXid, nanSeq, undefinedOptional, keyedNumbers, dated]);
  });

  it('grows its buffer without moving what was written before', () => {
    const events = Array.from({ length: 200 }, (_, i) => event({ seq: i + 1, payload: { id: String(i), text: 'x'.repeat(i * 13) } }));
    expectSameBytes(events, 1);
  });
});

describe('rowKeyOf and formatLsn, written out for speed', () => {
  it('rowKeyOf is JSON.stringify(Object.values(key))', () => {
    const keys: Record<string, unknown>[] = [{}, { id: '1' }, { a: 'x"y', b: null, c: 'é\n', d: '\ud800' }, { n: 5, u: undefined, t: true }, { 2: 'b', 1: 'a' }];
    for (const key of keys) expect(rowKeyOf({ key: key as Record<string, string> })).toBe(JSON.stringify(Object.values(key)));
  });

  it('formatLsn is PostgreSQL X/Y on either side of 2^53', () => {
    const cases: [bigint, string][] = [[0n, '0/0'], [0x16b3748n, '0/16B3748'], [(0x1fn << 32n) | 0xffffffffn, '1F/FFFFFFFF'], [BigInt(Number.MAX_SAFE_INTEGER), '1FFFFF/FFFFFFFF'], [BigInt(Number.MAX_SAFE_INTEGER) + 1n, '200000/0'], [0xffffffffffffffffn, 'FFFFFFFF/FFFFFFFF']];
    for (const [lsn, text] of cases) {
      expect(formatLsn(lsn)).toBe(text);
      expect(parseLsn(text)).toBe(lsn);
    }
  });
});
