import { quoteIdent } from '../core/sql.js';

/**
 * How verify reads one column on each side of a postgres target whose declared type differs
 * from the source's, so that a value the sink stored faithfully compares equal and every
 * other difference shows. Pure: decided from the two format_type texts.
 *
 * - `same`: the declarations are equal; both sides read the column as it is.
 * - `widen`: the target's type holds every value of the source's exactly, in the same order
 *   (varchar(4) → text, char(4) → char(8), integer → bigint, numeric(12,2) → numeric(14,4),
 *   timestamp(3) → timestamp(6), bit varying(4) → bit varying, json → jsonb, date → timestamp, arrays
 *   of these (arrayForm) ...): the source is cast to the
 *   target's type, which cannot fail, round or truncate. Read the other way (the target cast
 *   to the narrower source type) a value only the target can hold would be rounded away or
 *   fail the whole verify.
 * - `trimmed`: both sides numbers of another kind or scale (numeric ↔ numeric(p,s), integers):
 *   compared as numeric by value, trailing fractional zeros trimmed (`numeric(20,5)` keeps 1.5
 *   as 1.50000: the scale cannot be kept, the value can).
 * - `float`: a numeric, integer (or real in float8) source kept in a float8/float4 target: compared as the sink
 *   writes it (the source's text read as a double, which is what `numeric::float8` does),
 *   both printed as the shortest text that reads back as the same double (extra_float_digits
 *   is pinned to 3). Exact on doubles: neighbouring doubles differ. A source value no double
 *   holds (the sink could not write it) compares as its numeric text, which no double prints.
 * - `text`: a text or varchar target of any other source type: compared as text, the source's
 *   value printed by its type's output function (what the sink received and stored; unlike
 *   `::text`, which prints booleans as `true` and strips char(n)'s padding).
 * - `narrow`: anything else: the target is read as the source's type (a narrower target then
 *   shows the values it could not hold as differences; a target value the source type cannot
 *   hold fails that table's verify with the cast's error).
 *
 * Key columns take only `same`, `widen` and `trimmed` (else `narrow`): their ranges are
 * compared in one order on both sides and must use the source's key index.
 */
export type FormKind = 'same' | 'widen' | 'trimmed' | 'float' | 'text' | 'narrow';

export interface ColumnForm {
  kind: FormKind;
  /** The type of the compared values (what the row hash sees): a format_type text. */
  type: string;
  /** The type range bounds and looked-up keys are cast to on both sides (key columns). */
  boundType: string;
}

interface ParsedType {
  /** `timestamp without time zone`, `character varying`, `numeric` ... without modifiers. */
  base: string;
  mods: number[];
}

/** format_type text → base name and modifiers; undefined for arrays, qualified or quoted names. */
function parse(type: string): ParsedType | undefined {
  const m = /^([a-z][a-z ]*?)(?:\((\d+)(?:,(\d+))?\))?( with(?:out)? time zone)?$/.exec(type);
  if (!m) return undefined;
  return { base: `${m[1] as string}${m[4] ?? ''}`, mods: [m[2], m[3]].filter((x): x is string => x !== undefined).map(Number) };
}

const INTEGER_RANK: Record<string, number> = { smallint: 1, integer: 2, bigint: 3 };
const STRINGS = new Set(['text', 'character varying']);
/** Types whose only modifier is a fractional-seconds precision (6 when absent). */
const PRECISION_TYPES = new Set(['timestamp without time zone', 'timestamp with time zone', 'time without time zone', 'time with time zone', 'interval']);
const FLOATS = new Set(['double precision', 'real']);
/** A text or varchar type: its `::text` is its output. */
const STRING_TYPE = /^(text|character varying(\(\d+\))?)$/;

const isNumber = (t: ParsedType): boolean => t.base === 'numeric' || t.base in INTEGER_RANK;

/**
 * Whether every value of `s` casts exactly (no rounding, truncation or failure) into `t`,
 * keeping its text and order. `keyed`: also in one btree operator family, so a comparison of
 * the source's key column with a bound of `t` uses its index.
 */
function widens(s: ParsedType, t: ParsedType, keyed: boolean): boolean {
  const [sm, sn] = s.mods;
  const [tm, tn] = t.mods;
  if (s.base in INTEGER_RANK && t.base in INTEGER_RANK) return (INTEGER_RANK[t.base] as number) > (INTEGER_RANK[s.base] as number);
  if (s.base === 'numeric' && t.base === 'numeric') {
    // numeric(p,s) ⊆ numeric(p2,s2) when it has no more integer digits and no more scale; unconstrained holds all.
    if (tm === undefined) return sm !== undefined;
    return sm !== undefined && (tn ?? 0) >= (sn ?? 0) && tm - (tn ?? 0) >= sm - (sn ?? 0);
  }
  if (STRINGS.has(s.base) && STRINGS.has(t.base)) return tm === undefined || (sm !== undefined && tm >= sm);
  if (s.base === 'character' && t.base === 'character') return sm !== undefined && tm !== undefined && tm >= sm;
  if (PRECISION_TYPES.has(s.base) && s.base === t.base) return (tm ?? 6) >= (sm ?? 6);
  if (s.base === 'bit varying' || (s.base === 'bit' && !keyed)) return t.base === 'bit varying' && (tm === undefined || (sm !== undefined && tm >= sm));
  // json keeps its text; a jsonb target holds it parsed (spaces gone, the last of a repeated key), as json::jsonb does.
  if (s.base === 'json' && t.base === 'jsonb') return !keyed;
  // A date is the timestamp of its midnight (as the sink's '2024-01-01'::timestamp), infinities included.
  if (s.base === 'date' && t.base === 'timestamp without time zone') return !keyed;
  return false;
}

/** How column of `type` at the source, `targetType` at the target, is compared (see FormKind). */
export function columnForm(type: string, targetType: string, key: boolean): ColumnForm {
  const same = { type, boundType: type };
  if (type === targetType) return { kind: 'same', ...same };
  const array = !key && type.endsWith('[]') && targetType.endsWith('[]') ? arrayForm(type.slice(0, -2), targetType.slice(0, -2)) : undefined;
  if (array) return array;
  const s = parse(type);
  const t = parse(targetType);
  if (s && t) {
    if (widens(s, t, key)) return { kind: 'widen', type: targetType, boundType: targetType };
    // numeric's order is the same at every scale: a key compares by value, bounds unconstrained.
    if (s.base === 'numeric' && isNumber(t)) return { kind: 'trimmed', type: 'numeric', boundType: 'numeric' };
    if (!key) {
      if (s.base in INTEGER_RANK && t.base === 'numeric') return { kind: 'trimmed', type: 'numeric', boundType: type };
      // real in double precision: the sink wrote real's text (0.1), not its binary value widened (0.100000001490116).
      if ((isNumber(s) || (s.base === 'real' && t.base === 'double precision')) && FLOATS.has(t.base)) return { kind: 'float', type: 'text', boundType: type };
      if (STRINGS.has(t.base)) return { kind: 'text', type: 'text', boundType: type };
    }
  } else if (!key && t && STRINGS.has(t.base)) return { kind: 'text', type: 'text', boundType: type };
  // The rule of old for an unconstrained numeric in any other non-key column: compared by value.
  if (!key && type === 'numeric') return { kind: 'trimmed', type: 'numeric', boundType: type };
  return { kind: 'narrow', ...same };
}

/**
 * Arrays (non-key) whose elements are declared otherwise: elements that widen are compared in
 * the target's array type (varchar(4)[] in text[], numeric(12,2)[] in numeric[]: the source
 * cast up, so an element only the target can hold is not cut or rounded away by reading the
 * target as the source's type); numeric elements of another scale are compared by value, as
 * the array's text with every element's trailing fractional zeros trimmed (numeric[] in
 * numeric(12,2)[] keeps 1.5 as 1.50). Undefined: the general rules apply.
 */
function arrayForm(element: string, targetElement: string): ColumnForm | undefined {
  const s = parse(element);
  const t = parse(targetElement);
  if (!s || !t) return undefined;
  const targetType = `${targetElement}[]`;
  if (widens(s, t, false)) return { kind: 'widen', type: targetType, boundType: targetType };
  if (s.base === 'numeric' && t.base === 'numeric') return { kind: 'trimmed', type: 'text', boundType: `${element}[]` };
  return undefined;
}

/**
 * The smallest magnitudes a float8 / float4 reads as non-zero and the first ones it reads as
 * infinite (float8in/float4in reject both): 2^-1075, 2^1024 - 2^970; 2^-150, 2^128 - 2^103.
 * Exact decimals, so that every value the sink could write is cast and no other is.
 */
function floatLimits(bits: 64 | 32): { under: string; over: string } {
  const [minExp, maxExp, mantissa] = bits === 64 ? [1075n, 1024n, 53n] : [150n, 128n, 24n];
  const frac = (5n ** minExp).toString().padStart(Number(minExp), '0');
  return { under: `0.${frac}`, over: (2n ** maxExp - 2n ** (maxExp - mantissa - 1n)).toString() };
}
const LIMITS = { 'double precision': floatLimits(64), real: floatLimits(32) };

/**
 * A column's value as compared on `side`: `col` is the column's (quoted) name. Expressions
 * are parenthesized where an operator could bind into them.
 */
export function formValue(form: ColumnForm, side: 'source' | 'target', name: string, sourceType: string, targetType: string): string {
  const col = quoteIdent(name);
  switch (form.kind) {
    case 'same':
      return col;
    case 'widen':
      return side === 'source' ? `${col}::${targetType}` : col;
    case 'trimmed':
      // numeric arrays (arrayForm): trailing fractional zeros of each element trimmed in the array's text.
      if (form.type === 'text') return `regexp_replace(regexp_replace(${col}::text, '(\\.[0-9]*?)0+(?=[,}])', '\\1', 'g'), '\\.(?=[,}])', '', 'g')`;
      return `trim_scale(${col}${(side === 'source' ? sourceType : targetType).startsWith('numeric') ? '' : '::numeric'})`;
    case 'float': {
      if (side === 'target') return `${col}::text`;
      const limits = LIMITS[targetType === 'real' ? 'real' : 'double precision'];
      if (sourceType === 'real') return `${col}::text::${targetType}::text`;
      if (!sourceType.startsWith('numeric')) return `${col}::${targetType}::text`;
      // NaN and ±Infinity fail the range test and print as a float does.
      return `(CASE WHEN ${col} = 0 OR abs(${col}) > ${limits.under} AND abs(${col}) < ${limits.over} THEN ${col}::${targetType}::text ELSE ${col}::text END)`;
    }
    case 'text':
      if (side === 'target' || STRING_TYPE.test(sourceType)) return `${col}::text`;
      // format's %s prints with the type's output function; num_nulls is 0 for a row of NULLs (`IS NULL` is not).
      return `(CASE WHEN num_nulls(${col}) = 0 THEN format('%s', ${col}) END)`;
    case 'narrow':
      return side === 'source' ? col : `${col}::${sourceType}`;
  }
}

/**
 * A key column as ranges, ORDER BY and key look-ups compare it: the source's column itself
 * (its index serves; bounds are cast to `boundType`, in its operator family), the target's
 * as is when its order is that of `boundType`, else read as it.
 */
export function formKey(form: ColumnForm, side: 'source' | 'target', name: string): string {
  const col = quoteIdent(name);
  if (side === 'source' || form.kind === 'same' || form.kind === 'widen') return col;
  return `${col}::${form.boundType}`;
}
