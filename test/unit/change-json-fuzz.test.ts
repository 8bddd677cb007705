/** RED TEAM: ChangeJsonWriter must write exactly Buffer.from(JSON.stringify(e)) for any event. */
import { describe, expect, it } from 'vitest';
import type { ChangeEvent } from '../../src/core/change.js';
import { rowKeyOf } from '../../src/core/change.js';
import { formatLsn, LsnFormatter } from '../../src/core/lsn.js';
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

  it('matches JSON.stringify over long runs where what the writer keeps (head, transaction, commit time, row layouts) changes at random', () => {
    // A seeded PRNG: the same run every time, many switches between kept and new parts.
    let seed = 0x2545f491;
    const rnd = (n: number): number => {
      seed ^= seed << 13;
      seed ^= seed >>> 17;
      seed ^= seed << 5;
      return (seed >>> 0) % n;
    };
    const pick = <T,>(xs: readonly T[]): T => xs[rnd(xs.length)] as T;
    const names = ['id', 'name', 'a"b', 'é', '1', '__proto__', 'x'.repeat(40), ''];
    const values: (string | null | undefined | number)[] = ['1', '', 'plain', 'a"b', '\u0000', 'é', '😀', '\ud800', 'x'.repeat(300), null, null, undefined, 7];
    const row = (): Record<string, string | null> => {
      // JSON.parse makes own members of any name (even __proto__), in the order given.
      const members: string[] = [];
      const used = new Set<string>();
      for (let i = rnd(4); i > 0; i--) {
        const k = pick(names);
        if (used.has(k)) continue;
        used.add(k);
        const v = pick(values);
        if (v !== undefined) members.push(`${JSON.stringify(k)}:${JSON.stringify(v)}`);
      }
      const o = JSON.parse(`{${members.join(',')}}`) as Record<string, string | null>;
      if (rnd(20) === 0) (o as Record<string, unknown>).gone = undefined;
      return o;
    };
    const w = new ChangeJsonWriter(64);
    let start = 0;
    for (let i = 0; i < 20_000; i++) {
      const e: ChangeEvent = {
        source: pick(['s', 'other', 's"q']), schema: pick(['public', 'é']), table: pick(['t', 'u', 'a\\b']), op: pick(['INSERT', 'UPDATE', 'DELETE']),
        lsn: formatLsn(BigInt(rnd(1 << 30)) * 977n), commit_lsn: pick(['0/1', '16/B374D848', '0/2']), xid: pick([1, 2, 0, -0, 4294967295, -5]),
        seq: pick([0, 1, 9, 10, 99, 100, 2147483647, 2147483648, -1, -0, 123456789012]), commit_ts: pick(['2026-01-01T00:00:00Z', '2026-01-01T00:00:01Z', 'ü']),
        key: row(), payload: rnd(5) === 0 ? null : row(), _version: pick(['1', '6622471235698688001']), _schema_version: pick([1, 2, 0]),
      };
      if (rnd(10) === 0) e.before = row();
      if (rnd(10) === 0) e.tx_last = true;
      if (rnd(50) === 0) (e as unknown as Record<string, unknown>).seq = 1.5;
      const end = w.write(e);
      const got = w.bytes.subarray(start, end);
      if (!got.equals(Buffer.from(JSON.stringify(e)))) expect(got.toString('utf8')).toBe(JSON.stringify(e));
      start = end;
    }
  });

  it('rowKeyOf and formatLsn agree with the generic forms', () => {
    for (const v of weird) {
      const key = JSON.parse(`{"a":${JSON.stringify(v)},"b":null}`) as Record<string, string | null>;
      expect(rowKeyOf({ key })).toBe(JSON.stringify(Object.values(key)));
    }
    const generic = (l: bigint): string => `${(l >> 32n).toString(16).toUpperCase()}/${(l & 0xffffffffn).toString(16).toUpperCase()}`;
    const lsns = [0n, 1n, 15n, 16n, 0xffn, 0x100n, 0xfffn, 0x1000n, 0xffffn, 0x10000n, 0xfffffn, 0x100000n, 0xffffffn, 0x1000000n, 0xfffffffn, 0x10000000n, 0xffffffffn, 0x100000000n, (1n << 53n) - 1n, 1n << 53n, (1n << 64n) - 1n];
    for (const l of lsns) expect(formatLsn(l)).toBe(generic(l));
    // LsnFormatter keeps the high half's text: any order of positions, across high halves.
    const f = new LsnFormatter();
    let x = 0x9e3779b97f4a7c15n;
    for (let i = 0; i < 5000; i++) {
      x = (x * 6364136223846793005n + 1442695040888963407n) & ((1n << 64n) - 1n);
      const l = i % 3 === 0 ? (lsns[i % lsns.length] as bigint) : i % 3 === 1 ? x >> BigInt(i % 40) : (x >> 30n) + BigInt(i);
      expect(f.format(l)).toBe(generic(l));
    }
  });
});
