import { describe, expect, it } from 'vitest';
import { codePointOrdered, fitsEncoding, keyAsBytes } from '../../src/verify/key-encoding.js';
import { SideSql, type VerifyColumn, type VerifyShape } from '../../src/verify/shape.js';

/** Byte-ordered text keys between servers of other encodings (key-encoding.ts). */
describe('verify key encoding', () => {
  it('reads a key as UTF-8 bytes where the encoding does not order as code points, or a bound may not fit', () => {
    expect(['UTF8', 'SQL_ASCII', 'LATIN1'].every(codePointOrdered)).toBe(true);
    expect(codePointOrdered('WIN1252')).toBe(false);
    expect(fitsEncoding('LATIN1', 'ÿé')).toBe(true);
    expect(fitsEncoding('LATIN1', 'œk1')).toBe(false);
    expect(fitsEncoding('WIN1252', 'abc')).toBe(true);
    expect(fitsEncoding('WIN1252', 'é')).toBe(false); // not known to fit: read as bytes anyway
    expect(keyAsBytes('WIN1252', [])).toBe(true);
    expect(keyAsBytes('LATIN1', ['a', 'é'])).toBe(false);
    expect(keyAsBytes('LATIN1', ['a', 'œk1'])).toBe(true);
    expect(keyAsBytes('UTF8', ['œk1'])).toBe(false);
  });

  const k: VerifyColumn = { from: 'k', to: 'k', type: 'text', targetType: 'text', form: { kind: 'same', type: 'text', boundType: 'text' }, targetCollation: '"pg_catalog"."C"', byteOrdered: true };
  const n: VerifyColumn = { from: 'n', to: 'n', type: 'integer', targetType: 'integer', form: { kind: 'same', type: 'integer', boundType: 'integer' } };
  const shape = (source: string): VerifyShape => ({
    source: { schema: 'public', table: 't' },
    target: { schema: 'public', table: 't' },
    label: 'public.t',
    columns: [k, n],
    key: [k, n],
    softDeletes: false,
    estimatedRows: 0,
    digest: 'record',
    utf8Bytes: true,
    encodings: { source, target: 'UTF8' },
  });

  it('compares such a key as bytea in ranges and ORDER BY, with bytea bounds; the UTF8 side keeps its key', () => {
    const params: unknown[] = [];
    const win = new SideSql(shape('WIN1252'), 'source').keyRange(['€1', '1'], null, params);
    expect(win).toEqual({ where: `true AND (convert_to("k", 'UTF8'), "n") > ($1::bytea, $2::integer)`, order: `convert_to("k", 'UTF8'), "n"` });
    expect(params).toEqual([Buffer.from('€1', 'utf8'), '1']);
    const utf8 = new SideSql(shape('WIN1252'), 'target').keyRange(['€1', '1'], null, []);
    expect(utf8.order).toBe('("k" COLLATE "pg_catalog"."C"), "n"');
    // LATIN1 orders as code points: its own key (and index) unless a bound does not fit it.
    expect(new SideSql(shape('LATIN1'), 'source').keyRange(['é', '1'], ['ÿ', '2'], []).order).toBe('"k", "n"');
    const unfit: unknown[] = [];
    expect(new SideSql(shape('LATIN1'), 'source').keyRange(['é', '1'], ['œk1', '2'], unfit).order).toBe(`convert_to("k", 'UTF8'), "n"`);
    expect(unfit).toEqual([Buffer.from('é'), '1', Buffer.from('œk1'), '2']);
  });
});
