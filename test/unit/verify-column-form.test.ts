import { describe, expect, it } from 'vitest';
import { columnForm, formKey, formValue } from '../../src/verify/column-form.js';

const kind = (s: string, t: string, key = false): string => columnForm(s, t, key).kind;

describe('verify column forms (how a column declared otherwise at a postgres target is compared)', () => {
  it('reads a wider target declaration as the target type: the source is cast up, never the target down', () => {
    const wider: [string, string][] = [
      ['integer', 'bigint'],
      ['smallint', 'integer'],
      ['character varying(4)', 'text'],
      ['character varying(4)', 'character varying(8)'],
      ['character varying(4)', 'character varying'],
      ['text', 'character varying'],
      ['character(4)', 'character(8)'],
      ['numeric(12,2)', 'numeric(14,4)'],
      ['numeric(12,2)', 'numeric'],
      ['timestamp(3) without time zone', 'timestamp(6) without time zone'],
      ['timestamp(3) with time zone', 'timestamp with time zone'],
      ['time(0) without time zone', 'time without time zone'],
      ['interval(3)', 'interval'],
      ['bit varying(4)', 'bit varying'],
      ['bit(4)', 'bit varying(8)'],
      ['json', 'jsonb'],
      ['integer[]', 'bigint[]'],
    ];
    expect(wider.map(([s, t]) => `${s} → ${t}: ${kind(s, t)}`)).toEqual(wider.map(([s, t]) => `${s} → ${t}: widen`));
    expect(formValue(columnForm('integer', 'bigint', false), 'source', 'n', 'integer', 'bigint')).toBe('"n"::bigint');
    expect(formValue(columnForm('integer', 'bigint', false), 'target', 'n', 'integer', 'bigint')).toBe('"n"');
  });

  it('does not call narrower or unordered declarations wider', () => {
    const notWider: [string, string, string][] = [
      ['bigint', 'integer', 'narrow'],
      ['character varying(8)', 'character varying(4)', 'text'],
      ['text', 'character varying(4)', 'text'],
      ['character(8)', 'character(4)', 'narrow'],
      ['numeric(14,4)', 'numeric(12,2)', 'trimmed'],
      ['numeric(12,4)', 'numeric(12,2)', 'trimmed'],
      ['numeric(12,2)', 'numeric(12,4)', 'trimmed'],
      ['timestamp(6) without time zone', 'timestamp(3) without time zone', 'narrow'],
      ['timestamp without time zone', 'timestamp with time zone', 'narrow'],
      ['bit(4)', 'bit(8)', 'narrow'],
    ];
    expect(notWider.map(([s, t]) => `${s} → ${t}: ${kind(s, t)}`)).toEqual(notWider.map(([s, t, k]) => `${s} → ${t}: ${k}`));
  });

  it('compares numbers of other kinds by value, floats as the sink writes them, text targets as the output text', () => {
    expect([kind('numeric', 'numeric(20,5)'), kind('numeric', 'integer'), kind('integer', 'numeric(10,2)'), kind('numeric', 'money')]).toEqual(['trimmed', 'trimmed', 'trimmed', 'trimmed']);
    expect([kind('numeric', 'double precision'), kind('numeric(12,2)', 'real'), kind('bigint', 'double precision')]).toEqual(['float', 'float', 'float']);
    expect([kind('uuid', 'text'), kind('boolean', 'character varying(5)'), kind('character(4)', 'text'), kind('integer[]', 'text'), kind('"Mood"', 'text')]).toEqual(['text', 'text', 'text', 'text', 'text']);
    expect(formValue(columnForm('boolean', 'text', false), 'source', 'b', 'boolean', 'text')).toBe(`(CASE WHEN num_nulls("b") = 0 THEN format('%s', "b") END)`);
    expect(formValue(columnForm('text', 'character varying(4)', false), 'source', 't', 'text', 'character varying(4)')).toBe('"t"::text');
    expect(formValue(columnForm('numeric', 'integer', false), 'target', 'x', 'numeric', 'integer')).toBe('trim_scale("x"::numeric)');
    expect(formValue(columnForm('numeric', 'numeric(20,5)', false), 'target', 'x', 'numeric', 'numeric(20,5)')).toBe('trim_scale("x")');
    expect(formValue(columnForm('integer', 'real', false), 'source', 'i', 'integer', 'real')).toBe('"i"::real::text');
  });

  it('keys: ranges stay on the source key index (bounds cast in its operator family), other forms only where the order is kept', () => {
    expect([kind('integer', 'bigint', true), kind('character varying(4)', 'text', true), kind('numeric', 'numeric(20,5)', true), kind('numeric', 'integer', true)]).toEqual(['widen', 'widen', 'trimmed', 'trimmed']);
    // Orders differ (text vs uuid), floats round, int vs numeric has no cross-type index operator, bit vs varbit two families.
    expect([kind('uuid', 'text', true), kind('numeric', 'double precision', true), kind('integer', 'numeric', true), kind('bit(4)', 'bit varying', true)]).toEqual(['narrow', 'narrow', 'narrow', 'narrow']);
    const widen = columnForm('integer', 'bigint', true);
    expect([formKey(widen, 'source', 'k'), formKey(widen, 'target', 'k'), widen.boundType]).toEqual(['"k"', '"k"', 'bigint']);
    const trimmed = columnForm('numeric', 'integer', true);
    expect([formKey(trimmed, 'source', 'k'), formKey(trimmed, 'target', 'k'), trimmed.boundType, trimmed.type]).toEqual(['"k"', '"k"::numeric', 'numeric', 'numeric']);
    const narrow = columnForm('uuid', 'text', true);
    expect([formKey(narrow, 'source', 'k'), formKey(narrow, 'target', 'k'), formValue(narrow, 'target', 'k', 'uuid', 'text')]).toEqual(['"k"', '"k"::uuid', '"k"::uuid']);
  });
});
