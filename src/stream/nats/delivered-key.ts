/**
 * The record key of a delivered message, read from the raw header block when nats.js keeps
 * it. `JsMsg.headers` decodes every header of every message into a map (TextDecoder, split,
 * name and value checks: ~2 µs a message, a tenth of a NATS reader's CPU) where the reader
 * needs one value. nats.js 2.x keeps a message's bytes in `_rdata` with the header length
 * in `_msg.hdr`, which are not part of its typed API: when they are not there
 * (another nats.js), this falls back to `keyOf(m.headers)`, whose answer it matches: the
 * first `Syncline-Key` line's value, trimmed, URI-decoded when the first
 * `Syncline-Key-Encoding` line says `uri`.
 */
import type { Msg } from 'nats';
import { KEY_ENCODING_HEADER, KEY_HEADER, keyOf } from './nats-names.js';

/** The parts of nats.js 2.x's message object this reads, all optional until checked. */
interface RawMsg {
  _rdata?: unknown;
  _msg?: { hdr?: unknown };
}

const KEY_LINE = `\r\n${KEY_HEADER}:`;
const ENCODING_LINE = `\r\n${KEY_ENCODING_HEADER}:`;

export function deliveredKey(m: Msg): string {
  const raw = m as unknown as RawMsg;
  const data = raw._rdata;
  const hdr = raw._msg?.hdr;
  if (!(data instanceof Uint8Array) || typeof hdr !== 'number' || hdr > data.length) return keyOf(m.headers);
  if (hdr < 0) return ''; // no headers
  return keyInHeaderBlock(Buffer.from(data.buffer, data.byteOffset, hdr).toString('utf8'));
}

/** The key in a header block (`NATS/1.0\r\nName: value\r\n...\r\n\r\n`), as `keyOf` reads it. */
export function keyInHeaderBlock(block: string): string {
  const key = lineValue(block, KEY_LINE);
  if (key === undefined) return '';
  return lineValue(block, ENCODING_LINE) === 'uri' ? decodeURIComponent(key) : key;
}

function lineValue(block: string, line: string): string | undefined {
  const at = block.indexOf(line);
  if (at < 0) return undefined;
  const from = at + line.length;
  const end = block.indexOf('\r\n', from);
  return block.slice(from, end < 0 ? block.length : end).trim();
}
