/**
 * The headers of a published record, encoded in one pass. nats.js's `headers()` canonicalises
 * the name, searches the existing names, checks and trims the value on every `set`, then
 * joins and encodes the whole block — about 4 µs per record, a third of the producer's CPU.
 * nats.js's publish only calls `encode()` on the headers it is given, so recordHeaderBlock
 * writes the same bytes (`NATS/1.0`, then `Name: value` lines, values trimmed as nats.js trims
 * them) as one string, which the producer writes into its publish frames (publish-frames.ts)
 * and RecordHeaders encodes for nc.publish. The read side of MsgHdrs is there for the type
 * and for debugging; nothing on the publish path uses it.
 */
import { Match, type MsgHdrs } from 'nats';
import { KEY_ENCODING_HEADER, KEY_HEADER, TABLE_HEADER, tableOfKey } from './nats-names.js';

const CRLF = /[\r\n]/;
/** What every JetStream header name starts with (nats-server matches names case-sensitively; this does not). */
const HEADER_NAME = /nats-/i;

export class RecordHeaders implements MsgHdrs {
  readonly hasError = false;
  readonly status = '';
  readonly code = 0;
  readonly description = '';

  private parsed: (readonly [string, string])[] | undefined;

  /** `block`: a header block as recordHeaderBlock writes it. */
  constructor(private readonly block: string) {}

  /** What nats.js writes on the wire: the same bytes as its own headers with these entries. */
  encode(): Uint8Array {
    // Buffer.from takes small strings from Node's shared pool; TextEncoder.encode allocates
    // a new backing store for each (~1 µs per record here).
    return Buffer.from(this.block, 'utf8');
  }

  /** The names and values of the block's lines (names hold no `:`, values no CR or LF). */
  private get entries(): readonly (readonly [string, string])[] {
    this.parsed ??= this.block
      .slice(0, -'\r\n\r\n'.length)
      .split('\r\n')
      .slice(1)
      .map((line) => {
        const at = line.indexOf(': ');
        return [line.slice(0, at), line.slice(at + 2)] as const;
      });
    return this.parsed;
  }

  get(k: string, match: Match = Match.Exact): string {
    return this.values(k, match)[0] ?? '';
  }

  last(k: string, match: Match = Match.Exact): string {
    return this.values(k, match).at(-1) ?? '';
  }

  has(k: string, match: Match = Match.Exact): boolean {
    return this.values(k, match).length > 0;
  }

  keys(): string[] {
    return [...new Set(this.entries.map(([k]) => k))];
  }

  values(k: string, match: Match = Match.Exact): string[] {
    const same = match === Match.Exact ? (n: string) => n === k : (n: string) => n.toLowerCase() === k.toLowerCase();
    return this.entries.filter(([n]) => same(n)).map(([, v]) => v);
  }

  set(): void {
    throw new Error('RecordHeaders are read-only');
  }

  append(): void {
    throw new Error('RecordHeaders are read-only');
  }

  delete(): void {
    throw new Error('RecordHeaders are read-only');
  }

  *[Symbol.iterator](): Iterator<[string, string[]]> {
    for (const k of this.keys()) yield [k, this.values(k)];
  }
}

/**
 * The headers of a record with `key` and, when it has one, capture's `id` (see
 * recordHeaderBlock), for nc.publish.
 */
export function recordHeaders(key: string, id: string | undefined): RecordHeaders {
  return new RecordHeaders(recordHeaderBlock(key, natsMsgIdOf(key, id)));
}

/**
 * The `Nats-Msg-Id` of a record with `key` and capture's `id`: `<id> <key>` (URI-encoded when
 * it holds CR or LF), the server's deduplication key; undefined without an id. One holding
 * `Nats-` (a key naming a JetStream header) has its `-` written `%2D` too: it is the value of
 * Nats-Msg-Id and of the next record's Nats-Expected-Last-Msg-Id, and nats-server looks a
 * header up by the first place its name occurs in the whole block (see recordHeaderBlock).
 */
export function natsMsgIdOf(key: string, id: string | undefined): string | undefined {
  if (id === undefined) return undefined;
  const raw = `${id} ${key}`;
  const msgId = CRLF.test(raw) ? encodeURIComponent(raw) : raw.trim();
  return HEADER_NAME.test(msgId) ? msgId.replace(/-/g, '%2D') : msgId;
}

/**
 * The header block of a record with `key`: `Nats-Msg-Id` (natsMsgIdOf) when it has one,
 * `Nats-Expected-Last-Msg-Id` in a chain (publish-chains.ts), `Syncline-Key` (URI-encoded,
 * with `Syncline-Key-Encoding: uri`, when it holds CR or LF), `Syncline-Table` (left out when
 * the table name holds CR or LF), then `extraLines` (a claim check's headers, each line
 * starting with CRLF: see claim-check.ts). Written as one string (no list
 * of entries, the CR/LF test of the key reused for its table): it is built for every
 * published record.
 */
export function recordHeaderBlock(key: string, msgId: string | undefined, expectedLastMsgId?: string, extraLines?: string): string {
  // The server's headers first: nats-server (2.9) takes a header from the first place its
  // name occurs in the block, and only when that place starts a line, so a key holding
  // `Nats-Msg-Id` or `Nats-Expected-Last-Msg-Id` in a line before the real one hid it: no
  // deduplication, or a chained record stored after one that was not. Their values, Msg-Ids
  // as natsMsgIdOf writes them (trimmed, free of CR, LF and `Nats-`), hold neither name.
  let block = 'NATS/1.0';
  if (msgId !== undefined) block += `\r\nNats-Msg-Id: ${msgId}`;
  if (expectedLastMsgId !== undefined) block += `\r\nNats-Expected-Last-Msg-Id: ${expectedLastMsgId}`;
  const keyHasCrLf = CRLF.test(key);
  block += keyHasCrLf ? `\r\n${KEY_HEADER}: ${encodeURIComponent(key)}\r\n${KEY_ENCODING_HEADER}: uri` : `\r\n${KEY_HEADER}: ${key.trim()}`;
  const table = tableOfKey(key);
  // The table is a prefix of the key: free of CR and LF when the key is.
  if (table !== undefined && !(keyHasCrLf && CRLF.test(table))) block += `\r\n${TABLE_HEADER}: ${table.trim()}`;
  if (extraLines !== undefined) block += extraLines;
  return `${block}\r\n\r\n`;
}

/**
 * Whether the header block recordHeaderBlock writes for these and `valueBytes` of payload
 * come to at most `limit` bytes (the server's max_payload). Checked for every chained record,
 * so a bound on the block settles it without writing the block, except for a record within
 * a few times its key's length of the limit: UTF-8 takes at most 3 bytes per UTF-16 unit,
 * the key is written at most twice (key and table), URI-encoded at most 9 bytes a unit.
 */
export function headersAndValueFit(key: string, msgId: string | undefined, expectedLastMsgId: string | undefined, valueBytes: number, limit: number, extraLines?: string): boolean {
  const bound = 128 + 12 * key.length + 3 * (msgId?.length ?? 0) + 3 * (expectedLastMsgId?.length ?? 0) + 3 * (extraLines?.length ?? 0);
  if (valueBytes + bound <= limit) return true;
  return Buffer.byteLength(recordHeaderBlock(key, msgId, expectedLastMsgId, extraLines), 'utf8') + valueBytes <= limit;
}

/**
 * Whether a record of `key` and `valueBytes` may need a claim check (claim-check.ts) under
 * `limit`: headersAndValueFit's bound with a Msg-Id of the key and up to ~1,300 bytes more
 * (capture's `<source>:<commit LSN>:<seq>`), so that the producer can look at every record
 * for the price of two lengths; headersAndValueFit decides.
 */
export function mayNotFit(key: string, valueBytes: number, limit: number): boolean {
  return valueBytes + 4096 + 16 * key.length > limit;
}
