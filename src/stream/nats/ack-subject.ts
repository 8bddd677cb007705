/**
 * The stream sequence and store time of a JetStream delivery, read from its reply (ack)
 * subject. nats.js's `JsMsg.info` splits the subject into all of its tokens and builds an
 * object of eleven fields per message; a reader needs two of them. They are read from the
 * subject's bytes as the parser left them (`_msg.reply`, a view of the socket read): the
 * subject as a string (`Msg.reply`, a TextDecoder call and a string per message) is only
 * needed for the one message a reader acknowledges per pull.
 *
 * The subject is `$JS.ACK.<stream>.<consumer>.<deliveries>.<stream seq>.<consumer seq>.<ns>.<pending>`
 * (9 tokens, older servers) or `$JS.ACK.<domain>.<account hash>.<stream>.<consumer>.<deliveries>.
 * <stream seq>.<consumer seq>.<ns>.<pending>[.<token>]` (11 or 12), as in nats.js's parseInfo.
 * Stream and consumer names cannot hold dots, so counting dots from the front is exact.
 */
export interface DeliveryPosition {
  /** JetStream stream sequence (offset + 1). */
  seq: number;
  /** When the server stored the message, in ms since the epoch. */
  timestampMs: number;
}

const PREFIX = [0x24, 0x4a, 0x53, 0x2e, 0x41, 0x43, 0x4b, 0x2e]; // "$JS.ACK."
const DOT = 0x2e;
const DIGIT_0 = 0x30;
/** A token holds at most this many digits as an exact number (2^53 has 16). */
const MAX_DIGITS = 15;

/** The position in the subject's bytes, or null when it is not a JetStream ack subject. */
export function deliveryPosition(reply: Uint8Array): DeliveryPosition | null {
  if (reply.length < PREFIX.length) return null;
  for (let i = 0; i < PREFIX.length; i++) if (reply[i] !== PREFIX[i]) return null;
  let tokens = 1;
  for (let i = PREFIX.length; i < reply.length; i++) if (reply[i] === DOT) tokens++;
  tokens += 2; // "$JS" and "ACK"
  const base = tokens === 9 ? 5 : tokens >= 11 ? 7 : -1;
  if (base < 0) return null;
  const seqAt = tokenStart(reply, base);
  const seq = digitsValue(reply, seqAt, 0);
  // The store time in ns has 19 digits: its ms are all of them but the last six (exact, where
  // the whole would be a number beyond 2^53).
  const ms = digitsValue(reply, tokenStart(reply, base + 2), 6);
  if (seq === null || seq < 1 || ms === null) return null;
  return { seq, timestampMs: ms };
}

/** Where token `n` (counted from 0) starts; the subject has more than `n` tokens. */
function tokenStart(bytes: Uint8Array, n: number): number {
  let i = 0;
  for (let dots = 0; dots < n; i++) if (bytes[i] === DOT) dots++;
  return i;
}

/** The decimal number at `from` up to the next dot or the end, without its last `drop` digits; null when not all digits or too long. */
function digitsValue(bytes: Uint8Array, from: number, drop: number): number | null {
  let end = from;
  while (end < bytes.length && bytes[end] !== DOT) end++;
  const digits = end - from;
  if (digits === 0 || digits - drop > MAX_DIGITS) return null;
  let n = 0;
  for (let i = from; i < end; i++) {
    const d = (bytes[i] as number) - DIGIT_0;
    if (d < 0 || d > 9) return null;
    if (i < end - drop) n = n * 10 + d;
  }
  return n;
}
