/**
 * The inverse of the mysql and sqlite sinks' value conversions: a value as a non-PostgreSQL
 * target returns it → the text the source prints for it (output settings pinned: UTC, ISO,
 * shortest round-trip floats, hex bytea), by the *source* column's type. Pure, no I/O.
 *
 * Verify compares these texts with the source's own (digested in PostgreSQL, see
 * SideSql.digest), so a value the sink stored faithfully compares equal whatever form the
 * target keeps it in: `t`/`f` as 1/0 or BIT(1), timestamps as UTC DATETIME(6) text, bytea as
 * bytes, arrays as JSON arrays, floats as binary doubles. Two things cannot be recovered from
 * any target and are compared in a normal form on both sides instead: the scale of a numeric
 * (`1.50` and `1.5` are one value; the source side uses `trim_scale`) and the padding of
 * `char(n)` (MySQL strips it; padded back to n here).
 */

/** What a target driver hands back for one column of one row. */
export type TargetValue = string | number | bigint | Buffer | null;

/** char(n), not an array of it. */
const CHARACTER = /^character\((\d+)\)$/;

/** The source-side SQL text of a column for the comparison (see the module comment). */
export function sourceExpression(type: string, column: string): string {
  if (isNumeric(type)) return `trim_scale(${column})`;
  // `::text` of a char(n) drops its padding, and of an inet adds the netmask of a host
  // (`1.2.3.4/32`): both unlike the type's output, which is what the sinks stored (abbrev
  // is inet's output as text).
  const char = CHARACTER.exec(type);
  if (char) return `rpad(${column}, ${char[1]})`;
  if (type === 'inet') return `abbrev(${column})`;
  // `::text` of an xml is the text as written; its output (what pgoutput sent and the sinks
  // stored) drops a declaration of only the version and encoding (`<?xml version="1.0"?>`).
  if (type === 'xml') return `textin(xml_out(${column}))`;
  // Neither MariaDB nor SQLite keeps the sign of a zero: -0 is compared as 0 (adding +0 gives +0 to both zeros).
  if (type === 'double precision' || type === 'real') return `(${column} + 0::${type})`;
  return column;
}

/** numeric or numeric(p[,s]), not an array of it (`numeric(10,2)[]`: compared as its text). */
const isNumeric = (type: string): boolean => /^numeric(\(\d+(,-?\d+)?\))?$/.test(type);

/** `value` as the text PostgreSQL prints for a `type` (format_type) column; null stays null. */
export function sourceText(type: string, value: TargetValue): string | null {
  if (value === null) return null;
  if (type.endsWith('[]')) return typeof value === 'string' ? arrayText(value) : plain(value);
  if (isNumeric(type)) return numericText(value);
  const char = CHARACTER.exec(type);
  if (char) {
    // n characters, as char(n) counts them (code points, not UTF-16 units).
    const text = plain(value);
    return text + ' '.repeat(Math.max(0, Number(char[1]) - [...text].length));
  }
  switch (type) {
    case 'boolean':
      return boolText(value);
    case 'smallint':
    case 'integer':
    case 'bigint':
      return typeof value === 'number' ? value.toFixed(0) : plain(value);
    // + 0: a zero's sign is compared as 0 on both sides (see sourceExpression).
    case 'double precision':
      return floatText(toNumber(value) + 0, 15);
    case 'real':
      return floatText(toNumber(value) + 0, 6);
    case 'bytea':
      return Buffer.isBuffer(value) ? `\\x${value.toString('hex')}` : plain(value);
    default:
      if (type.startsWith('timestamp')) return timestampText(plain(value), type.includes('with time zone'));
      if (type.startsWith('time') && !type.includes('with time zone')) return trimFraction(plain(value));
      return plain(value);
  }
}

function plain(value: Exclude<TargetValue, null>): string {
  if (Buffer.isBuffer(value)) return value.toString('utf8');
  return typeof value === 'string' ? value : String(value);
}

function toNumber(value: Exclude<TargetValue, null>): number {
  return typeof value === 'number' ? value : Number(plain(value));
}

/**
 * 1/0 (integer, BIT(1) bytes) and t/true/f/false → `true`/`false`: boolean's cast to text,
 * which is what the source side's key and row texts use (`col::text`), unlike boolout's t/f.
 */
function boolText(value: Exclude<TargetValue, null>): string {
  if (Buffer.isBuffer(value)) return value.some((b) => b !== 0) ? 'true' : 'false';
  const s = plain(value);
  if (s === '1' || s === 't' || s === 'true') return 'true';
  if (s === '0' || s === 'f' || s === 'false') return 'false';
  return s;
}

/** A decimal without trailing fractional zeros (trim_scale's form); numbers never in exponent form. */
function numericText(value: Exclude<TargetValue, null>): string {
  let s = typeof value === 'number' ? fixedText(value) : plain(value);
  if (!/^-?\d*\.\d*$/.test(s)) return s;
  s = s.replace(/0+$/, '').replace(/\.$/, '');
  return s === '-0' || s === '' || s === '-' ? '0' : s;
}

/** Shortest round-trip digits of a double and the decimal exponent of the first one. */
function digitsOf(x: number): { sign: string; digits: string; exponent: number } {
  const [mantissa = '0', exp = '0'] = Math.abs(x).toExponential().split('e');
  return { sign: x < 0 ? '-' : '', digits: mantissa.replace('.', ''), exponent: Number(exp) };
}

function fixedText(x: number): string {
  if (!Number.isFinite(x)) return String(x);
  if (x === 0) return '0';
  const { sign, digits, exponent } = digitsOf(x);
  if (exponent < 0) return `${sign}0.${'0'.repeat(-exponent - 1)}${digits}`;
  const int = digits.slice(0, exponent + 1).padEnd(exponent + 1, '0');
  const frac = digits.slice(exponent + 1);
  return `${sign}${int}${frac ? `.${frac}` : ''}`;
}

/**
 * float8out/float4out with extra_float_digits > 0: the shortest text that reads back as the
 * same binary value, in exponent form (`1e+20`, `1.5e-07`) below 1e-4 or from 10^`precision`
 * (15 for float8, 6 for float4) on, as PostgreSQL prints it.
 */
export function floatText(x: number, precision: 15 | 6): string {
  if (Number.isNaN(x)) return 'NaN';
  if (x === Infinity) return 'Infinity';
  if (x === -Infinity) return '-Infinity';
  if (x === 0) return Object.is(x, -0) ? '-0' : '0';
  let value = x;
  if (precision === 6) {
    // The shortest decimal that reads back as the same single-precision value.
    const single = Math.fround(x);
    for (let p = 1; p <= 9; p++) {
      const candidate = Number(single.toPrecision(p));
      if (Math.fround(candidate) === single) {
        value = candidate;
        break;
      }
    }
  }
  const { sign, digits, exponent } = digitsOf(value);
  if (exponent < -4 || exponent >= precision) {
    const e = `${exponent < 0 ? '-' : '+'}${String(Math.abs(exponent)).padStart(2, '0')}`;
    return `${sign}${digits[0]}${digits.length > 1 ? `.${digits.slice(1)}` : ''}e${e}`;
  }
  return fixedText(value);
}

const DATE_TIME = /^(\d{4,}-\d\d-\d\d[ T]\d\d:\d\d:\d\d)(\.\d+)?$/;

/**
 * A UTC `YYYY-MM-DD HH:MM:SS[.ffffff]` (what the sinks store for timestamps) as timestamp(tz)
 * output: fraction without trailing zeros, `+00` for timestamptz. Text that already carries
 * an offset (stored as PostgreSQL sent it) is returned as is.
 */
function timestampText(text: string, withZone: boolean): string {
  const m = DATE_TIME.exec(text);
  if (!m) return text;
  return `${(m[1] as string).replace('T', ' ')}${fraction(m[2])}${withZone ? '+00' : ''}`;
}

function trimFraction(text: string): string {
  const m = /^(.*?)(\.\d+)?$/.exec(text);
  return m ? `${m[1]}${fraction(m[2])}` : text;
}

function fraction(f: string | undefined): string {
  const t = (f ?? '').replace(/0+$/, '');
  return t === '.' ? '' : t;
}

/**
 * A JSON array (how the sinks store PostgreSQL arrays: elements as strings, NULL as null,
 * nested arrays nested) as array output: `{a,"b c",NULL}`. A JSON string is an array with
 * lower bounds other than 1, which the sinks keep as its whole literal (pgArrayToJson).
 * Other text is returned as is (an empty array arrives as `{}`, which is its own output).
 */
export function arrayText(text: string): string {
  if (text.startsWith('"')) {
    try {
      const literal: unknown = JSON.parse(text);
      if (typeof literal === 'string' && literal.startsWith('[')) return literal;
    } catch {
      // Not JSON: compared as it is.
    }
    return text;
  }
  if (!text.startsWith('[')) return text;
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    return text;
  }
  if (!Array.isArray(parsed)) return text;
  const element = (v: unknown): string => {
    if (v === null) return 'NULL';
    if (Array.isArray(v)) return `{${v.map(element).join(',')}}`;
    const s = typeof v === 'string' ? v : JSON.stringify(v);
    // array_out quotes empty strings, NULL look-alikes, delimiters, braces, quotes, backslashes and whitespace.
    return s === '' || /^null$/i.test(s) || /[{},"\\ \t\n\r\v\f]/.test(s) ? `"${s.replace(/[\\"]/g, (c) => `\\${c}`)}"` : s;
  };
  return `{${parsed.map(element).join(',')}}`;
}
