/**
 * Pure conversions between PostgreSQL's text output (what change events carry, as capture's
 * session prints it: DateStyle ISO, TimeZone UTC, extra_float_digits 3, bytea hex; see
 * src/source/replication-stream.ts) and the typed values of the schema formats. No I/O.
 *
 * Each pair is exact: `toText(toTyped(text)) === text` for every text PostgreSQL prints for
 * the type. `typedValueOf` checks that on every value, so a text in another form (another
 * session setting, a hand-made event) is refused with SCHEMA_VALUE rather than altered.
 */
import { SynclineError } from '../core/errors.js';

/**
 * How a column's value travels in a typed format. `string` carries the text unchanged
 * (every type without an exact typed form: numeric without typmod, arrays, json, intervals...).
 */
export type ValueKind =
  | 'int' // int2, int4: JS number
  | 'long' // int8: bigint
  | 'float4' // number (a float32 value)
  | 'float8' // number
  | 'bool' // boolean
  | 'bytes' // bytea: Buffer
  | 'decimal' // numeric(p,s): bigint unscaled value, or the text 'NaN'
  | 'timestamptz' // bigint microseconds since 1970-01-01 UTC, or the text (see below)
  | 'timestamp' // bigint microseconds since 1970-01-01, local (no zone), or the text
  | 'date' // number, days since 1970-01-01, or the text 'infinity' / '-infinity'
  | 'time' // bigint microseconds since midnight
  | 'uuid' // string
  | 'string'; // string

export type TypedValue = string | number | bigint | boolean | Buffer;

export function badValue(what: string, text: string): SynclineError {
  const shown = text.length > 80 ? `${text.slice(0, 80)}…` : text;
  return new SynclineError('SCHEMA_VALUE', `cannot encode ${JSON.stringify(shown)} as ${what} exactly: it is not PostgreSQL's text output of the type as capture prints it`, {
    retriable: false,
  });
}

/**
 * The typed value of `text`, checked to print back to the same text. `scale` is the
 * decimal's scale (numeric(p,s)), ignored for other kinds.
 */
export function typedValueOf(kind: ValueKind, text: string, scale = 0): TypedValue {
  const v = parseText(kind, text, scale);
  if (textOf(kind, v, scale) !== text) throw badValue(kind === 'decimal' ? `numeric with scale ${scale}` : kind, text);
  return v;
}

function parseText(kind: ValueKind, text: string, scale: number): TypedValue {
  switch (kind) {
    case 'int':
      return INTEGER.test(text) ? Number(text) : fail(kind, text);
    case 'long':
      return INTEGER.test(text) ? BigInt(text) : fail(kind, text);
    case 'float4':
    case 'float8':
      return parseFloatText(kind, text);
    case 'bool':
      return text === 't' ? true : text === 'f' ? false : fail(kind, text);
    case 'bytes':
      return BYTEA_HEX.test(text) ? Buffer.from(text.slice(2), 'hex') : fail(kind, text);
    case 'decimal':
      return parseDecimal(text, scale);
    case 'timestamptz':
      return parseTimestamp(text, true);
    case 'timestamp':
      return parseTimestamp(text, false);
    case 'date':
      return parseDate(text);
    case 'time':
      return parseTime(text);
    case 'uuid':
    case 'string':
      return text;
  }
}

/** PostgreSQL's text output of a typed value. */
export function textOf(kind: ValueKind, v: TypedValue, scale = 0): string {
  // Values without a typed form are their text: NaN of a numeric(p,s); infinity and
  // -infinity of dates and timestamps; timestamps after 294247-01-10 04:00:54.775807
  // (PostgreSQL counts µs from 2000 up to the year 294276; counted from 1970 they overflow
  // an int64). Only formats with a text branch for the kind (Avro's unions) carry them
  // typed-or-text; the others carry these kinds as text altogether.
  if (typeof v === 'string') return v;
  switch (kind) {
    case 'int':
    case 'long':
      return String(v);
    case 'float4':
      return formatFloat(v as number, true);
    case 'float8':
      return formatFloat(v as number, false);
    case 'bool':
      return v ? 't' : 'f';
    case 'bytes':
      return `\\x${(v as Buffer).toString('hex')}`;
    case 'decimal':
      return formatDecimal(v as bigint, scale);
    case 'timestamptz':
      return formatTimestamp(v as bigint, true);
    case 'timestamp':
      return formatTimestamp(v as bigint, false);
    case 'date':
      return formatDate(v as number);
    case 'time':
      return formatTime(v as bigint);
    case 'uuid':
    case 'string':
      return String(v);
  }
}


function fail(kind: ValueKind, text: string): never {
  throw badValue(kind, text);
}

const INTEGER = /^-?\d+$/;
const BYTEA_HEX = /^\\x(?:[0-9a-f]{2})*$/;

// ---- floats ---------------------------------------------------------------------------
// PostgreSQL 12+ prints the shortest decimal that reads back to the same value (its copy of
// Ryu), in %g-like layout: fixed notation for decimal exponents -4 <= X < 15 (float4: < 6),
// else d.ddde±XX with at least two exponent digits; `NaN`, `Infinity`, `-Infinity`, `-0`.
// Its Ryu never picks a decimal lying exactly on the rounding boundary between two floats
// (JavaScript's Number#toString does, when round-half-even reads it back to the same value),
// and among equally short candidates takes the closest, ties to an even last digit. So the
// digits are computed here exactly, with bigint arithmetic, as PostgreSQL does.

function parseFloatText(kind: 'float4' | 'float8', text: string): number {
  switch (text) {
    case 'NaN':
      return NaN;
    case 'Infinity':
      return Infinity;
    case '-Infinity':
      return -Infinity;
  }
  if (!/^-?\d+(\.\d+)?(e[+-]\d+)?$/.test(text)) fail(kind, text);
  const n = Number(text);
  return kind === 'float4' ? Math.fround(n) : n;
}

function formatFloat(n: number, float4: boolean): string {
  if (Number.isNaN(n)) return 'NaN';
  if (n === Infinity) return 'Infinity';
  if (n === -Infinity) return '-Infinity';
  if (n === 0) return Object.is(n, -0) ? '-0' : '0';
  const { digits, exponent } = shortestDigits(Math.abs(n), float4);
  const sign = n < 0 ? '-' : '';
  if (exponent >= -4 && exponent < (float4 ? 6 : 15)) {
    if (exponent < 0) return `${sign}0.${'0'.repeat(-exponent - 1)}${digits}`;
    if (digits.length <= exponent + 1) return `${sign}${digits}${'0'.repeat(exponent + 1 - digits.length)}`;
    return `${sign}${digits.slice(0, exponent + 1)}.${digits.slice(exponent + 1)}`;
  }
  const abs = Math.abs(exponent);
  const mantissa = digits.length === 1 ? digits : `${digits[0]}.${digits.slice(1)}`;
  return `${sign}${mantissa}e${exponent < 0 ? '-' : '+'}${abs < 10 ? '0' : ''}${abs}`;
}

const bits = new DataView(new ArrayBuffer(8));

/** `n` (finite, > 0) as m * 2^e; `boundary`: m is a power of two, so the float below is nearer. */
function binaryParts(n: number, float4: boolean): { m: bigint; e: number; boundary: boolean } {
  if (float4) {
    bits.setFloat32(0, n);
    const word = bits.getUint32(0);
    const biased = (word >>> 23) & 0xff;
    const fraction = word & 0x7fffff;
    if (biased === 0) return { m: BigInt(fraction), e: -149, boundary: false };
    return { m: BigInt(fraction | 0x800000), e: biased - 150, boundary: fraction === 0 && biased > 1 };
  }
  bits.setFloat64(0, n);
  const hi = bits.getUint32(0);
  const biased = (hi >>> 20) & 0x7ff;
  const fraction = (BigInt(hi & 0xfffff) << 32n) | BigInt(bits.getUint32(4));
  if (biased === 0) return { m: fraction, e: -1074, boundary: false };
  return { m: fraction | (1n << 52n), e: biased - 1075, boundary: fraction === 0n && biased > 1 };
}

/** The shortest digits (no trailing zeros) and decimal exponent X of `n` = d.ddd × 10^X. */
function shortestDigits(n: number, float4: boolean): { digits: string; exponent: number } {
  const { m, e, boundary } = binaryParts(n, float4);
  if (!float4) {
    const fast = javascriptShortest(n, m, e);
    if (fast) return fast;
  }
  return exactShortest(m, e, boundary, n);
}

/**
 * JavaScript's own shortest digits (String(n): shortest, closest, ties to even), where they
 * are PostgreSQL's: a decimal can only sit exactly on a rounding boundary, or `n` exactly
 * halfway between two candidates, when that boundary or `n` has a short exact decimal
 * expansion; a dyadic fraction j / 2^k (j odd) has at least 0.7·k significant digits, so
 * with k > 26 neither fits in 17 digits. That holds below 2^27 for the boundaries (53-bit
 * m, e < -25) and for any n not a multiple of 2^-26. Otherwise: undefined (exact path).
 */
function javascriptShortest(n: number, m: bigint, e: number): { digits: string; exponent: number } | undefined {
  if (e >= -25) return undefined;
  let zeros = 0;
  while (zeros < 64 && ((m >> BigInt(zeros)) & 1n) === 0n) zeros++;
  if (-(e + zeros) <= 26) return undefined;
  const text = String(n);
  const at = text.indexOf('e');
  if (at >= 0) {
    const digits = text.slice(0, at).replace('.', '');
    return { digits, exponent: Number(text.slice(at + 1)) };
  }
  const point = text.indexOf('.');
  const whole = point < 0 ? text : text.slice(0, point);
  const all = whole + (point < 0 ? '' : text.slice(point + 1));
  const lead = all.length - all.replace(/^0+/, '').length;
  return { digits: all.slice(lead).replace(/0+$/, ''), exponent: whole.length - 1 - lead };
}

/** PostgreSQL's Ryu choice computed with bigints: shortest strictly inside the interval, closest, ties even. */
function exactShortest(m: bigint, e: number, boundary: boolean, n: number): { digits: string; exponent: number } {
  // In units of 2^(e-2): the value, and the exclusive bounds halfway to its neighbours.
  const t = e - 2;
  const v = 4n * m;
  const upper = v + 2n;
  const lower = boundary ? v - 1n : v - 2n;
  const pow2 = 2n ** BigInt(Math.abs(t));
  let x = Number(n.toExponential().slice(n.toExponential().indexOf('e') + 1));
  while (compareScaled(1n, x, v, t, pow2) > 0) x--;
  while (compareScaled(1n, x + 1, v, t, pow2) <= 0) x++;
  for (let p = 1; p <= 17; p++) {
    const q = x - p + 1;
    // n / 10^q as num / den
    let num = t >= 0 ? v * pow2 : v;
    let den = t >= 0 ? 1n : pow2;
    if (q >= 0) den *= 10n ** BigInt(q);
    else num *= 10n ** BigInt(-q);
    const floor = num / den;
    const inside = (c: bigint): boolean => compareScaled(c, q, lower, t, pow2) > 0 && compareScaled(c, q, upper, t, pow2) < 0;
    const low = inside(floor);
    const high = inside(floor + 1n);
    if (!low && !high) continue;
    let c: bigint;
    if (low && high) {
      const below = num - floor * den;
      const above = (floor + 1n) * den - num;
      c = below < above ? floor : above < below ? floor + 1n : floor % 2n === 0n ? floor : floor + 1n;
    } else {
      c = low ? floor : floor + 1n;
    }
    let digits = c.toString();
    // floor + 1 may carry into one more digit (999 + 1): the exponent moves with it.
    const exponent = q + digits.length - 1;
    digits = digits.replace(/0+$/, '');
    return { digits, exponent };
  }
  throw new Error(`no shortest decimal for ${n}`);
}

/** Sign of c × 10^q − k × 2^t (pow2 = 2^|t|). */
function compareScaled(c: bigint, q: number, k: bigint, t: number, pow2: bigint): number {
  let a = c;
  let b = k;
  if (q >= 0) a *= 10n ** BigInt(q);
  else b *= 10n ** BigInt(-q);
  if (t >= 0) b *= pow2;
  else a *= pow2;
  return a < b ? -1 : a > b ? 1 : 0;
}

// ---- numeric(p,s) -----------------------------------------------------------------------
// A numeric with a scale always prints exactly `scale` fraction digits ('1.50'), so the
// unscaled integer and the scale give the text back. A constrained numeric holds no
// infinity (PostgreSQL refuses it), but it does hold NaN, which has no decimal form.

function parseDecimal(text: string, scale: number): bigint | string {
  if (text === 'NaN') return text;
  const m = /^(-?)(\d+)(?:\.(\d+))?$/.exec(text);
  if (!m || (m[3]?.length ?? 0) !== scale) fail('decimal', text);
  return BigInt(`${m[1]}${m[2]}${m[3] ?? ''}`);
}

function formatDecimal(unscaled: bigint, scale: number): string {
  const negative = unscaled < 0n;
  const digits = (negative ? -unscaled : unscaled).toString();
  if (scale === 0) return `${negative ? '-' : ''}${digits}`;
  const padded = digits.padStart(scale + 1, '0');
  return `${negative ? '-' : ''}${padded.slice(0, -scale)}.${padded.slice(-scale)}`;
}

/** A decimal's unscaled value as Avro's bytes: two's complement, big-endian, shortest. */
export function decimalToBytes(v: bigint): Buffer {
  // Bits of the magnitude plus the sign bit, rounded up to whole bytes.
  const bytes = Math.floor((v < 0n ? -v - 1n : v).toString(2).length / 8) + 1;
  const unsigned = v < 0n ? (1n << BigInt(bytes * 8)) + v : v;
  return Buffer.from(unsigned.toString(16).padStart(bytes * 2, '0'), 'hex');
}

export function decimalFromBytes(b: Buffer): bigint {
  if (b.length === 0) return 0n;
  const v = BigInt(`0x${b.toString('hex')}`);
  return (b[0] as number) >= 0x80 ? v - (1n << BigInt(b.length * 8)) : v;
}


// ---- dates and times --------------------------------------------------------------------
// ISO output: YYYY-MM-DD (at least 4 year digits; years BC as ' BC' after the value, year 1
// BC being astronomical year 0), HH:MM:SS with the fraction's trailing zeros dropped, and
// '+00' for timestamptz in UTC. infinity/-infinity stay text (see textOf).

const US_PER_DAY = 86_400_000_000n;
const INT64_MAX = (1n << 63n) - 1n;
const INT64_MIN = -(1n << 63n);

const DATE = /^(\d{4,})-(\d\d)-(\d\d)( BC)?$/;
const TIMESTAMP = /^(\d{4,})-(\d\d)-(\d\d) (\d\d):(\d\d):(\d\d)(?:\.(\d{1,6}))?(\+00)?( BC)?$/;
const TIME = /^(\d\d):(\d\d):(\d\d)(?:\.(\d{1,6}))?$/;

/** Days since 1970-01-01 of a proleptic Gregorian date (astronomical year). */
function daysFromCivil(y: number, m: number, d: number): number {
  y -= m <= 2 ? 1 : 0;
  const era = Math.floor(y / 400);
  const yoe = y - era * 400;
  const doy = Math.floor((153 * (m + (m > 2 ? -3 : 9)) + 2) / 5) + d - 1;
  const doe = yoe * 365 + Math.floor(yoe / 4) - Math.floor(yoe / 100) + doy;
  return era * 146097 + doe - 719468;
}

function civilFromDays(z: number): [number, number, number] {
  z += 719468;
  const era = Math.floor(z / 146097);
  const doe = z - era * 146097;
  const yoe = Math.floor((doe - Math.floor(doe / 1460) + Math.floor(doe / 36524) - Math.floor(doe / 146096)) / 365);
  const doy = doe - (365 * yoe + Math.floor(yoe / 4) - Math.floor(yoe / 100));
  const mp = Math.floor((5 * doy + 2) / 153);
  const d = doy - Math.floor((153 * mp + 2) / 5) + 1;
  const m = mp + (mp < 10 ? 3 : -9);
  return [era * 400 + yoe + (m <= 2 ? 1 : 0), m, d];
}

function dayNumber(year: string, month: string, day: string, bc: string | undefined): number {
  const y = Number(year);
  return daysFromCivil(bc ? 1 - y : y, Number(month), Number(day));
}

function formatDay(days: number): string {
  const [y, m, d] = civilFromDays(days);
  const year = y <= 0 ? 1 - y : y;
  return `${String(year).padStart(4, '0')}-${p2(m)}-${p2(d)}${y <= 0 ? ' BC' : ''}`;
}

function parseDate(text: string): number | string {
  if (text === 'infinity' || text === '-infinity') return text;
  const m = DATE.exec(text);
  if (!m) fail('date', text);
  return dayNumber(m[1] as string, m[2] as string, m[3] as string, m[4]);
}

function formatDate(days: number): string {
  return formatDay(days);
}

function parseTimestamp(text: string, zoned: boolean): bigint | string {
  if (text === 'infinity' || text === '-infinity') return text;
  const m = TIMESTAMP.exec(text);
  if (!m || (m[8] !== undefined) !== zoned) fail(zoned ? 'timestamptz' : 'timestamp', text);
  const days = dayNumber(m[1] as string, m[2] as string, m[3] as string, m[9]);
  const us = BigInt(days) * US_PER_DAY + timeOfDay(m[4] as string, m[5] as string, m[6] as string, m[7]);
  return us > INT64_MAX || us < INT64_MIN ? text : us;
}

function formatTimestamp(us: bigint, zoned: boolean): string {
  let days = us / US_PER_DAY;
  let rest = us % US_PER_DAY;
  if (rest < 0n) {
    rest += US_PER_DAY;
    days -= 1n;
  }
  const day = formatDay(Number(days));
  const bc = day.endsWith(' BC');
  return `${bc ? day.slice(0, -3) : day} ${formatTimeOfDay(rest)}${zoned ? '+00' : ''}${bc ? ' BC' : ''}`;
}

function parseTime(text: string): bigint {
  const m = TIME.exec(text);
  if (!m) fail('time', text);
  return timeOfDay(m[1] as string, m[2] as string, m[3] as string, m[4]);
}

function formatTime(us: bigint): string {
  return formatTimeOfDay(us);
}

function timeOfDay(h: string, mi: string, s: string, frac: string | undefined): bigint {
  const micros = frac === undefined ? 0 : Number(frac.padEnd(6, '0'));
  return BigInt((Number(h) * 3600 + Number(mi) * 60 + Number(s)) * 1_000_000 + micros);
}

function formatTimeOfDay(us: bigint): string {
  const n = Number(us);
  const micros = n % 1_000_000;
  const secs = (n - micros) / 1_000_000;
  const base = `${p2(Math.floor(secs / 3600))}:${p2(Math.floor(secs / 60) % 60)}:${p2(secs % 60)}`;
  return micros === 0 ? base : `${base}.${String(micros).padStart(6, '0').replace(/0+$/, '')}`;
}

function p2(n: number): string {
  return n < 10 ? `0${n}` : String(n);
}
