/**
 * The NATS stream's producer. Every record is a JetStream publish to
 * NAME.<partitionFor(key)>.<schema>.<table> (subjects per table; the stream of partition N
 * takes NAME.N.>) with headers `Syncline-Key` and `Syncline-Table` (the key's `schema.table`
 * prefix), and, when the record has an `id`, `Nats-Msg-Id` = id + key, so a republish after
 * a capture restart is dropped by the server's duplicate window instead of stored twice. A
 * publish pipelines all its records on the one connection (written in call order, so stored
 * in call order) and resolves when the server acknowledged all of them: each one, or, in a
 * chain (publish-chains.ts), the last of each partition's run, stored only when all before it
 * were.
 *
 * A record over the server's max_payload goes through the topic's object store (claim-check.ts):
 * its value is put there first, then the record is published in its place with an empty body
 * and headers naming the object. Such a call, and every call after it until it was written,
 * waits for the puts before it is written, so records are still written in call order.
 */
import { ErrorCode, Events, createInbox, type Msg, type NatsConnection, type NatsError, type Status, type Subscription } from 'nats';
import { partitionFor } from '../../core/change.js';
import { SynclineError } from '../../core/errors.js';
import { DEFAULT_RETENTION_HOURS, type BrokerClients } from '../common/broker-stream.js';
import { streamClosedError } from '../common/errors.js';
import type { OutgoingRecord, StreamProducer } from '../stream.js';
import { ObjectBucket, claimHeaderLines, objectNameOf } from './claim-check.js';
import { FrameWriter, clientConnected } from './frame-writer.js';
import { isNatsError, natsError, payloadTooLarge } from './nats-errors.js';
import { objectsBucketName, partitionSubject, tableOfKey, tableSubjectOf } from './nats-names.js';
import { PublishChains, type ChainSwitch } from './publish-chains.js';
import { publishFrames } from './publish-frames.js';
import { RecordHeaders, headersAndValueFit, mayNotFit, natsMsgIdOf, recordHeaderBlock } from './record-headers.js';

/** One publish() call waiting for its acknowledgements. */
interface PendingPublish {
  /** The last segment of the call's reply subject. */
  token: string;
  remaining: number;
  timer: NodeJS.Timeout;
  resolve: () => void;
  reject: (err: SynclineError) => void;
}

/** A publish() made while the connection was away (see watchConnection). */
interface WaitingPublish {
  records: readonly OutgoingRecord[];
  extra: readonly (string | undefined)[] | undefined;
  timer: NodeJS.Timeout;
  resolve: () => void;
  reject: (err: SynclineError) => void;
}

export interface NatsProducerTarget {
  topic: string;
  partitions: number;
  /** How long a publish waits for the server's acknowledgement. Default 30000. */
  publishTimeoutMs?: number;
  /** The partition streams' max_age, which the objects of records over max_payload outlive. Default 168. */
  retentionHours?: number;
}

/** A record's records to write (claim checks in place of those over max_payload) and their extra header lines. */
interface Claimed {
  records: readonly OutgoingRecord[];
  extra: (string | undefined)[] | undefined;
}

const EMPTY = Buffer.alloc(0);

const textDecoder = new TextDecoder();
const ERROR_MEMBER = Buffer.from('"error":');
const DUPLICATE_MEMBER = Buffer.from('"duplicate"');
/** JetStream's "wrong last msg ID": a chain broken (publish-chains.ts). */
const WRONG_LAST_MSG_ID = 10070;
/** A bound on the subject tail cache, for a stream of ever new table names. */
const MAX_CACHED_TAILS = 10_000;

/** The error of a call refused for a record over max_payload, naming its largest record. */
function tooLarge(records: readonly OutgoingRecord[], maxPayload: number, cause: unknown): SynclineError {
  const largest = records.reduce((a, b) => (b.value.length > a.value.length ? b : a));
  return payloadTooLarge(largest.key, largest.value.length, maxPayload, cause);
}

/**
 * JetStream's publish is request/reply: the server answers each stored message on its reply
 * subject. nats.js's `js.publish` pays a request object, a timer and an Error (for its stack)
 * per message — ~90 µs of CPU, capping a producer near 12k records/s — so this producer
 * publishes core NATS messages (what `nc.publish` writes) with the reply subject
 * `<inbox>.<token>` of its publish() call (one token per call, not per record) under one
 * wildcard subscription, counting the acknowledgements of each call, with one timer per call.
 * It writes those messages' frames itself, all of a call's records into one buffer handed to
 * the connection at once (see publish-frames.ts, frame-writer.ts): nats.js's `nc.publish`
 * builds and encodes a protocol string and queues four buffers per message.
 */
export class NatsProducer implements StreamProducer {
  private readonly inbox: string;
  private readonly sub: Subscription;
  private readonly subjects: readonly string[];
  /** Undefined with a nats.js whose internals FrameWriter does not know: then nc.publish. */
  private readonly frames: FrameWriter | undefined;
  /** `<schema>.<table>` subject tails by table (tableSubjectOf: two regex replaces a record). */
  private readonly tails = new Map<string, string>();
  private readonly byToken = new Map<string, PendingPublish>();
  private readonly chains: PublishChains;
  private readonly calls = new Set<PendingPublish>();
  private nextToken = 0;
  /** Set by the first failed publish: later ones are refused so none is stored after it. */
  private failure: SynclineError | null = null;
  private closed = false;
  private readonly timeout: number;
  private drained: (() => void) | null = null;
  private readonly statuses: AsyncIterable<Status> & { stop(): void };
  /** False from a disconnect until the client reconnected (see watchConnection). */
  private connected: boolean;
  /** Publishes made while the connection was away, waiting for the reconnect (see watchConnection). */
  private waiting: WaitingPublish[] = [];
  /** Where records over max_payload go (claim-check.ts). */
  private readonly objects: ObjectBucket;
  /** Calls waiting for their claim checks or behind one: later calls queue behind them. */
  private claiming = 0;
  /** Settles when the last call queued for claim checks was written (or failed). */
  private claimTail: Promise<void> = Promise.resolve();
  /** close() was called: no new publish, the queued ones are still written. */
  private closing = false;

  constructor(
    private readonly nc: NatsConnection,
    private readonly target: NatsProducerTarget,
    private readonly clients: BrokerClients,
    private readonly chainSwitch: ChainSwitch = { broken: false },
    objects?: ObjectBucket,
  ) {
    this.timeout = target.publishTimeoutMs ?? 30_000;
    const retentionMs = Math.round((target.retentionHours ?? DEFAULT_RETENTION_HOURS) * 3_600_000);
    this.objects = objects ?? new ObjectBucket(nc, objectsBucketName(target.topic), retentionMs, this.timeout);
    this.subjects = Array.from({ length: target.partitions }, (_, p) => partitionSubject(target.topic, p));
    this.chains = new PublishChains(target.partitions, chainSwitch);
    this.frames = FrameWriter.of(nc);
    this.connected = clientConnected(nc);
    this.inbox = createInbox();
    this.sub = nc.subscribe(`${this.inbox}.>`, { callback: (err, msg) => this.onAck(err, msg) });
    this.statuses = nc.status() as AsyncIterable<Status> & { stop(): void };
    void this.watchConnection();
  }

  /**
   * A connection lost with publishes outstanding fails the producer at once. What was on the
   * wire is lost, and nats.js resets its outbound buffer at every reconnect, so what was
   * queued is dropped too; a later publish() would be stored on the new connection before the
   * lost ones time out, and the caller's republish of those (capture: everything after the
   * slot's confirmed position) would store them after it: a row's older change after its
   * newer one. A publish() while the connection is away (of a producer that lost nothing: an
   * idle one, or one made during the outage, as capture's restart makes) is not handed to
   * nats.js, which would drop it the same way: it waits for the reconnect, in call order,
   * at most the publish timeout.
   */
  private async watchConnection(): Promise<void> {
    for await (const s of this.statuses) {
      if (s.type === Events.Reconnect) {
        this.connected = true;
        this.sendWaiting();
      }
      if (s.type !== Events.Disconnect) continue;
      this.connected = false;
      // A restarted server may not know the last Msg-Ids (and another connection may have
      // published meanwhile): answers per record until they are known again.
      this.chains.forget();
      for (const call of [...this.calls]) this.settle(call, this.disconnected());
    }
  }

  /** Sends what waited for the reconnect, in call order, unless the producer failed meanwhile. */
  private sendWaiting(): void {
    const waiting = this.waiting;
    this.waiting = [];
    for (const w of waiting) {
      clearTimeout(w.timer);
      if (this.failure !== null) w.reject(this.failure);
      else this.send(w.records, w.extra).then(w.resolve, w.reject);
    }
  }

  /** Fails the producer and every publish waiting for the reconnect. */
  private giveUpWaiting(failure: SynclineError): void {
    this.failure ??= failure;
    this.sendWaiting();
  }

  private disconnected(): SynclineError {
    return new SynclineError('NATS_DISCONNECT', `NATS: the connection was lost while publishing to ${this.target.topic}; what was on the wire is lost`, { retriable: true });
  }

  publish(records: readonly OutgoingRecord[]): Promise<void> {
    if (this.closed || this.closing) return Promise.reject(streamClosedError('NATS', 'producer'));
    if (this.failure !== null) return Promise.reject(this.failure);
    if (records.length === 0) return Promise.resolve();
    if (this.claiming > 0 || this.mayNeedClaims(records)) return this.publishClaimed(records);
    return this.publishNow(records, undefined);
  }

  /** Whether a record may be over max_payload (a bound: claimChecks decides). Two lengths per record. */
  private mayNeedClaims(records: readonly OutgoingRecord[]): boolean {
    const limit = this.nc.info?.max_payload;
    if (limit === undefined) return false;
    for (let i = 0; i < records.length; i++) {
      const r = records[i] as OutgoingRecord;
      if (mayNotFit(r.key, r.value.length, limit)) return true;
    }
    return false;
  }

  /**
   * A call with a record over max_payload, or behind one: queued, its objects put, then
   * written as publishNow writes a call, in call order. A failed put fails the producer, as a
   * refused record does: nothing after it is written.
   */
  private publishClaimed(records: readonly OutgoingRecord[]): Promise<void> {
    this.claiming++;
    const turn = this.claimTail.then(async () => {
      try {
        if (this.failure !== null) throw this.failure;
        const claimed = await this.claimChecks(records);
        if (this.failure !== null) throw this.failure;
        // Not awaited here: the next queued call is written right after this one, not after its acknowledgement.
        return { sent: this.publishNow(claimed.records, claimed.extra) };
      } catch (err) {
        const e = natsError(err, `publishing to ${this.target.topic}`);
        this.failure ??= e;
        throw e;
      }
    });
    this.claimTail = turn.then(
      () => void this.claiming--,
      () => void this.claiming--,
    );
    return turn.then((t) => t.sent);
  }

  /** Puts the values of the records over max_payload in the object store; returns what to publish instead. */
  private async claimChecks(records: readonly OutgoingRecord[]): Promise<Claimed> {
    const limit = this.nc.info?.max_payload ?? Infinity;
    let out: OutgoingRecord[] | undefined;
    let extra: (string | undefined)[] | undefined;
    for (let i = 0; i < records.length; i++) {
      const r = records[i] as OutgoingRecord;
      if (!mayNotFit(r.key, r.value.length, limit)) continue;
      const id = r.id;
      const msgId = natsMsgIdOf(r.key, id);
      if (headersAndValueFit(r.key, msgId, undefined, r.value.length, limit)) continue;
      const name = objectNameOf(msgId);
      const lines = claimHeaderLines({ bucket: this.objects.bucket, name, size: r.value.length });
      // A key so long that even the claim check is over max_payload: nothing to do but say so.
      if (!headersAndValueFit(r.key, msgId, undefined, 0, limit, lines)) throw payloadTooLarge(r.key, Buffer.byteLength(r.key) + r.value.length, limit, undefined);
      await this.objects.put(name, r.value);
      out ??= [...records];
      extra ??= new Array<string | undefined>(records.length).fill(undefined);
      out[i] = id === undefined ? { key: r.key, value: EMPTY } : { key: r.key, value: EMPTY, id };
      extra[i] = lines;
    }
    return { records: out ?? records, extra };
  }

  /** Writes a call now, or queues it for the reconnect. */
  private publishNow(records: readonly OutgoingRecord[], extra: readonly (string | undefined)[] | undefined): Promise<void> {
    if (this.failure !== null) return Promise.reject(this.failure);
    // A connection closed for good fails the call in send(), as nats.js refuses it.
    if (!this.nc.isClosed() && (this.waiting.length > 0 || !this.connected || !clientConnected(this.nc))) {
      // nats.js would drop the records silently (see watchConnection).
      this.connected = false;
      return new Promise<void>((resolve, reject) => {
        const timer = setTimeout(
          () => this.giveUpWaiting(new SynclineError('NATS_DISCONNECT', `NATS: the connection to the server did not come back within ${this.timeout} ms; nothing was published to ${this.target.topic}`, { retriable: true })),
          this.timeout,
        );
        this.waiting.push({ records, extra, resolve, reject, timer });
      });
    }
    return this.send(records, extra);
  }

  /** Writes a call's records to the connection and resolves once every one was stored. */
  private send(records: readonly OutgoingRecord[], extra: readonly (string | undefined)[] | undefined): Promise<void> {
    if (this.closed) return Promise.reject(streamClosedError('NATS', 'producer'));
    return new Promise<void>((resolve, reject) => {
      const call: PendingPublish = {
        token: '',
        remaining: 0,
        timer: setTimeout(() => this.settle(call, new SynclineError('NATS_TIMEOUT', `NATS: publishing to ${this.target.topic} got no acknowledgement within ${this.timeout} ms`, { retriable: true })), this.timeout),
        resolve,
        reject,
      };
      this.calls.add(call);
      const token = (this.nextToken++).toString(36);
      this.byToken.set(token, call);
      call.token = token;
      const n = records.length;
      const partitions = new Array<number>(n);
      const subjects = new Array<string>(n);
      const msgIds = new Array<string | undefined>(n);
      for (let i = 0; i < n; i++) {
        const r = records[i] as OutgoingRecord;
        const p = partitionFor(r.key, this.target.partitions);
        partitions[i] = p;
        subjects[i] = `${this.subjects[p] as string}.${this.tailOf(r.key)}`;
        msgIds[i] = natsMsgIdOf(r.key, r.id);
      }
      // A record that fits max_payload only without the chain's header goes unchained: nats.js
      // refuses one over it (not retriable), where the same record answered would be stored.
      const maxPayload = this.nc.info?.max_payload ?? Infinity;
      const plan = this.chains.plan(partitions, subjects, msgIds, `${this.inbox}.${token}`, (i, expected) => {
        const r = records[i] as OutgoingRecord;
        return headersAndValueFit(r.key, msgIds[i], expected, r.value.length, maxPayload, extra?.[i]);
      });
      call.remaining = plan.answers;
      try {
        // Written to the socket buffer in call order: stored in call order.
        if (this.frames !== undefined) {
          // One buffer for the whole call, however large (~0.5 MB for 1000 records of 300
          // bytes): nats.js queues it as is and hands it to the socket at its next flush
          // (copying it once more only when other bytes are queued before it). A record over
          // max_payload fails the call before a byte of it is written.
          const frames = publishFrames(records, plan, this.frames.maxPayload(), extra);
          this.frames.write(frames.bytes, records.length, frames.messageBytes);
        } else {
          for (let i = 0; i < n; i++) {
            const r = records[i] as OutgoingRecord;
            const headers = new RecordHeaders(recordHeaderBlock(r.key, msgIds[i], plan.expected[i], extra?.[i]));
            this.nc.publish(subjects[i] as string, r.value, { headers, reply: plan.replies[i] });
          }
        }
      } catch (err) {
        // Through nc.publish, the records before the one that could not be sent may be stored.
        this.settle(call, isNatsError(err) && err.code === ErrorCode.MaxPayloadExceeded ? tooLarge(records, maxPayload, err) : natsError(err, 'publishing'));
      }
    });
  }

  private tailOf(key: string): string {
    const table = tableOfKey(key) ?? '';
    let tail = this.tails.get(table);
    if (tail === undefined) {
      if (this.tails.size >= MAX_CACHED_TAILS) this.tails.clear();
      tail = tableSubjectOf(key);
      this.tails.set(table, tail);
    }
    return tail;
  }

  async close(): Promise<void> {
    if (this.closed || this.closing) return;
    // Calls queued for their claim checks were accepted: they are written first.
    this.closing = true;
    await this.claimTail;
    this.closed = true;
    // Publishes that waited for a reconnect were never sent; those accepted before close still complete.
    this.giveUpWaiting(streamClosedError('NATS', 'producer'));
    if (this.calls.size > 0) await new Promise<void>((resolve) => (this.drained = resolve));
    this.sub.unsubscribe();
    this.statuses.stop();
    this.clients.delete(this);
  }

  private onAck(err: NatsError | null, msg: Msg): void {
    // `<inbox>.<token>`: the last record of a chain; `<inbox>.<token>.<partition>`: an answered record.
    const rest = msg.subject.slice(this.inbox.length + 1);
    const dot = rest.indexOf('.');
    const token = dot < 0 ? rest : rest.slice(0, dot);
    let failure: SynclineError | null = null;
    let duplicate = false;
    if (err !== null) failure = natsError(err, 'publishing');
    else if (msg.headers?.hasError) {
      // A status message instead of an acknowledgement: 503 = no stream listens on the subject.
      const code = msg.headers.code;
      failure = new SynclineError(`NATS_${code}`, `NATS: publishing to ${this.target.topic} failed: ${code} ${msg.headers.description}`, { retriable: code === 503 || code === 408 });
    } else {
      // A PubAck is `{"stream":…,"seq":…}` (with `"duplicate": true` for a message already
      // stored); only a refusal has an `"error":` member, so the common case is settled
      // without decoding or parsing the JSON.
      const data = msg.data;
      const bytes = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
      const refused = bytes.includes(ERROR_MEMBER);
      duplicate = !refused && bytes.includes(DUPLICATE_MEMBER);
      const ack = refused ? (JSON.parse(textDecoder.decode(data)) as { error?: { code: number; err_code?: number; description: string } }) : {};
      if (ack.error !== undefined) {
        const chainBroken = ack.error.err_code === WRONG_LAST_MSG_ID;
        failure = chainBroken
          ? this.chainBroken(`NATS JetStream: ${this.target.topic} refused a record: its last message is not the one published before it (${ack.error.description}): another publisher, or an earlier record the server did not store`)
          : new SynclineError(`NATS_JS_${ack.error.err_code ?? ack.error.code}`, `NATS JetStream: publishing to ${this.target.topic} failed: ${ack.error.description}`, { retriable: ack.error.code === 503 });
      } else if (dot < 0 && duplicate) {
        // The chain's last record was found already stored: the stream's last message is
        // not known to be this producer's (see publish-chains.ts).
        failure = this.chainBroken(`NATS JetStream: ${this.target.topic} already held a record this producer published in a chain: another publisher`);
      }
    }
    if (dot >= 0) this.chains.answered(Number(rest.slice(dot + 1)), failure === null && !duplicate);
    const call = this.byToken.get(token);
    if (call === undefined) return; // its call already failed or timed out
    if (failure !== null) this.settle(call, failure);
    else if (--call.remaining === 0) this.settle(call, null);
  }

  /** A chain broke (publish-chains.ts): from now on this stream's producers answer every record. */
  private chainBroken(what: string): SynclineError {
    this.chainSwitch.broken = true;
    return new SynclineError('NATS_CHAIN_BROKEN', `${what}; nothing after it was stored, and publishing again (every record answered from now on) stores the rest`, { retriable: true });
  }

  private settle(call: PendingPublish, failure: SynclineError | null): void {
    if (!this.calls.delete(call)) return;
    this.byToken.delete(call.token);
    clearTimeout(call.timer);
    if (failure === null) {
      call.resolve();
    } else {
      this.failure ??= failure;
      call.reject(failure);
    }
    if (this.calls.size === 0) this.drained?.();
  }
}
