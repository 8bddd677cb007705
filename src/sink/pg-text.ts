/**
 * Pure conversions of PostgreSQL's text output (what change events carry) into the forms
 * non-PostgreSQL targets accept. No I/O. Each function throws a non-retriable SynclineError
 * (`SINK_VALUE`) for a value the target cannot represent, so the change goes to the
 * dead-letter queue with a reason instead of being silently altered.
 */
import { SynclineError } from '../core/errors.js';

function badValue(what: string, text: string, column?: string): SynclineError {
  const shown = text.length > 80 ? `${text.slice(0, 80)}…` : text;
  return new SynclineError('SINK_VALUE', `${column === undefined ? '' : `column ${column}: `}cannot convert ${JSON.stringify(shown)} to ${what}`, { retriable: false });
}

/** `t`/`f` (and `true`/`false`) → `1`/`0`; other text is returned unchanged. */
export function pgBoolToDigit(text: string): string {
  switch (text) {
    case 't':
    case 'true':
      return '1';
    case 'f':
    case 'false':
      return '0';
    default:
      return text;
  }
}

// date-time grammar of DateStyle ISO output:
//   YYYY-MM-DD HH:MM:SS[.ffffff][(+|-)HH[:MM[:SS]]][ BC]
const TIMESTAMP = /^(\d{4,})-(\d\d)-(\d\d)[ T](\d\d):(\d\d):(\d\d)(?:\.(\d{1,6}))?(?:([+-])(\d\d)(?::?(\d\d))?(?::?(\d\d))?)?( BC)?$/;

/**
 * A `timestamp`/`timestamptz` text value as UTC `YYYY-MM-DD HH:MM:SS.ffffff` (the offset is
 * applied; a value without offset is taken as is). Microseconds are kept exactly.
 * `infinity`, BC dates and years past 9999 have no equivalent and throw, naming `column`
 * when given (a row may have many timestamp columns).
 */
export function pgTimestampToUtc(text: string, column?: string): string {
  const m = TIMESTAMP.exec(text);
  if (!m || m[12] !== undefined) throw badValue('a UTC date-time (YYYY-MM-DD HH:MM:SS.ffffff)', text, column);
  const [, y, mo, d, h, mi, s, frac = '', sign, oh = '0', om = '0', os = '0'] = m;
  const micros = frac.padEnd(6, '0');
  const offsetSeconds = sign === undefined ? 0 : (sign === '-' ? -1 : 1) * (Number(oh) * 3600 + Number(om) * 60 + Number(os));
  const date = new Date(0);
  // setUTCFullYear, not Date.UTC: the latter maps years 0-99 to 1900-1999.
  date.setUTCFullYear(Number(y), Number(mo) - 1, Number(d));
  date.setUTCHours(Number(h), Number(mi), Number(s) - offsetSeconds, 0);
  const year = date.getUTCFullYear();
  // NaN: past the range of a JS Date (year 275760), which a timestamp reaches (294276).
  if (!(year >= 0 && year <= 9999)) throw badValue('a UTC date-time in years 0000-9999', text, column);
  const p2 = (n: number): string => String(n).padStart(2, '0');
  return `${String(year).padStart(4, '0')}-${p2(date.getUTCMonth() + 1)}-${p2(date.getUTCDate())} ${p2(date.getUTCHours())}:${p2(date.getUTCMinutes())}:${p2(date.getUTCSeconds())}.${micros}`;
}

const BYTEA_HEX = /^\\x((?:[0-9a-fA-F]{2})*)$/;

/** True for bytea's hex output, `\x0a1b...`. */
export function isPgByteaHex(text: string): boolean {
  return BYTEA_HEX.test(text);
}

/**
 * bytea text output as bytes: hex format (`\x0a1b`, the default since PostgreSQL 9.0) or
 * escape format (`abc\000\\`).
 */
export function pgByteaToBuffer(text: string): Buffer {
  const hex = BYTEA_HEX.exec(text);
  if (hex) return Buffer.from(hex[1] ?? '', 'hex');
  const bytes: number[] = [];
  const raw = Buffer.from(text, 'utf8');
  for (let i = 0; i < raw.length; i++) {
    const b = raw[i] as number;
    if (b !== 0x5c) {
      bytes.push(b);
      continue;
    }
    if (raw[i + 1] === 0x5c) {
      bytes.push(0x5c);
      i++;
      continue;
    }
    const oct = raw.subarray(i + 1, i + 4).toString('latin1');
    if (!/^[0-3][0-7]{2}$/.test(oct)) throw badValue('bytes (bytea hex or escape format)', text);
    bytes.push(parseInt(oct, 8));
    i += 3;
  }
  return Buffer.from(bytes);
}

/**
 * A PostgreSQL array literal (`{1,2,NULL}`, `{"a b",c}`, `{{1,2},{3,4}}`) as JSON text:
 * nested arrays, NULL as null, every element as a JSON string of its text. Strings, not
 * numbers: the event does not say the element type, and `{42}` may be a text[] whose element
 * is the string "42"; strings keep every array exactly (`int[]` `{1,2}` → `["1","2"]`).
 * A literal with a `[lo:hi]=` dimension prefix (PostgreSQL prints one only for lower bounds
 * other than 1) is kept whole as a JSON string (`"[2:3]={7,8}"`): a JSON array cannot say
 * its bounds, and dropping them stored another value (verify's arrayText reads it back).
 * Returns undefined when `text` is not an array literal.
 */
export function pgArrayToJson(text: string): string | undefined {
  let i = 0;
  if (text.startsWith('[')) {
    const eq = text.indexOf('=');
    if (eq < 0) return undefined;
    i = eq + 1;
  }
  if (text[i] !== '{') return undefined;
  const bounded = i > 0;
  const out: string[] = [];
  const parseArray = (): boolean => {
    i++; // '{'
    out.push('[');
    let first = true;
    for (;;) {
      while (text[i] === ' ') i++;
      if (text[i] === '}') {
        i++;
        out.push(']');
        return true;
      }
      if (!first) {
        if (text[i] !== ',') return false;
        i++;
        while (text[i] === ' ') i++;
        out.push(',');
      }
      first = false;
      const c = text[i];
      if (c === undefined) return false;
      if (c === '{') {
        if (!parseArray()) return false;
      } else if (c === '"') {
        let s = '';
        i++;
        for (;;) {
          const ch = text[i];
          if (ch === undefined) return false;
          if (ch === '"') {
            i++;
            break;
          }
          if (ch === '\\') {
            i++;
            const esc = text[i];
            if (esc === undefined) return false;
            s += esc;
          } else {
            s += ch;
          }
          i++;
        }
        out.push(JSON.stringify(s));
      } else {
        let j = i;
        while (j < text.length && text[j] !== ',' && text[j] !== '}') j++;
        const raw = text.slice(i, j).trim();
        i = j;
        if (raw === '') return false;
        out.push(raw.toUpperCase() === 'NULL' ? 'null' : JSON.stringify(raw));
      }
    }
  };
  if (!parseArray()) return undefined;
  if (i !== text.length) return undefined;
  return bounded ? JSON.stringify(text) : out.join('');
}

/**
 * A value for a JSON target column: json/jsonb text is already JSON and passes unchanged;
 * an array literal becomes a JSON array (see pgArrayToJson); any other text becomes a JSON
 * string. (`{}` is valid JSON, so an empty PostgreSQL array arrives as the empty object.)
 */
export function pgTextToJson(text: string): string {
  try {
    JSON.parse(text);
    return text;
  } catch {
    return pgArrayToJson(text) ?? JSON.stringify(text);
  }
}

const INTEGER = /^[+-]?\d+$/;
const DECIMAL = /^[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?$/;

/** The text if it is a plain integer literal, safe to put in SQL text; else throws. */
export function integerLiteral(text: string): string {
  if (!INTEGER.test(text)) throw badValue('an integer', text);
  return text;
}

/** The text if it is a plain decimal literal, safe to put in SQL text; else throws. */
export function decimalLiteral(text: string): string {
  if (!DECIMAL.test(text)) throw badValue('a number', text);
  return text;
}
