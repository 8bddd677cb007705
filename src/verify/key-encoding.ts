/**
 * Text keys in byte order ("C") between servers of other encodings. Ranges are planned on one
 * side's keys and applied on both as `(key) > bound AND (key) <= bound`, so both must order
 * the keys alike; collation "C" orders the server's own bytes, and those order characters
 * alike only in encodings whose byte order is the code point order: UTF8, LATIN1 (one byte
 * per code point up to U+00FF) and SQL_ASCII (taken as UTF-8). In WIN1252, say, € Š œ —
 * (0x80–0x9F) sort before À–ÿ, their UTF-8 forms after them: the same bounds select other
 * rows on each side and a differing range is split without end. On such a side the key is
 * read as `convert_to(key, 'UTF8')` (bytea, compared bytewise: code point order) and the
 * bounds are sent as UTF-8 bytes.
 *
 * A bound the side's encoding cannot hold (a target key 'œk1' against a LATIN1 source, when
 * a range is split along the target's keys) cannot be sent as text (22P05), so a LATIN1 side
 * reads its key as bytes too in a query with such a bound; its key index serves the others.
 * Pure.
 */

/** The server encodings of the two sides, SQL_ASCII as UTF8. */
export interface SideEncodings {
  source: string;
  target: string;
}

/** Whether the byte order of `encoding` is the code point order of its characters. */
export function codePointOrdered(encoding: string): boolean {
  return encoding === 'UTF8' || encoding === 'SQL_ASCII' || encoding === 'LATIN1';
}

/**
 * Whether `text` is known to be representable in `encoding`: every server encoding holds
 * ASCII, LATIN1 the code points up to U+00FF, UTF8 all. False: it may not be.
 */
export function fitsEncoding(encoding: string, text: string): boolean {
  if (encoding === 'UTF8' || encoding === 'SQL_ASCII') return true;
  const last = encoding === 'LATIN1' ? 0xff : 0x7f;
  for (const ch of text) if ((ch.codePointAt(0) as number) > last) return false;
  return true;
}

/**
 * Whether a byte-ordered text key is read as its UTF-8 bytes on a side of `encoding` in a
 * query comparing it with `bounds` (its values there). Always where the encoding's byte order
 * is not the code point order; on a code-point-ordered side only for a bound the side may not
 * hold (its own key index cannot serve that query).
 */
export function keyAsBytes(encoding: string, bounds: readonly string[]): boolean {
  if (!codePointOrdered(encoding)) return true;
  return bounds.some((b) => !fitsEncoding(encoding, b));
}

/** String types whose values `convert_to` takes (their text is the compared value). */
export const BYTE_KEY_TYPE = /^(text|character varying(\(\d+\))?|character(\(\d+\))?|name)$/;
