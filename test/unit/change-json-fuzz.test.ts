/** RED TEAM: ChangeJsonWriter must write exactly Buffer.from(JSON.stringify(e)) for any event. */
import { describe, expect, it } from 'vitest';
import type { ChangeEvent } from '../../src/core/change.js';
import { rowKeyOf } from '../../src/core/change.js';
import { formatLsn } from '../../src/core/lsn.js';
import { ChangeJsonWriter } from '../../src/pipeline/change-json.js';

const weird = ['', 'a"b', 'a\\b', '\u0000', '\u001f', '\u007f', '\u0080', 'é', '\ud800', '\udfff', '😀', '\u2028', '\u2029', '__proto__', 'constructor', 'toJSON', '1', '01', '-0', 'NaN', '9'.repeat(400), 'x'.repeat(5000)];

function base(): ChangeEvent {
  return {
    source: 's', schema: 'public', table: 't', op: 'INSERT', lsn: '0/1', commit_lsn: '0/1', xid: 1, seq: 1, commit_ts: '2026-01-01T00:00:00Z',
    key: { id: '1' }, payload: { id: '1' }, _version: '1', _schema_version: 1,
  };
}

describe('red team: change-json bytes', () => {
  it('matches JSON.stringify for odd keys and values', () => {
    const events: ChangeEvent[] = [];
    for (const k of weird) for (const v of weird) {
      const e = base();
      const payload = JSON.parse(`{${JSON.stringify(k)}:${JSON.stringify(v)},"n":null}`) as Record<string, string | null>;
      const key = JSON.parse(`{${JSON.stringify(k)}:${JSON.stringify(v)}}`) as Record<string, string | null>;
      events.push({ ...e, key, payload, table: v, schema: k });
      events.push({ ...e, payload: null, op: 'DELETE', before: payload, unchanged: [k], tx_last: true } as ChangeEvent);
    }
    const odd = base() as unknown as Record<string, unknown>;
    odd.xid = -0; odd.seq = 0; (odd.payload as Record<string, unknown>).num = -0; (odd.payload as Record<string, unknown>).nan = NaN;
    (odd.payload as Record<string, unknown>).undef = undefined; (odd.payload as Record<string, unknown>).d = new Date(0);
    odd.extra = undefined; odd.fn = () => 1; odd.big = 1e21;
    events.push(odd as unknown as ChangeEvent);
    const w = new ChangeJsonWriter(16);
    let start = 0;
    for (const e of events) {
      const end = w.write(e);
      const got = Buffer.from(w.bytes.subarray(start, end)).toString('hex');
      expect(got, JSON.stringify(e).slice(0, 200)).toBe(Buffer.from(JSON.stringify(e)).toString('hex'));
      start = end;
    }
  });

  it('rowKeyOf and formatLsn agree with the generic forms', () => {
    for (const v of weird) {
      const key = JSON.parse(`{"a":${JSON.stringify(v)},"b":null}`) as Record<string, string | null>;
      expect(rowKeyOf({ key })).toBe(JSON.stringify(Object.values(key)));
    }
    for (const l of [0n, 1n, 0xffffffffn, 0x100000000n, (1n << 53n) - 1n, 1n << 53n, (1n << 64n) - 1n]) {
      expect(formatLsn(l)).toBe(`${(l >> 32n).toString(16).toUpperCase()}/${(l & 0xffffffffn).toString(16).toUpperCase()}`);
    }
  });
});
