import { describe, expect, it } from 'vitest';
import { pgArrayToJson, pgByteaToBuffer, pgTextToJson, pgTimestampToUtc } from '../../src/sink/pg-text.js';
import { arrayText } from '../../src/verify/targets/source-text.js';

describe('PostgreSQL text output conversions', () => {
  it('turns array literals into JSON', () => {
    expect(pgArrayToJson('{1,2,NULL}')).toBe('["1","2",null]');
    expect(pgArrayToJson('{"a b",c,"x\\"y","NULL"}')).toBe('["a b","c","x\\"y","NULL"]');
    expect(pgArrayToJson('{{1,2},{3,4}}')).toBe('[["1","2"],["3","4"]]');
    // Lower bounds other than 1 (the only arrays printed with a dimension prefix): a JSON
    // array cannot say them, so the literal is kept whole, as a JSON string.
    expect(pgArrayToJson('[0:1]={1.5,-2e3}')).toBe('"[0:1]={1.5,-2e3}"');
    expect(pgArrayToJson('{}')).toBe('[]');
    expect(pgArrayToJson('{"{a}",b}')).toBe('["{a}","b"]');
    expect(pgArrayToJson('{a')).toBeUndefined();
    expect(pgArrayToJson('plain')).toBeUndefined();
    expect(pgArrayToJson('{12345678901234567890.123}')).toBe('["12345678901234567890.123"]');
    expect(pgArrayToJson('{ a , b }')).toBe('["a","b"]');
  });

  it('keeps arrays with lower bounds other than 1 whole, and verify reads them back as the source prints them', () => {
    // Acceptance pass 4: a SQLite target (JSON columns for arrays, as syncline creates them)
    // stored '[2:3]={7,8}' as ["7","8"], silently: the bounds were lost and verify, reading
    // it back as {7,8}, reported the row as different.
    for (const literal of ['[2:3]={7,8}', '[-5:-4][0:1]={{1,2},{3,4}}', '[0:0]={"a \\"b",NULL}', '{1,2}', '{{1,NULL},{3,4}}', '{}']) {
      expect(arrayText(pgTextToJson(literal))).toBe(literal);
    }
    expect(pgTextToJson('[2:3]={7,8}')).toBe('"[2:3]={7,8}"');
  });

  it('passes JSON through and wraps other text', () => {
    expect(pgTextToJson('{"a": 1}')).toBe('{"a": 1}');
    expect(pgTextToJson('{a,b}')).toBe('["a","b"]');
    expect(pgTextToJson('hello')).toBe('"hello"');
  });

  it('converts timestamps to UTC with exact microseconds', () => {
    expect(pgTimestampToUtc('2024-01-02 03:04:05.123+02')).toBe('2024-01-02 01:04:05.123000');
    expect(pgTimestampToUtc('2024-01-01 00:30:00+05:30')).toBe('2023-12-31 19:00:00.000000');
    expect(pgTimestampToUtc('0099-01-01 00:00:00-00:53:28')).toBe('0099-01-01 00:53:28.000000');
    expect(pgTimestampToUtc('2024-03-04 05:06:07.000001')).toBe('2024-03-04 05:06:07.000001');
    expect(pgTimestampToUtc('2024-02-29 23:59:59.999999-01')).toBe('2024-03-01 00:59:59.999999');
    expect(() => pgTimestampToUtc('infinity')).toThrow(/cannot convert/);
    expect(() => pgTimestampToUtc('2024-01-01 00:00:00+00 BC')).toThrow(/cannot convert/);
  });

  it('decodes bytea hex and escape formats', () => {
    expect(pgByteaToBuffer('\\x00ff10')).toEqual(Buffer.from([0, 255, 16]));
    expect(pgByteaToBuffer('\\x')).toEqual(Buffer.alloc(0));
    expect(pgByteaToBuffer('ab\\000\\\\c')).toEqual(Buffer.from([97, 98, 0, 92, 99]));
    expect(() => pgByteaToBuffer('bad\\9')).toThrow(/cannot convert/);
  });
});
