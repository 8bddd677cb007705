import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterAll, describe, expect, it } from 'vitest';
import { SchemaChangeCodec } from '../../src/schema/change-codec.js';
import { LocalSchemaStore } from '../../src/schema/local-schema-store.js';
import { pgNameOf, schemaName } from '../../src/schema/names.js';
import { decimalFromBytes, decimalToBytes, textOf, typedValueOf } from '../../src/schema/pg-values.js';
import { decodeMessageIndexes, encodeMessageIndexes, frame, unframe } from '../../src/schema/wire-format.js';
import { DEFINITION, changeArb, pgText } from '../helpers/schema-changes.js';

const dir = mkdtempSync(join(tmpdir(), 'syncline-schema-codec-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('PostgreSQL text ↔ typed values', () => {
  const cases: [Parameters<typeof typedValueOf>[0], keyof typeof pgText, number?][] = [
    ['int', 'int4'],
    ['long', 'int8'],
    ['float4', 'float4'],
    ['float8', 'float8'],
    ['bool', 'bool'],
    ['bytes', 'bytea'],
    ['decimal', 'numeric12_3', 3],
    ['timestamptz', 'timestamptz'],
    ['timestamp', 'timestamp'],
    ['date', 'date'],
    ['time', 'time'],
  ];
  for (const [kind, gen, scale] of cases) {
    it(`${kind}: text → typed → the same text`, () => {
      fc.assert(fc.property(pgText[gen], (text) => textOf(kind, typedValueOf(kind, text, scale), scale) === text), { numRuns: 2000 });
    });
  }

  it('prints what PostgreSQL prints', () => {
    expect(textOf('float8', 1e-5)).toBe('1e-05');
    expect(textOf('float8', 1e-4)).toBe('0.0001');
    expect(textOf('float8', 1e14)).toBe('100000000000000');
    expect(textOf('float8', 1e15)).toBe('1e+15');
    expect(textOf('float8', 1.5e300)).toBe('1.5e+300');
    expect(textOf('float8', -0)).toBe('-0');
    expect(textOf('float4', Math.fround(1234567))).toBe('1.234567e+06');
    expect(textOf('float4', 123456)).toBe('123456');
    expect(textOf('timestamptz', typedValueOf('timestamptz', '0001-01-01 00:00:00+00 BC'))).toBe('0001-01-01 00:00:00+00 BC');
    expect(typedValueOf('timestamptz', '1970-01-01 00:00:00.5+00')).toBe(500000n);
    expect(typedValueOf('date', '1970-01-02')).toBe(1);
    expect(typedValueOf('time', '24:00:00')).toBe(86_400_000_000n);
    expect(textOf('decimal', typedValueOf('decimal', '-0.05', 2), 2)).toBe('-0.05');
  });

  it('refuses text in another form instead of altering it', () => {
    expect(() => typedValueOf('decimal', '1.5', 2)).toThrow(/as decimal exactly/);
    expect(() => typedValueOf('timestamptz', '2024-01-01 00:00:00+02')).toThrow(/timestamptz/);
    expect(() => typedValueOf('int', '007')).toThrow();
    expect(() => typedValueOf('float8', '1e-5')).toThrow();
    expect(() => typedValueOf('timestamp', '2024-01-01 00:00:00.500')).toThrow();
  });

  it('decimal bytes are two\'s complement, big-endian, shortest', () => {
    fc.assert(fc.property(fc.bigInt({ min: -(2n ** 200n), max: 2n ** 200n }), (v) => decimalFromBytes(decimalToBytes(v)) === v));
    expect(decimalToBytes(150n).toString('hex')).toBe('0096');
    expect(decimalToBytes(-1n).toString('hex')).toBe('ff');
    expect(decimalToBytes(-129n).toString('hex')).toBe('ff7f');
  });
});

describe('names', () => {
  it('are reversible and valid Avro/Protobuf names', () => {
    fc.assert(
      fc.property(fc.string({ unit: 'grapheme', minLength: 1 }), (n) => {
        const s = schemaName(n);
        return /^[A-Za-z_][A-Za-z0-9_]*$/.test(s) && pgNameOf(s) === n;
      }),
    );
  });
});

describe('Confluent wire format', () => {
  it('frames and unframes any id, payload and message indexes', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 2 ** 32 - 1 }), fc.uint8Array({ maxLength: 64 }), fc.option(fc.array(fc.integer({ min: 0, max: 2 ** 28 }), { minLength: 1, maxLength: 5 }), { nil: undefined }), (id, bytes, indexes) => {
        const payload = Buffer.from(bytes);
        const f = unframe(frame(id, payload, indexes), indexes !== undefined);
        expect(f.schemaId).toBe(id);
        expect(f.payload.equals(payload)).toBe(true);
        if (indexes) expect(f.messageIndexes).toEqual(indexes);
      }),
    );
  });

  it('writes the message index path [0] as the single byte 0, others as zigzag varints', () => {
    expect([...encodeMessageIndexes([0])]).toEqual([0]);
    expect([...encodeMessageIndexes([1])]).toEqual([2, 2]);
    expect([...encodeMessageIndexes([0, 64])]).toEqual([4, 0, 0x80, 0x01]);
    expect(decodeMessageIndexes(Buffer.from([4, 0, 0x80, 0x01]), 0)).toEqual({ indexes: [0, 64], end: 4 });
    expect([...frame(7, Buffer.from([9]), [0])]).toEqual([0, 0, 0, 0, 7, 0, 9]);
  });

  it('refuses a record that is not framed', () => {
    expect(() => unframe(Buffer.from('{"a":1}'), false)).toThrow(/EVENT_MALFORMED|wire format/);
    expect(() => unframe(Buffer.from([0, 0, 0, 0, 1, 0x80]), true)).toThrow(/truncated/);
  });
});

describe.each(['avro', 'json_schema', 'protobuf'] as const)('%s codec with the local schema store', (format) => {
  const store = new LocalSchemaStore(join(dir, `${format}.jsonl`));
  const codec = new SchemaChangeCodec({ format, store, topic: 'db-changes', subjectStrategy: 'topic_record' });

  it('decodes every change it encodes to the identical event', async () => {
    await fc.assert(
      fc.asyncProperty(changeArb, async (change) => {
        const { value } = await codec.encode(change, DEFINITION);
        expect(await codec.decode(value)).toEqual(change);
      }),
      { numRuns: 300 },
    );
  });

  it('a reader in another process finds the schema by id in the file', async () => {
    const [change] = fc.sample(changeArb, 1);
    const { value } = await codec.encode(change as never, DEFINITION);
    const reader = new SchemaChangeCodec({ format: 'avro', store: new LocalSchemaStore(store.file), topic: 'x', subjectStrategy: 'topic' });
    expect(await reader.decode(value)).toEqual(change);
    // and today's JSON records too (a stream whose format changed)
    expect(await reader.decode(Buffer.from(JSON.stringify(change)))).toEqual(change);
  });

  it('an id the store does not know is SCHEMA_UNKNOWN, permanent', async () => {
    await expect(codec.decode(frame(99999, Buffer.from([1, 2])))).rejects.toMatchObject({ code: 'SCHEMA_UNKNOWN', retriable: false });
  });

  it('refuses a change that does not fit its definition', async () => {
    const [change] = fc.sample(changeArb.filter((c) => c.payload !== null), 1) as [NonNullable<ReturnType<typeof Object>>];
    const bad = { ...change, payload: { ...change.payload, extra: '1' } };
    await expect(codec.encode(bad, DEFINITION)).rejects.toMatchObject({ code: 'SCHEMA_MISMATCH' });
    await expect(codec.encode({ ...change, _schema_version: 9 }, DEFINITION)).rejects.toMatchObject({ code: 'SCHEMA_MISMATCH' });
  });
});

describe('local schema store', () => {
  it('keeps ids across processes, skips a line torn by a crash, and appends after it', async () => {
    const { appendFileSync, readFileSync } = await import('node:fs');
    const file = join(dir, 'torn.jsonl');
    const first = new LocalSchemaStore(file);
    const a = await first.register('s-value', { schemaType: 'AVRO', schema: '"string"' });
    expect(await first.register('s-value', { schemaType: 'AVRO', schema: '"string"' })).toBe(a);
    appendFileSync(file, '{"id":2,"subject":"s-value","schemaType":"AV');
    const second = new LocalSchemaStore(file);
    const b = await second.register('s-value', { schemaType: 'AVRO', schema: '"long"' });
    expect(b).toBe(a + 1);
    const third = new LocalSchemaStore(file);
    expect(await third.schemaById(a)).toEqual({ schemaType: 'AVRO', schema: '"string"' });
    expect(await third.schemaById(b)).toEqual({ schemaType: 'AVRO', schema: '"long"' });
    expect(readFileSync(file, 'utf8').split('\n').filter((l) => l.endsWith('}'))).toHaveLength(2);
    await expect(third.schemaById(b + 1)).rejects.toMatchObject({ code: 'SCHEMA_UNKNOWN', retriable: false });
  });
});
