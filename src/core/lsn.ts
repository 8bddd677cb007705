import { SynclineError } from './errors.js';

/**
 * A PostgreSQL log sequence number. Kept as a bigint end to end: LSNs pass 2^53 on busy
 * servers, so a JavaScript number would round them.
 */
export type Lsn = bigint;

const LSN_TEXT = /^([0-9A-Fa-f]{1,8})\/([0-9A-Fa-f]{1,8})$/;

/** Parses PostgreSQL's `X/Y` notation (hex high and low 32 bits). */
export function parseLsn(text: string): Lsn {
  const m = LSN_TEXT.exec(text);
  if (!m) throw new SynclineError('LSN_INVALID', `not an LSN: ${JSON.stringify(text)}`, { retriable: false });
  return (BigInt(`0x${m[1]}`) << 32n) | BigInt(`0x${m[2]}`);
}

/** Formats as PostgreSQL does: upper-case hex, no leading zeros, e.g. `16/B374D848`. */
export function formatLsn(lsn: Lsn): string {
  // Every change's position is formatted: below 2^53 (8 PiB of WAL) in number arithmetic, exact there.
  if (lsn >= 0n && lsn <= MAX_SAFE_LSN) {
    const n = Number(lsn);
    const high = Math.floor(n / 4294967296);
    return `${high.toString(16).toUpperCase()}/${(n - high * 4294967296).toString(16).toUpperCase()}`;
  }
  return `${(lsn >> 32n).toString(16).toUpperCase()}/${(lsn & 0xffffffffn).toString(16).toUpperCase()}`;
}

const MAX_SAFE_LSN = BigInt(Number.MAX_SAFE_INTEGER);

/**
 * formatLsn for a run of nearby positions (every change of a transaction has its own): the
 * text of the high half is kept while it repeats, the low half is written from a table of
 * byte pairs. Number's toString(16) was the cost: two of them and two upper-casings per change.
 */
export class LsnFormatter {
  private high = -1;
  private prefix = '';

  format(lsn: Lsn): string {
    if (lsn < 0n || lsn > MAX_SAFE_LSN) return formatLsn(lsn);
    const n = Number(lsn);
    const high = Math.floor(n / 4294967296);
    if (high !== this.high) {
      this.high = high;
      this.prefix = `${high.toString(16).toUpperCase()}/`;
    }
    return this.prefix + hex32(n - high * 4294967296);
  }
}

/** Upper-case hex of each byte, two digits; and of each nibble, one. */
const BYTE_HEX = Array.from({ length: 256 }, (_, i) => i.toString(16).toUpperCase().padStart(2, '0'));
const NIBBLE_HEX = Array.from({ length: 16 }, (_, i) => i.toString(16).toUpperCase());

/** `x.toString(16).toUpperCase()` for 0 <= x < 2^32 (no leading zeros). */
function hex32(x: number): string {
  if (x < 0x100) return top(x);
  if (x < 0x10000) return top(x >>> 8) + (BYTE_HEX[x & 255] as string);
  if (x < 0x1000000) return top(x >>> 16) + (BYTE_HEX[(x >>> 8) & 255] as string) + (BYTE_HEX[x & 255] as string);
  return top(x >>> 24) + (BYTE_HEX[(x >>> 16) & 255] as string) + (BYTE_HEX[(x >>> 8) & 255] as string) + (BYTE_HEX[x & 255] as string);
}

/** The leading byte's hex: one digit below 16. */
function top(b: number): string {
  return (b < 16 ? NIBBLE_HEX[b] : BYTE_HEX[b]) as string;
}

/** Change versions order all changes of a source: commit LSN first, then sequence in the transaction. */
export function versionOf(commitLsn: Lsn, seq: number): bigint {
  return (commitLsn << 32n) | BigInt(seq);
}

export function splitVersion(version: bigint): { commitLsn: Lsn; seq: number } {
  return { commitLsn: version >> 32n, seq: Number(version & 0xffffffffn) };
}
