/**
 * A faster reader of the messages nats-server sends on one nats.js 2.29 connection.
 *
 * Why: nats.js's Parser (a port of nats.go's) walks every byte of every `MSG`/`HMSG` line
 * through a state machine, then splits the line again into an array of views: ~10 % of the
 * NATS reader's CPU per record (session 20's profile of `SYNCLINE_BENCH_BROKER=nats`), where
 * the JetStream reply subject alone is ~80 bytes. Here a message whose whole frame is in the
 * bytes read costs one native search for the line's end, a scan of its subject and sid, and
 * its two sizes read from the line's end; the reply subject between them is never walked.
 *
 * Exactness: this only ever hands nats.js's own dispatcher the event its Parser would have
 * (same `kind`, the same message fields, views of the same bytes). Every other line (`PING`,
 * `PONG`, `+OK`, `-ERR`, `INFO`) is handed whole to nats.js's Parser, which is then between
 * operations, as it was. A `MSG` or `HMSG` line in a form this does not read (tabs, several
 * spaces, lower case, a bad number: never sent by nats-server) makes it hand the rest of the
 * connection's bytes to nats.js's Parser for good, at that line's start, so nats.js reads or
 * rejects it as it always did. A frame cut by the end of a socket read is kept until the
 * read that completes it (copied once then, not per read).
 *
 * It is installed on the connection's Parser object (`protocol.parser`), which nats.js
 * replaces on every reconnect: `FastParser.install` is called again on each pull, and only
 * installs on a Parser that is between operations (a frame half read by nats.js's own stays
 * with it). When the connection does not have nats.js 2.29's shape, nothing is installed.
 */
import type { NatsConnection } from 'nats';
import { Kind, Parser, type MsgArg } from 'nats/lib/nats-base-client/parser.js';

const CR = 0x0d;
const LF = 0x0a;
const SPACE = 0x20;
const TAB = 0x09;
const DIGIT_0 = 0x30;
const DIGIT_9 = 0x39;
const H = 0x48;
const M = 0x4d;
const S = 0x53;
const G = 0x47;
const P = 0x50;
const I = 0x49;
const PLUS = 0x2b;
const MINUS = 0x2d;
/** nats.js's State.OP_START: between operations. */
const OP_START = 0;
/** More digits than this are not a size or sid nats-server sends: read by nats.js instead. */
const MAX_DIGITS = 15;

/** Marks a Parser whose parse this replaced. */
const INSTALLED = Symbol('syncline.fastParser');

interface ParserWithMark extends Parser {
  [INSTALLED]?: FastParser;
}

const originalParse = Parser.prototype.parse;

export class FastParser {
  /** Bytes of a frame the last read ended inside, and how many bytes that frame needs (0: unknown yet). */
  private pending: Buffer[] = [];
  private pendingBytes = 0;
  private need = 0;
  /** Set at a line this does not read: from then on nats.js's Parser reads everything. */
  private delegating = false;

  private constructor(private readonly parser: Parser) {}

  /**
   * Installs on `nc`'s current Parser when it has nats.js 2.29's shape and is between
   * operations; true when the connection's Parser reads through this now.
   */
  static install(nc: NatsConnection): boolean {
    const protocol = (nc as unknown as { protocol?: { parser?: unknown } | null }).protocol;
    const parser = protocol?.parser;
    if (!(parser instanceof Parser)) return false;
    const marked = parser as ParserWithMark;
    if (marked[INSTALLED] !== undefined) return true;
    if (parser.state !== OP_START || parser.argBuf !== undefined || parser.msgBuf !== undefined) return false;
    if (typeof parser.dispatcher?.push !== 'function') return false;
    const fast = new FastParser(parser);
    marked[INSTALLED] = fast;
    parser.parse = (buf: Uint8Array) => fast.parse(buf);
    return true;
  }

  /** Whether `nc`'s Parser reads through this now (installed, and met nothing it left to nats.js). */
  static readsFast(nc: NatsConnection): boolean {
    const parser = (nc as unknown as { protocol?: { parser?: unknown } | null }).protocol?.parser;
    const fast = parser instanceof Parser ? (parser as ParserWithMark)[INSTALLED] : undefined;
    return fast !== undefined && !fast.delegating;
  }

  /** Reads one socket read's bytes, handing each complete operation on in order. */
  parse(chunk: Uint8Array): void {
    if (this.delegating) {
      originalParse.call(this.parser, chunk);
      return;
    }
    let buf = Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
    if (this.pendingBytes > 0) {
      this.pending.push(buf);
      this.pendingBytes += buf.length;
      if (this.need > this.pendingBytes) return;
      buf = Buffer.concat(this.pending, this.pendingBytes);
      this.pending = [];
      this.pendingBytes = 0;
    }
    let i = 0;
    while (i < buf.length) {
      const next = this.operation(buf, i);
      if (next > 0) {
        i = next;
        continue;
      }
      if (next === DELEGATED) return;
      // Incomplete: keep the rest, needing -next bytes in all (0 when not known yet).
      const rest = buf.subarray(i);
      this.pending = [rest];
      this.pendingBytes = rest.length;
      this.need = -next;
      return;
    }
  }

  /**
   * Reads the operation at `i`: returns where the next one starts; or, when the bytes end
   * inside it, minus the bytes it needs from `i` (0 when its line is not complete yet); or
   * DELEGATED when the rest went to nats.js's Parser.
   */
  private operation(buf: Buffer, i: number): number {
    const first = buf[i];
    // nats-server's operations start with one of these; anything else is nats.js's to read or
    // reject (its error then names the same bytes as ever).
    if (first !== H && first !== M && first !== P && first !== PLUS && first !== MINUS && first !== I) return this.delegate(buf, i);
    const lf = buf.indexOf(LF, i);
    if (lf < 0) return 0;
    let argsAt = -1;
    if (first === H && buf[i + 1] === M && buf[i + 2] === S && buf[i + 3] === G && buf[i + 4] === SPACE) argsAt = i + 5;
    else if (first === M && buf[i + 1] === S && buf[i + 2] === G && buf[i + 3] === SPACE) argsAt = i + 4;
    if (argsAt < 0) {
      // PING, PONG, +OK, -ERR, INFO as nats-server writes them: one whole line for nats.js's
      // Parser, which is between operations before and after it. Any other line (a message in
      // another form, a malformed one) is nats.js's to read, with all after it.
      if (!isControlLine(buf, i, lf)) return this.delegate(buf, i);
      originalParse.call(this.parser, buf.subarray(i, lf + 1));
      return lf + 1;
    }
    const ma = lf > argsAt && buf[lf - 1] === CR ? this.messageArgs(buf, argsAt, lf - 1, first === H) : null;
    if (ma === null) return this.delegate(buf, i);
    const dataAt = lf + 1;
    const end = dataAt + ma.size;
    // nats.js hands a message on at the byte after its payload; one that is not \r\n is its to read.
    if (end + 1 > buf.length) return -(end + 1 - i);
    if (buf[end] !== CR) return this.delegate(buf, i);
    if (end + 2 > buf.length) return -(end + 2 - i);
    if (buf[end + 1] !== LF) return this.delegate(buf, i);
    this.parser.dispatcher.push({ kind: Kind.MSG, msg: ma, data: buf.subarray(dataAt, end) });
    return end + 2;
  }

  /**
   * The message's fields from its line `buf[from, to)`: `<subject> <sid> [reply] <size>` for
   * MSG, `... <header size> <total size>` for HMSG, separated by runs of spaces (nats-server
   * writes two before the size when a reply subject is empty); null for anything else.
   */
  private messageArgs(buf: Buffer, from: number, to: number, headers: boolean): MsgArg | null {
    // The sizes, from the line's end backwards; `at` ends up on the first space before them.
    const size = digitsBefore(buf, to, from);
    if (size === null) return null;
    let at = spacesBefore(buf, size.start, from);
    let hdr = -1;
    if (headers) {
      const h = digitsBefore(buf, at, from);
      if (h === null) return null;
      hdr = h.value;
      at = spacesBefore(buf, h.start, from);
    }
    // The subject, then the sid, from the front.
    let p = from;
    for (; p < at; p++) {
      const c = buf[p];
      if (c === SPACE) break;
      if (c === TAB || c === CR) return null;
    }
    if (p === from || p >= at) return null;
    const subjectEnd = p;
    while (buf[p] === SPACE) p++;
    const sidAt = p;
    let sid = 0;
    for (; p < at && buf[p] !== SPACE; p++) {
      const c = buf[p] as number;
      if (c < DIGIT_0 || c > DIGIT_9) return null;
      sid = sid * 10 + (c - DIGIT_0);
    }
    if (p === sidAt || p - sidAt > MAX_DIGITS) return null;
    let reply: Buffer | undefined;
    if (p < at) {
      // A reply subject: one token, up to the spaces before the sizes.
      while (buf[p] === SPACE) p++;
      const replyAt = p;
      for (; p < at; p++) {
        const c = buf[p];
        if (c === SPACE || c === TAB || c === CR) return null;
      }
      reply = buf.subarray(replyAt, at);
    }
    if (hdr > size.value) return null;
    // nats.js's newMsgArg order (sid, hdr, size, then subject and reply): one object shape.
    return { sid, hdr, size: size.value, subject: buf.subarray(from, subjectEnd), reply };
  }

  /** Hands everything from `i` on, now and from now on, to nats.js's Parser. */
  private delegate(buf: Buffer, i: number): number {
    this.delegating = true;
    originalParse.call(this.parser, buf.subarray(i));
    return DELEGATED;
  }
}

const DELEGATED = -Infinity;

/** Where the run of spaces that ends just before `end` starts (`end` - 1 at least, above `floor`). */
function spacesBefore(buf: Buffer, end: number, floor: number): number {
  let p = end - 1;
  while (p - 1 > floor && buf[p - 1] === SPACE) p--;
  return p;
}

const EXACT_LINES = ['PING\r\n', 'PONG\r\n', '+OK\r\n'].map((l) => Buffer.from(l));
/** nats.js reads any text after these up to the line's end. */
const ARGUMENT_LINES = ['-ERR ', 'INFO '].map((l) => Buffer.from(l));

/** Whether `buf[i, lf]` is one of the other lines nats-server writes, in its form. */
function isControlLine(buf: Buffer, i: number, lf: number): boolean {
  if (buf[lf - 1] !== CR) return false;
  const length = lf + 1 - i;
  for (const line of EXACT_LINES) if (length === line.length && buf.compare(line, 0, line.length, i, lf + 1) === 0) return true;
  for (const start of ARGUMENT_LINES) if (length > start.length + 1 && buf.compare(start, 0, start.length, i, i + start.length) === 0) return true;
  return false;
}

/**
 * The decimal number ending just before `end`, preceded by a space after `floor`; its value
 * and where its digits start. Null when there is none.
 */
function digitsBefore(buf: Buffer, end: number, floor: number): { value: number; start: number } | null {
  let p = end;
  while (p > floor) {
    const c = buf[p - 1] as number;
    if (c < DIGIT_0 || c > DIGIT_9) break;
    p--;
  }
  if (p === end || end - p > MAX_DIGITS || p <= floor || buf[p - 1] !== SPACE) return null;
  let value = 0;
  for (let q = p; q < end; q++) value = value * 10 + ((buf[q] as number) - DIGIT_0);
  return { value, start: p };
}
