/**
 * Pull requests to one durable JetStream consumer, answered on an inbox that stays
 * subscribed while its reader stays at one position.
 *
 * Why not nats.js's `consumer.fetch()`, which the reader used first: it wraps every message
 * in a JsMsg, queues it through an async iterator and runs a timer and status machinery per
 * pull, ~9 µs of CPU per record where this takes ~3 (bench/stream.bench.mjs, 200k records),
 * and on a 2-core machine that CPU is the NATS path's bound. It also ends a fetch on its own
 * timer and unsubscribes, so deliveries the server had already sent to that pull were
 * dropped; here the inbox outlives each pull, and a late delivery still arrives, in order,
 * behind the ones sent before it.
 *
 * The protocol is JetStream's pull API as nats.js speaks it: `{"batch":n,"expires":ns}`
 * published to `$JS.API.CONSUMER.MSG.NEXT.<stream>.<consumer>` with the inbox as reply
 * subject; the server sends up to n messages to the inbox, each with its ack subject as
 * reply, and ends a request it did not fill with a status message without reply (408 at
 * its expiry, 409 when it refuses it, e.g. "Consumer Deleted"). A request to a consumer
 * that does not exist gets no answer at all: the client's own deadline ends it.
 */
import { createInbox, type Msg, type NatsConnection, type NatsError, type Subscription } from 'nats';
import { SynclineError } from '../../core/errors.js';
import { deliveryPosition } from './ack-subject.js';
import { FastParser } from './fast-parser.js';

/**
 * One delivered message, as the reader needs it. Its key and ack subject are read from the
 * message only when asked for: apply reads a record's change from its value, and a reader
 * acknowledges one message per pull.
 */
export interface Delivery {
  /** JetStream stream sequence (offset + 1). */
  seq: number;
  /** When the server stored the message, in ms since the epoch. */
  timestampMs: number;
  value: Buffer;
  /** The message: `deliveredKey(msg)` is its record key, `msg.reply` where its acknowledgement goes. */
  msg: Msg;
}

export interface InboxHandler {
  /** A delivery, in the order the server sent it. */
  delivered(d: Delivery): void;
  /** The deliveries of one socket read have all been passed to `delivered`. */
  readDone(): void;
}

/**
 * How long after a pull's expiry the client ends it without the server's 408. nats-server
 * 2.9 now and then lets a partly filled request expire without one (4 of ~180 one-second
 * requests in 30 s at 5k records/s): the partition then waited for this deadline, the
 * latency's tail. A delivery that comes after it still arrives on the inbox.
 */
const EXPIRY_GRACE_MS = 50;

/** The raw bytes of a nats.js 2.x message, not part of its typed API (checked before use). */
interface RawMsg {
  _rdata?: unknown;
  _msg?: { hdr?: unknown; reply?: unknown };
}

/** How a pull ended. */
export interface PullResult {
  /** Deliveries that arrived while it waited. */
  received: number;
  /** Ended by the server (filled, or its status message); false: by the client's deadline, an interrupt or close. */
  answered: boolean;
}

interface WaitingPull {
  remaining: number;
  received: number;
  timer: NodeJS.Timeout;
  finish: (err: SynclineError | null, answered: boolean) => void;
}

export class PullInbox {
  private readonly subject: string;
  private readonly inbox = createInbox();
  private readonly sub: Subscription;
  private waiting: WaitingPull | null = null;
  private readScheduled = false;
  private closed = false;

  constructor(
    private readonly nc: NatsConnection,
    private readonly stream: string,
    durable: string,
    private readonly handler: InboxHandler,
  ) {
    this.subject = `$JS.API.CONSUMER.MSG.NEXT.${stream}.${durable}`;
    this.sub = nc.subscribe(this.inbox, { callback: (err, msg) => this.onMessage(err, msg) });
  }

  /**
   * Asks for up to `batch` messages and resolves when the request ended: filled, expired (the
   * server's 408, or `expiresMs` + a grace without it), interrupted or closed. Rejects when
   * the server refused it (409) or the subscription failed. One pull at a time.
   */
  pull(batch: number, expiresMs: number): Promise<PullResult> {
    if (this.closed) return Promise.resolve({ received: 0, answered: false });
    // Each pull, not once: nats.js makes a new Parser at every reconnect.
    FastParser.install(this.nc);
    return new Promise<PullResult>((resolve, reject) => {
      const waiting: WaitingPull = {
        remaining: batch,
        received: 0,
        timer: setTimeout(() => waiting.finish(null, false), expiresMs + EXPIRY_GRACE_MS),
        finish: (err, answered) => {
          if (this.waiting !== waiting) return;
          this.waiting = null;
          clearTimeout(waiting.timer);
          if (err === null) resolve({ received: waiting.received, answered });
          else reject(err);
        },
      };
      this.waiting = waiting;
      try {
        this.nc.publish(this.subject, JSON.stringify({ batch, expires: expiresMs * 1_000_000 }), { reply: this.inbox });
      } catch (err) {
        waiting.finish(new SynclineError('NATS_PULL_FAILED', `NATS: asking ${this.stream} for messages failed: ${String(err)}`, { retriable: true }), false);
      }
    });
  }

  /** Ends the waiting pull (it resolves); later deliveries still arrive. */
  interrupt(): void {
    this.waiting?.finish(null, false);
  }

  /** Unsubscribes: nothing is delivered from now on, and a waiting pull resolves. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.interrupt();
    this.sub.unsubscribe();
  }

  private onMessage(err: NatsError | null, msg: Msg): void {
    if (this.closed) return;
    if (err !== null) {
      this.waiting?.finish(new SynclineError('NATS_PULL_FAILED', `NATS: reading ${this.stream} failed: ${err.message}`, { retriable: true }), false);
      return;
    }
    const reply = replyOf(msg);
    if (reply.length === 0) {
      this.onStatus(msg);
      return;
    }
    const at = deliveryPosition(reply);
    if (at === null) return; // not a JetStream delivery: nothing else publishes to this inbox
    this.handler.delivered({ seq: at.seq, timestampMs: at.timestampMs, value: payloadOf(msg), msg });
    const waiting = this.waiting;
    if (waiting !== null) {
      waiting.received++;
      if (--waiting.remaining <= 0) waiting.finish(null, true);
    }
    // nats.js hands over a socket read's messages in one synchronous run: the handler hears
    // once per read, after the last of them.
    if (!this.readScheduled) {
      this.readScheduled = true;
      queueMicrotask(() => {
        this.readScheduled = false;
        if (!this.closed) this.handler.readDone();
      });
    }
  }

  private onStatus(msg: Msg): void {
    const code = msg.headers?.code ?? 0;
    // 100 is an idle heartbeat (not asked for); 404 "No Messages" and 408 "Request Timeout" end
    // a request normally. A status may belong to an earlier request whose own deadline ended it
    // here first: ending the current one early costs one more request, nothing else.
    if (code === 100) return;
    if (code === 404 || code === 408) {
      this.waiting?.finish(null, true);
      return;
    }
    this.waiting?.finish(new SynclineError(`NATS_PULL_${code}`, `NATS: ${this.stream} refused a pull request: ${code} ${msg.headers?.description ?? ''}`.trim(), { retriable: true }), true);
  }
}

/** The reply subject's bytes as nats.js's parser left them, else encoded from `msg.reply`. */
function replyOf(msg: Msg): Uint8Array {
  const reply = (msg as unknown as RawMsg)._msg?.reply;
  if (reply instanceof Uint8Array) return reply;
  return Buffer.from(msg.reply ?? '', 'utf8');
}

/**
 * The payload as a view of the bytes nats.js read from the socket: they belong to that one
 * read (a new Buffer per read, never reused), so no copy is needed.
 */
function payloadOf(msg: Msg): Buffer {
  const raw = msg as unknown as RawMsg;
  const data = raw._rdata;
  const hdr = raw._msg?.hdr;
  if (data instanceof Uint8Array && typeof hdr === 'number' && hdr <= data.length) {
    const from = hdr < 0 ? 0 : hdr;
    return Buffer.from(data.buffer, data.byteOffset + from, data.length - from);
  }
  const d = msg.data;
  return Buffer.from(d.buffer, d.byteOffset, d.byteLength);
}
