/**
 * Apply's scanner of change event JSON (schema/scan-change.ts) and the lazy rows it makes
 * (core/lazy-row.ts): whatever it accepts must decode to exactly what JSON.parse makes of the
 * same text, member order included, and a lazy payload must behave as the plain object.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import type { ChangeEvent, Row } from '../../src/core/change.js';
import { columnsOf, lazyJsonOf, lazyValuesOf, shapeKeyOf } from '../../src/core/lazy-row.js';
import { ChangeJsonWriter } from '../../src/pipeline/change-json.js';
import { decodeChange } from '../../src/schema/decode-change.js';
import { ChangeScanner } from '../../src/schema/scan-change.js';
import { copyField, CopyText } from '../../src/sink/postgres/copy-in.js';

/** A lazy row's values as the postgres sink stages them (COPY text), or undefined for another row. */
function copyLineOf(row: Row): string | undefined {
  const json = lazyJsonOf(row);
  if (json === undefined) return undefined;
  const out = new CopyText();
  out.jsonValues(json);
  out.text('\n');
  out.endRow();
  return Buffer.concat(out.chunks()).toString('utf8').slice(0, -1);
}

function event(over: Partial<ChangeEvent> = {}): ChangeEvent {
  return {
    source: 'slot_a', schema: 'public', table: 'orders', op: 'INSERT', lsn: '0/16B3748', commit_lsn: '0/16B37A0', xid: 731, seq: 2,
    commit_ts: '2026-12-06T00:24:29.185838Z', key: { id: '2' }, payload: { id: '2', note: 'héllo 😀', n: null, empty: '' },
    _version: '152768172787761154', _schema_version: 1, ...over,
  };
}

/** The event's stream text, as capture writes it. */
function textOf(e: ChangeEvent): string {
  const w = new ChangeJsonWriter(64);
  const end = w.write(e);
  return w.bytes.subarray(0, end).toString('utf8');
}

/** JSON.stringify of a scanned event (a lazy payload is parsed by it) must be the text itself. */
function expectSame(scanned: ChangeEvent | undefined, text: string): void {
  expect(scanned).toBeDefined();
  expect(JSON.stringify(scanned)).toBe(JSON.stringify(JSON.parse(text)));
  expect(scanned).toEqual(JSON.parse(text));
}

describe('ChangeScanner', () => {
  it('scans the events capture writes into what JSON.parse makes of them', () => {
    const scanner = new ChangeScanner();
    const cases: ChangeEvent[] = [
      event(),
      event({ seq: 3, key: { id: '3' }, payload: { id: '3', note: 'x', n: 'not null', empty: '' } }), // same shape again
      event({ payload: { id: '2', note: 'x' } }), // fewer columns
      event({ payload: { id: '2', note: 'x', n: null, empty: '', added: 'y' } }), // more columns
      event({ payload: { note: 'x', id: '2' } }), // another order
      event({ op: 'DELETE', payload: null }),
      event({ op: 'TRUNCATE', key: {}, payload: null, seq: 0, xid: 0 }),
      event({ key: {}, payload: { a: '1', b: null } }), // keyless
      event({ key: { a: '1', b: '2' }, payload: { a: '1', b: '2' } }),
      event({ payload: {} }),
      event({ tx_last: true }),
      event({ tx_last: true, tx_prev: '0/16B3000' }),
      event({ xid: 999_999_999_999_999, seq: 0, _schema_version: 0 }),
      event({ table: 'Ordér x', payload: { 'col ümlaut': '{json: [1, 2]} :null, x', '': 'empty name' } }),
    ];
    for (const e of cases) {
      const text = textOf(e);
      expectSame(scanner.scan(text), text);
    }
  });

  it('leaves every other text to JSON.parse (undefined)', () => {
    const scanner = new ChangeScanner();
    const good = textOf(event());
    const others = [
      textOf(event({ payload: { id: '2', note: 'tab\there' } })), // escaped in JSON
      textOf(event({ payload: { id: '2', note: 'back\\slash' } })),
      textOf(event({ payload: { id: '2', note: 'quote"d' } })),
      textOf(event({ before: { id: '1' } })), // another member
      textOf(event({ unchanged: ['note'] })),
      textOf(event({ tx_prev: '0/1' })), // tx_prev without tx_last
      good.replace('"note":"héllo 😀"', '"note":1'), // a number in a row
      good.replace('"note":"héllo 😀"', '"note":{"a":"b"}'),
      good.replace('"note":"héllo 😀"', '"note":true'),
      good.replace('"n":null', '"id":null'), // a duplicate column
      good.replace('"n":null', '"__proto__":null'),
      good.replace('{"id":"2"},"payload"', '{"__proto__":"2"},"payload"'),
      good.replace('"xid":731', '"xid":0731'),
      good.replace('"xid":731', '"xid":-731'),
      good.replace('"xid":731', '"xid":7.31'),
      good.replace('"xid":731', '"xid":1234567890123456'),
      good.replace('"seq":2', '"seq": 2'),
      good.replace('"héllo 😀"', '"raw\ttab"'), // a raw control character: not JSON
      `${good} `,
      good.slice(0, -1),
      good.slice(0, 40),
      '',
      'null',
      good.replace('"source"', '"Source"'),
    ];
    for (const text of others) expect(scanner.scan(text), text).toBeUndefined();
    // And the scanner is not thrown off for the next event.
    expectSame(scanner.scan(good), good);
  });

  it('agrees with JSON.parse on arbitrary rows (property)', () => {
    const text = fc.oneof(fc.string({ maxLength: 12 }), fc.string({ unit: 'grapheme', maxLength: 12 }), fc.string({ unit: 'binary', maxLength: 12 }));
    const value = fc.oneof(fc.constant(null), text, fc.constantFrom('null', '\\N', '', '"', '\\', '\t', '__proto__'));
    const row = fc.dictionary(fc.oneof(fc.string({ maxLength: 6 }), fc.constantFrom('__proto__', 'id', 'n')), value, { maxKeys: 6 });
    let accepted = 0;
    fc.assert(
      fc.property(fc.array(fc.tuple(row, row), { minLength: 1, maxLength: 8 }), (pairs) => {
        const scanner = new ChangeScanner();
        for (const [key, payload] of pairs) {
          const text = textOf(event({ key, payload }));
          const scanned = scanner.scan(text);
          if (scanned === undefined) continue;
          accepted++;
          const lazy = scanned.payload as Row;
          const plain = JSON.parse(text).payload as Row;
          // Read without parsing first, then as the object.
          expect(columnsOf(lazy)).toEqual(Object.keys(plain));
          expect(lazyValuesOf(lazy)).toEqual(Object.values(plain));
          expect(copyLineOf(lazy)).toBe(Object.values(plain).map(copyField).join('\t'));
          expectSame(scanned, text);
        }
      }),
      { numRuns: 300 },
    );
    expect(accepted).toBeGreaterThan(100);
  });

  it('agrees with JSON.parse on runs of rows of one shape (property)', () => {
    const value = fc.oneof(fc.constant(null), fc.string({ maxLength: 8 }), fc.string({ unit: 'binary', maxLength: 8 }), fc.constantFrom('null', '"', '\\', '}', '},"_version":"1"'));
    const name = fc.oneof(fc.string({ maxLength: 5 }), fc.constantFrom('a.b', '(x)', '[^"]*', '\\d', '$&', 'é😀'));
    let accepted = 0;
    fc.assert(
      fc.property(fc.uniqueArray(name, { maxLength: 5 }), fc.array(fc.array(value, { minLength: 5, maxLength: 5 }), { minLength: 1, maxLength: 6 }), (names, rows) => {
        const scanner = new ChangeScanner();
        for (const values of rows) {
          const payload: Row = {};
          names.forEach((n, i) => {
            payload[n] = values[i] ?? null;
          });
          const text = textOf(event({ payload }));
          const scanned = scanner.scan(text);
          if (scanned === undefined) continue;
          accepted++;
          const plain = JSON.parse(text).payload as Row;
          expect(copyLineOf(scanned.payload as Row)).toBe(Object.values(plain).map(copyField).join('\t'));
          expectSame(scanned, text);
        }
      }),
      { numRuns: 300 },
    );
    expect(accepted).toBeGreaterThan(100);
  });

  it('decodeChange with a scanner decodes and validates as without one', () => {
    const scanner = new ChangeScanner();
    for (const e of [event(), event({ op: 'DELETE', payload: null }), event({ payload: { id: '1', t: 'a\\b' } })]) {
      const value = Buffer.from(textOf(e));
      expect(JSON.stringify(decodeChange(value, scanner))).toBe(JSON.stringify(decodeChange(value)));
    }
    for (const bad of [event({ op: 'UPSERT' as ChangeEvent['op'] }), event({ _version: 'x1' }), event({ op: 'INSERT', payload: null })]) {
      const value = Buffer.from(textOf(bad));
      expect(() => decodeChange(value, scanner)).toThrow(/not a valid change event/);
      expect(() => decodeChange(value)).toThrow(/not a valid change event/);
    }
  });
});

describe('lazy rows', () => {
  const lazyOf = (payload: Row): Row => new ChangeScanner().scan(textOf(event({ payload })))?.payload as Row;

  it('behave as the plain row: keys, values, in, spread, JSON, iteration', () => {
    const plain: Row = { id: '2', note: 'héllo', n: null };
    const row = lazyOf(plain);
    expect(Object.keys(row)).toEqual(['id', 'note', 'n']);
    expect(row.note).toBe('héllo');
    expect(row.n).toBeNull();
    expect('n' in row).toBe(true);
    expect('missing' in row).toBe(false);
    expect(row.missing).toBeUndefined();
    expect({ ...row }).toEqual(plain);
    expect(JSON.stringify(row)).toBe(JSON.stringify(plain));
    expect(Object.entries(row)).toEqual(Object.entries(plain));
    expect(Object.getPrototypeOf(row)).toBe(Object.prototype);
    expect(Object.prototype.hasOwnProperty.call(row, 'id')).toBe(true);
    const seen: string[] = [];
    for (const k in row) seen.push(k);
    expect(seen).toEqual(['id', 'note', 'n']);
  });

  it('pass their text on until written to, then are plain rows', () => {
    const reads = lazyOf({ id: '2', note: 'x', n: null });
    expect(copyLineOf(reads)).toBe('2\tx\t\\N');
    expect(reads.note).toBe('x'); // reading parses, and keeps the text valid
    expect(copyLineOf(reads)).toBe('2\tx\t\\N');
    expect(columnsOf(reads)).toEqual(['id', 'note', 'n']);
    expect(shapeKeyOf(reads)).toBe('id\u0000note\u0000n');

    const writes: [string, (r: Row) => void, Row][] = [
      ['set', (r) => { r.note = 'y'; }, { id: '2', note: 'y', n: null }],
      ['add', (r) => { r.extra = 'z'; }, { id: '2', note: 'x', n: null, extra: 'z' }],
      ['delete', (r) => { delete r.note; }, { id: '2', n: null }],
      ['define', (r) => { Object.defineProperty(r, 'note', { value: 'w', enumerable: true, writable: true, configurable: true }); }, { id: '2', note: 'w', n: null }],
      ['assign', (r) => { Object.assign(r, { n: 'v' }); }, { id: '2', note: 'x', n: 'v' }],
    ];
    for (const [what, write, want] of writes) {
      const row = lazyOf({ id: '2', note: 'x', n: null });
      write(row);
      expect(row, what).toEqual(want);
      expect(copyLineOf(row), what).toBeUndefined();
      expect(lazyValuesOf(row), what).toBeUndefined();
      expect(columnsOf(row), what).toEqual(Object.keys(want));
      expect(shapeKeyOf(row), what).toBe(Object.keys(want).join('\u0000'));
    }
    const frozen = Object.freeze(lazyOf({ id: '2' }));
    expect(Object.isFrozen(frozen)).toBe(true);
    expect(frozen).toEqual({ id: '2' });
    expect(copyLineOf(frozen)).toBeUndefined();
  });

  it('plain rows answer the same helpers', () => {
    const plain: Row = { b: '1', a: null };
    expect(copyLineOf(plain)).toBeUndefined();
    expect(lazyValuesOf(plain)).toBeUndefined();
    expect(columnsOf(plain)).toEqual(['b', 'a']);
    expect(shapeKeyOf(plain)).toBe('b\u0000a');
  });
});
