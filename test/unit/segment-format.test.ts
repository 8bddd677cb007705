import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  CORRUPT,
  INCOMPLETE,
  MAX_KEY_BYTES,
  checkRecord,
  decodeRecords,
  encodeRecord,
  encodeRecordInto,
  encodedLength,
  type DecodedRecord,
} from '../../src/stream/embedded/segment-format.js';

const recordArb = fc.record({
  key: fc.string({ maxLength: 40, unit: 'binary' }),
  value: fc.uint8Array({ maxLength: 300 }),
  timestamp: fc.oneof(fc.integer({ min: 0, max: 2 ** 45 }), fc.double({ noNaN: true })),
});

function encodeAll(records: { key: string; value: Uint8Array; timestamp: number }[]): {
  buf: Buffer;
  expected: DecodedRecord[];
} {
  const expected = records.map((r, i) => ({
    offset: BigInt(i) + 1000n,
    timestamp: r.timestamp,
    // Lone surrogates cannot round-trip through UTF-8: the expected key is what UTF-8 keeps.
    key: Buffer.from(r.key, 'utf8').toString('utf8'),
    value: Buffer.from(r.value),
  }));
  const buf = Buffer.concat(expected.map((r) => encodeRecord(r.offset, r.timestamp, r.key, r.value)));
  return { buf, expected };
}

describe('segment format', () => {
  it('round-trips records', () => {
    fc.assert(
      fc.property(fc.array(recordArb, { maxLength: 20 }), (records) => {
        const { buf, expected } = encodeAll(records);
        const result = decodeRecords(buf);
        expect(result.stop).toBe('end');
        expect(result.next).toBe(buf.length);
        expect(result.records).toEqual(expected);
      }),
    );
  });

  it('yields the same records when the buffer is split at every byte boundary', () => {
    fc.assert(
      fc.property(fc.array(recordArb, { minLength: 1, maxLength: 5 }), (records) => {
        const { buf, expected } = encodeAll(records);
        for (let split = 0; split <= buf.length; split++) {
          // As a streaming reader does: decode what has arrived, keep the undecoded tail,
          // append the rest when it arrives.
          const first = decodeRecords(buf.subarray(0, split));
          expect(first.stop === 'end' || first.stop === 'incomplete').toBe(true);
          const rest = Buffer.concat([buf.subarray(first.next, split), buf.subarray(split)]);
          const second = decodeRecords(rest);
          expect(second.stop).toBe('end');
          expect([...first.records, ...second.records]).toEqual(expected);
        }
      }),
      { numRuns: 50 },
    );
  });

  it('returns a clean stop on random garbage, never throwing', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 2000 }), (bytes) => {
        const buf = Buffer.from(bytes);
        const result = decodeRecords(buf);
        expect(result.next).toBeGreaterThanOrEqual(0);
        expect(result.next).toBeLessThanOrEqual(buf.length);
        expect(['end', 'incomplete', 'corrupt']).toContain(result.stop);
      }),
      { numRuns: 2000 },
    );
  });

  it('keeps the valid records before a garbage tail and stops where the garbage starts', () => {
    fc.assert(
      fc.property(
        fc.array(recordArb, { minLength: 1, maxLength: 5 }),
        fc.uint8Array({ minLength: 1, maxLength: 200 }),
        (records, garbage) => {
          const { buf, expected } = encodeAll(records);
          const result = decodeRecords(Buffer.concat([buf, Buffer.from(garbage)]));
          expect(result.records.slice(0, expected.length)).toEqual(expected);
          if (result.records.length === expected.length) {
            expect(result.next).toBe(buf.length);
            expect(result.stop === 'incomplete' || result.stop === 'corrupt').toBe(true);
          }
        },
      ),
    );
  });

  it('never returns a record with any byte changed', () => {
    const record = encodeRecord(7n, 1_700_000_000_000, 'public.t:[1]', Buffer.from('{"a":1}'));
    for (let i = 0; i < record.length; i++) {
      for (const flip of [0x01, 0x80, 0xff]) {
        const damaged = Buffer.from(record);
        damaged[i] = (damaged[i] as number) ^ flip;
        const result = decodeRecords(damaged);
        expect(result.records).toEqual([]);
        expect(result.next).toBe(0);
      }
    }
  });

  it('classifies incomplete and corrupt records', () => {
    const record = encodeRecord(0n, 1, 'k', Buffer.from('v'));
    expect(checkRecord(record, 0, record.length)).toBe(record.length);
    expect(checkRecord(record, 0, record.length - 1)).toBe(INCOMPLETE);
    expect(checkRecord(record, 0, 3)).toBe(INCOMPLETE);
    const tooShort = Buffer.from(record);
    tooShort.writeUInt32BE(3, 0);
    expect(checkRecord(tooShort, 0, tooShort.length)).toBe(CORRUPT);
    const huge = Buffer.from(record);
    huge.writeUInt32BE(0xffffffff, 0);
    expect(checkRecord(huge, 0, huge.length)).toBe(CORRUPT);
  });

  it('writes the same bytes for an offset given as a number (a writer counting in numbers) as for the bigint', () => {
    for (const offset of [0, 1, 0xffffffff, 0x100000000, 0x1_2345_6789, Number.MAX_SAFE_INTEGER]) {
      const key = 'public.t:["é"]';
      const value = Buffer.from('{"a":1}');
      const n = Buffer.alloc(encodedLength(Buffer.byteLength(key), value.length));
      expect(encodeRecordInto(n, 0, offset, 1.5e12, key, value)).toBe(n.length);
      expect(n.equals(encodeRecord(BigInt(offset), 1.5e12, key, value))).toBe(true);
      expect(decodeRecords(n).records[0]?.offset).toBe(BigInt(offset));
    }
  });

  it('honours maxRecords', () => {
    const { buf } = encodeAll([
      { key: 'a', value: new Uint8Array([1]), timestamp: 1 },
      { key: 'b', value: new Uint8Array([2]), timestamp: 2 },
    ]);
    const result = decodeRecords(buf, 0, buf.length, 1);
    expect(result.records.map((r) => r.key)).toEqual(['a']);
    expect(result.stop).toBe('limit');
    expect(decodeRecords(buf, result.next).records.map((r) => r.key)).toEqual(['b']);
  });

  it('rejects keys longer than a u16 length can describe', () => {
    expect(() => encodeRecord(0n, 0, 'x'.repeat(MAX_KEY_BYTES + 1), Buffer.alloc(0))).toThrow(/key is/);
    expect(() => encodeRecord(0n, 0, 'x'.repeat(MAX_KEY_BYTES), Buffer.alloc(0))).not.toThrow();
  });
});
