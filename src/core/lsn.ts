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

/** Change versions order all changes of a source: commit LSN first, then sequence in the transaction. */
export function versionOf(commitLsn: Lsn, seq: number): bigint {
  return (commitLsn << 32n) | BigInt(seq);
}

export function splitVersion(version: bigint): { commitLsn: Lsn; seq: number } {
  return { commitLsn: version >> 32n, seq: Number(version & 0xffffffffn) };
}
