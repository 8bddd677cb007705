/**
 * The NATS JetStream stream (`stream.broker: nats`), through the `nats` client (v2).
 *
 * Layout, for a topic sanitized to NAME (characters outside [A-Za-z0-9_-] become `_`, plus
 * a hash suffix of the original when any was replaced, so distinct topics stay distinct):
 *   stream NAME_p<N>, subjects NAME.<N>.>  one JetStream stream per partition N
 *   KV bucket NAME_positions             committed positions, key <group>.<N>; group
 *                                        membership and delivery counts (see below)
 *   durable consumer <group> on NAME_p<N>  the reader of partition N for that group
 *
 * Offsets: one stream per partition makes the mapping exact and stateless:
 * offset = stream sequence - 1 (JetStream sequences start at 1 and grow by one per stored
 * message; deduplicated publishes do not take a sequence). Retention (`max_age`) removes
 * from the front only, so offsets of retained records never change.
 *
 * Publishing: every record is a JetStream publish to NAME.<partitionFor(key)>.<schema>.<table>
 * (subjects per table; the stream of partition N takes NAME.N.>) with headers
 * `Syncline-Key` (the record key; NATS messages have no key of their own) and
 * `Syncline-Table` (the key's `schema.table` prefix), and, when the record has an `id`,
 * `Nats-Msg-Id` = id + key, so a republish after a capture restart is dropped by the
 * server's duplicate window instead of stored twice. A publish pipelines all its records
 * on the one connection (written in call order, so stored in call order) and resolves
 * when the server acknowledged all of them (see NatsProducer).
 *
 * Committed positions live in a KV bucket, not in the consumers' ack floors, because:
 * - startPositions and seek must move a reader without touching the group's committed
 *   position (as on Kafka and the embedded log), and JetStream (2.9) can reposition a
 *   consumer only by deleting and recreating it, which resets its ack floor;
 * - after a crash the next reader must get the uncommitted records at once, not after
 *   `ack_wait` when the server would redeliver them;
 * - a reader that polls without committing must not stall at `max_ack_pending`.
 * The durable pull consumers still use acknowledgements (AckPolicy.All, acked when poll()
 * hands records out), which keeps the server from redelivering what this reader already
 * has; records it redelivers anyway (after `ack_wait`) are recognised by sequence and skipped.
 *
 * Consumer groups: NATS has no membership protocol, so the members of a group share the
 * partitions through leases in the same KV bucket (group-membership.ts): start two consumers
 * of a group and each reads half the partitions; when one stops or dies (no heartbeat for
 * the session timeout) the other takes its partitions over, starting them from
 * `startPositions` (the sink's positions), else the committed ones.
 */
import {
  AckPolicy,
  DeliverPolicy,
  DiscardPolicy,
  RetentionPolicy,
  StorageType,
  connect,
  createInbox,
  headers,
  nanos,
  type Consumer,
  type ConsumerMessages,
  type JetStreamClient,
  type JetStreamManager,
  type JsMsg,
  type KV,
  type Msg,
  type MsgHdrs,
  type NatsConnection,
  type NatsError,
  type Subscription,
} from 'nats';
import { partitionFor } from '../../core/change.js';
import { ConfigError, SynclineError } from '../../core/errors.js';
import { RecordBuffer } from '../record-buffer.js';
import { RetentionGapError, type ConsumerOptions, type OutgoingRecord, type Stream, type StreamConsumer, type StreamProducer, type StreamRecord } from '../stream.js';
import { DeliveryTracker } from './delivery-tracker.js';
import { GroupMembership, type MembershipChange, type MembershipOptions } from './group-membership.js';
import { JS_CONSUMER_NOT_FOUND, JS_STREAM_NOT_FOUND, apiErrorCode, natsError } from './nats-errors.js';

export interface NatsStreamOptions {
  /** Heartbeat and session timeout of consumer-group members (see group-membership.ts). */
  membership?: MembershipOptions;
  /** Server URL(s), e.g. `nats://127.0.0.1:4222`. */
  url: string | readonly string[];
  topic: string;
  /** Fixed at creation: reopening with another count throws STREAM_PARTITIONS_MISMATCH. */
  partitions: number;
  /** `max_age` of the streams this creates. Default 168 (7 days). */
  retentionHours?: number;
  /** Records a consumer buffers (all partitions) before it stops pulling. Default 10000. */
  bufferRecords?: number;
  /** Messages per pull request. Default 1000. */
  fetchBatch?: number;
  /** How long a publish waits for the server's acknowledgement. Default 30000. */
  publishTimeoutMs?: number;
  /** Deliveries of a record that kills its reader every time before it is dead-lettered (see delivery-tracker.ts). Default 5. */
  maxDeliver?: number;
}

export const KEY_HEADER = 'Syncline-Key';
export const KEY_ENCODING_HEADER = 'Syncline-Key-Encoding';
export const TABLE_HEADER = 'Syncline-Table';

const DEFAULT_RETENTION_HOURS = 168;
const DEFAULT_BUFFER_RECORDS = 10_000;
const DEFAULT_FETCH_BATCH = 1000;
const DEFAULT_MAX_DELIVER = 5;
const DUPLICATE_WINDOW_MS = 120_000;
/** Server-side redelivery of unacknowledged messages; a live reader acks on poll, so rarely. */
const ACK_WAIT_MS = 300_000;
const PULL_EXPIRES_MS = 1000;

function fnv32(s: string): string {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return (h >>> 0).toString(16).padStart(8, '0');
}

/** A valid stream / consumer / bucket name and subject token derived from `raw`. */
export function natsName(raw: string): string {
  const clean = raw.replace(/[^A-Za-z0-9_-]/g, '_');
  return clean === raw ? raw : `${clean}_${fnv32(raw)}`;
}

export function partitionStreamName(topic: string, partition: number): string {
  return `${natsName(topic)}_p${partition}`;
}

export function positionsBucketName(topic: string): string {
  return `${natsName(topic)}_positions`;
}

/**
 * The subject tail of a record: `<schema>.<table>` of its key, each a valid subject token
 * (see natsName), or `_` for keys without a table. Subjects per table let NATS tools filter
 * a table's changes, e.g. `<topic>.*.public.orders`.
 */
export function tableSubjectOf(key: string): string {
  const table = tableOfKey(key);
  if (table === undefined) return '_';
  const dot = table.indexOf('.');
  return dot > 0 ? `${natsName(table.slice(0, dot))}.${natsName(table.slice(dot + 1))}` : natsName(table);
}

/** `schema.table` of a key built by partitionKeyOf (`schema.table:[...]`), else undefined. */
function tableOfKey(key: string): string | undefined {
  const colon = key.indexOf(':');
  return colon > 0 ? key.slice(0, colon) : undefined;
}

/** Header values may not hold CR or LF: such keys travel URI-encoded. */
function setKeyHeader(h: MsgHdrs, key: string): void {
  if (/[\r\n]/.test(key)) {
    h.set(KEY_HEADER, encodeURIComponent(key));
    h.set(KEY_ENCODING_HEADER, 'uri');
  } else {
    h.set(KEY_HEADER, key);
  }
}

function keyOf(h: MsgHdrs | undefined): string {
  if (h === undefined) return '';
  const key = h.get(KEY_HEADER);
  return h.get(KEY_ENCODING_HEADER) === 'uri' ? decodeURIComponent(key) : key;
}

function closedError(what: string): SynclineError {
  return new SynclineError('STREAM_CLOSED', `NATS stream ${what} is closed`, { retriable: false });
}

/** Connects, creates the partition streams and the positions bucket if missing, and returns the stream. */
export async function openNatsStream(opts: NatsStreamOptions): Promise<Stream> {
  const issues: string[] = [];
  if (opts.topic.length === 0) issues.push('stream.topic: must not be empty');
  if (!Number.isInteger(opts.partitions) || opts.partitions < 1) issues.push(`stream.partitions: must be an integer >= 1, got ${opts.partitions}`);
  if (opts.retentionHours !== undefined && !(opts.retentionHours > 0)) issues.push(`stream.retention_hours: must be > 0, got ${opts.retentionHours}`);
  if (issues.length > 0) throw new ConfigError(issues);

  const servers = typeof opts.url === 'string' ? opts.url : [...opts.url];
  let nc: NatsConnection;
  try {
    nc = await connect({ servers, name: 'syncline', timeout: 3000, maxReconnectAttempts: -1 });
  } catch (err) {
    throw natsError(err, `connecting to ${String(servers)}`);
  }
  try {
    const jsm = await nc.jetstreamManager();
    await ensureStreams(jsm, opts);
    const js = nc.jetstream();
    const kv = await js.views.kv(positionsBucketName(opts.topic), { history: 1 });
    return new NatsStream(nc, jsm, js, kv, opts);
  } catch (err) {
    await nc.close().catch(() => undefined);
    throw natsError(err, `preparing JetStream streams for ${opts.topic}`);
  }
}

async function ensureStreams(jsm: JetStreamManager, opts: NatsStreamOptions): Promise<void> {
  const n = opts.partitions;
  const maxAgeMs = Math.round((opts.retentionHours ?? DEFAULT_RETENTION_HOURS) * 3_600_000);
  const description = (p: number): string => `syncline topic ${opts.topic} partition ${p} of ${n}`;
  const check = (p: number, desc: string | undefined): void => {
    const m = desc === undefined ? null : / of (\d+)$/.exec(desc);
    const had = m?.[1] === undefined ? undefined : Number(m[1]);
    if (had !== undefined && had !== n) {
      throw new SynclineError(
        'STREAM_PARTITIONS_MISMATCH',
        `NATS stream ${partitionStreamName(opts.topic, p)} was created for ${had} partitions but ${n} are configured. ` +
          'The count cannot change (keys would move to other partitions and lose their order): ' +
          `set stream.partitions back to ${had}, or use another stream.topic.`,
        { retriable: false },
      );
    }
  };
  for (let p = 0; p < n; p++) {
    const name = partitionStreamName(opts.topic, p);
    // `<topic>.<p>.<schema>.<table>`; the bare `<topic>.<p>` of streams made before subjects per table.
    const subjects = [`${natsName(opts.topic)}.${p}`, `${natsName(opts.topic)}.${p}.>`];
    try {
      const info = await jsm.streams.info(name);
      check(p, info.config.description);
      if (!subjects.every((x) => info.config.subjects.includes(x))) {
        await jsm.streams.update(name, { ...info.config, subjects: [...new Set([...info.config.subjects, ...subjects])] });
      }
      continue;
    } catch (err) {
      if (apiErrorCode(err) !== JS_STREAM_NOT_FOUND) throw err;
    }
    try {
      await jsm.streams.add({
        name,
        subjects,
        description: description(p),
        retention: RetentionPolicy.Limits,
        storage: StorageType.File,
        discard: DiscardPolicy.Old,
        num_replicas: 1,
        max_age: nanos(maxAgeMs),
        duplicate_window: nanos(Math.min(DUPLICATE_WINDOW_MS, maxAgeMs)),
      });
    } catch (err) {
      // Created meanwhile by another process: accept it if it matches.
      check(p, (await jsm.streams.info(name).catch(() => Promise.reject(err))).config.description);
    }
  }
  // A stream past the configured count means the topic had more partitions.
  try {
    const extra = await jsm.streams.info(partitionStreamName(opts.topic, n));
    check(n, extra.config.description ?? `of ${n + 1}`);
  } catch (err) {
    if (apiErrorCode(err) !== JS_STREAM_NOT_FOUND) throw err;
  }
}

class NatsStream implements Stream {
  readonly partitions: number;
  readonly streamNames: readonly string[];
  readonly subjects: readonly string[];
  private readonly producers = new Set<NatsProducer>();
  private readonly consumers = new Set<NatsConsumer>();
  private closed = false;

  constructor(
    readonly nc: NatsConnection,
    readonly jsm: JetStreamManager,
    readonly js: JetStreamClient,
    readonly kv: KV,
    readonly opts: NatsStreamOptions,
  ) {
    this.partitions = opts.partitions;
    const base = natsName(opts.topic);
    this.streamNames = Array.from({ length: opts.partitions }, (_, p) => `${base}_p${p}`);
    this.subjects = Array.from({ length: opts.partitions }, (_, p) => `${base}.${p}`);
  }

  producer(): Promise<StreamProducer> {
    if (this.closed) return Promise.reject(closedError(''));
    const p = new NatsProducer(this);
    this.producers.add(p);
    return Promise.resolve(p);
  }

  async consumer(groupId: string, options: ConsumerOptions = {}): Promise<StreamConsumer> {
    if (this.closed) throw closedError('');
    if (groupId.length === 0) throw new SynclineError('STREAM_GROUP_INVALID', 'consumer group id is empty', { retriable: false });
    const c = new NatsConsumer(this, groupId);
    this.consumers.add(c);
    try {
      await c.start(options);
    } catch (err) {
      await c.close().catch(() => undefined);
      throw natsError(err, `starting consumer group ${groupId}`);
    }
    return c;
  }

  async endOffsets(): Promise<Map<number, bigint>> {
    if (this.closed) throw closedError('');
    try {
      const infos = await Promise.all(this.streamNames.map((name) => this.jsm.streams.info(name)));
      // The next message gets sequence last_seq + 1, i.e. offset last_seq.
      return new Map(infos.map((info, p) => [p, BigInt(info.state.last_seq)]));
    } catch (err) {
      throw natsError(err, 'reading stream states');
    }
  }

  /**
   * The server's own time index: an ephemeral consumer created with deliver policy
   * "by start time" reports, before delivering anything, `delivered.stream_seq` = (first
   * sequence at or after the time) - 1, which is that record's offset — or last_seq, the
   * end offset, when no record is that new.
   */
  async offsetsForTime(timestampMs: number): Promise<Map<number, bigint>> {
    if (this.closed) throw closedError('');
    const start = new Date(timestampMs).toISOString();
    try {
      const offsets = await Promise.all(
        this.streamNames.map(async (name) => {
          const info = await this.jsm.consumers.add(name, {
            ack_policy: AckPolicy.None,
            deliver_policy: DeliverPolicy.StartTime,
            opt_start_time: start,
            inactive_threshold: nanos(10_000),
          });
          await this.jsm.consumers.delete(name, info.name).catch(() => undefined);
          return BigInt(info.delivered.stream_seq);
        }),
      );
      return new Map(offsets.map((o, p) => [p, o]));
    } catch (err) {
      throw natsError(err, 'looking up offsets by time');
    }
  }

  producerClosed(p: NatsProducer): void {
    this.producers.delete(p);
  }

  consumerClosed(c: NatsConsumer): void {
    this.consumers.delete(c);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    const results = await Promise.allSettled([...[...this.producers].map((p) => p.close()), ...[...this.consumers].map((c) => c.close())]);
    await this.nc.close().catch(() => undefined);
    for (const r of results) if (r.status === 'rejected') throw r.reason;
  }
}

/** One publish() call waiting for its acknowledgements. */
interface PendingPublish {
  remaining: number;
  timer: NodeJS.Timeout;
  resolve: () => void;
  reject: (err: SynclineError) => void;
}

/**
 * JetStream's publish is request/reply: the server answers each stored message on its reply
 * subject. nats.js's `js.publish` pays a request object, a timer and an Error (for its stack)
 * per message — ~90 µs of CPU, capping a producer near 12k records/s — so this producer
 * publishes with `nc.publish` and a reply subject `<inbox>.<token>` under one wildcard
 * subscription, matching acknowledgements to publish() calls by token, with one timer per call.
 */
class NatsProducer implements StreamProducer {
  private readonly inbox: string;
  private readonly sub: Subscription;
  private readonly byToken = new Map<string, PendingPublish>();
  private readonly calls = new Set<PendingPublish>();
  private nextToken = 0;
  /** Set by the first failed publish: later ones are refused so none is stored after it. */
  private failure: SynclineError | null = null;
  private closed = false;
  private readonly timeout: number;
  private drained: (() => void) | null = null;

  constructor(private readonly stream: NatsStream) {
    this.timeout = stream.opts.publishTimeoutMs ?? 30_000;
    this.inbox = createInbox();
    this.sub = stream.nc.subscribe(`${this.inbox}.*`, { callback: (err, msg) => this.onAck(err, msg) });
  }

  publish(records: readonly OutgoingRecord[]): Promise<void> {
    if (this.closed) return Promise.reject(closedError('producer'));
    if (this.failure !== null) return Promise.reject(this.failure);
    if (records.length === 0) return Promise.resolve();
    const { nc, subjects, partitions } = this.stream;
    return new Promise<void>((resolve, reject) => {
      const call: PendingPublish = {
        remaining: records.length,
        timer: setTimeout(() => this.settle(call, new SynclineError('NATS_TIMEOUT', `NATS: publishing to ${this.stream.opts.topic} got no acknowledgement within ${this.timeout} ms`, { retriable: true })), this.timeout),
        resolve,
        reject,
      };
      this.calls.add(call);
      const prefix = `${this.inbox}.`;
      try {
        for (let i = 0; i < records.length; i++) {
          const r = records[i] as OutgoingRecord;
          const h = headers();
          setKeyHeader(h, r.key);
          const table = tableOfKey(r.key);
          if (table !== undefined && !/[\r\n]/.test(table)) h.set(TABLE_HEADER, table);
          if (r.id !== undefined) {
            const id = `${r.id} ${r.key}`;
            h.set('Nats-Msg-Id', /[\r\n]/.test(id) ? encodeURIComponent(id) : id);
          }
          const token = (this.nextToken++).toString(36);
          this.byToken.set(token, call);
          // Written to the socket buffer in call order: stored in call order.
          nc.publish(`${subjects[partitionFor(r.key, partitions)] as string}.${tableSubjectOf(r.key)}`, r.value, { headers: h, reply: prefix + token });
        }
      } catch (err) {
        // The records before the one that could not be sent may be stored.
        this.settle(call, natsError(err, 'publishing'));
      }
    });
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    // Publishes accepted before close still complete.
    if (this.calls.size > 0) await new Promise<void>((resolve) => (this.drained = resolve));
    this.sub.unsubscribe();
    this.stream.producerClosed(this);
  }

  private onAck(err: NatsError | null, msg: Msg): void {
    const token = msg.subject.slice(this.inbox.length + 1);
    const call = this.byToken.get(token);
    if (call === undefined) return; // its call already failed or timed out
    this.byToken.delete(token);
    let failure: SynclineError | null = null;
    if (err !== null) failure = natsError(err, 'publishing');
    else if (msg.headers?.hasError) {
      // A status message instead of an acknowledgement: 503 = no stream listens on the subject.
      const code = msg.headers.code;
      failure = new SynclineError(`NATS_${code}`, `NATS: publishing to ${this.stream.opts.topic} failed: ${code} ${msg.headers.description}`, { retriable: code === 503 || code === 408 });
    } else {
      const ack = JSON.parse(textDecoder.decode(msg.data)) as { error?: { code: number; err_code?: number; description: string } };
      if (ack.error !== undefined) {
        failure = new SynclineError(`NATS_JS_${ack.error.err_code ?? ack.error.code}`, `NATS JetStream: publishing to ${this.stream.opts.topic} failed: ${ack.error.description}`, { retriable: ack.error.code === 503 });
      }
    }
    if (failure !== null) this.settle(call, failure);
    else if (--call.remaining === 0) this.settle(call, null);
  }

  private settle(call: PendingPublish, failure: SynclineError | null): void {
    if (!this.calls.delete(call)) return;
    clearTimeout(call.timer);
    if (failure === null) {
      call.resolve();
    } else {
      this.failure ??= failure;
      for (const [token, c] of this.byToken) if (c === call) this.byToken.delete(token);
      call.reject(failure);
    }
    if (this.calls.size === 0) this.drained?.();
  }
}

const textDecoder = new TextDecoder();

interface PartitionState {
  partition: number;
  stream: string;
  /** This member holds the partition's lease and reads it. */
  active: boolean;
  /** Bumped at every reposition: deliveries of an older pull are dropped. */
  epoch: number;
  /** Where the reader was last positioned. */
  position: bigint;
  /**
   * The position is one the reader must start at (asked for, committed, sought, or reached):
   * one below the first retained record is refused. False only for a group's first start
   * without any position, which begins at the first retained record.
   */
  explicit: boolean;
  /** Offset the next accepted delivery must have; null right after positioning. */
  next: bigint | null;
  /** A reposition to do before the next pull. */
  want: bigint | null;
  /** Delivered messages not yet handed out, aligned with the buffer, for acks. */
  msgs: JsMsg[];
  msgHead: number;
  /** The durable consumer, as of the last reposition. */
  handle: Consumer | null;
  pull: ConsumerMessages | null;
  loop: Promise<void> | null;
}

class NatsConsumer implements StreamConsumer {
  private readonly buffer = new RecordBuffer();
  private readonly states: PartitionState[];
  private assigned: readonly number[] = Object.freeze([]);
  private readonly durable: string;
  private readonly membership: GroupMembership;
  private readonly deliveries: DeliveryTracker;
  private membershipTimer: NodeJS.Timeout | undefined;
  /** The running membership round; rounds never overlap. */
  private round: Promise<void> = Promise.resolve();
  private options: ConsumerOptions = {};
  private readonly perPartition: number;
  private readonly fetchBatch: number;
  private spaceWaiters: (() => void)[] = [];
  private failure: SynclineError | null = null;
  private polling = false;
  private closed = false;

  constructor(
    private readonly stream: NatsStream,
    private readonly groupId: string,
  ) {
    this.durable = natsName(groupId);
    this.membership = new GroupMembership(stream.kv, this.durable, stream.partitions, stream.opts.membership);
    this.deliveries = new DeliveryTracker(stream.kv, this.durable, stream.opts.maxDeliver ?? DEFAULT_MAX_DELIVER);
    this.states = stream.streamNames.map((name, p) => ({
      partition: p,
      stream: name,
      active: false,
      epoch: 0,
      position: 0n,
      explicit: false,
      next: null,
      want: null,
      msgs: [],
      msgHead: 0,
      handle: null,
      pull: null,
      loop: null,
    }));
    this.fetchBatch = stream.opts.fetchBatch ?? DEFAULT_FETCH_BATCH;
    this.perPartition = Math.max(this.fetchBatch, Math.ceil((stream.opts.bufferRecords ?? DEFAULT_BUFFER_RECORDS) / stream.partitions));
  }

  /** Joins the group and starts reading the partitions of this member's share that are free. */
  async start(options: ConsumerOptions): Promise<void> {
    this.options = options;
    // The first round's errors (JetStream, startPositions) fail consumer().
    await this.membershipRound(true);
    this.membershipTimer = setInterval(() => {
      this.round = this.round.then(() => this.membershipRound(false));
    }, this.membership.interval);
  }

  /**
   * One membership round: heartbeat, then stop reading what this member lost or must hand
   * over (releasing a lease only after its reader stopped), then start reading what it took.
   */
  private async membershipRound(first: boolean): Promise<void> {
    if (this.closed) return;
    let change: MembershipChange;
    try {
      change = await this.membership.tick();
    } catch (err) {
      if (first) throw err;
      // Without heartbeats for a session timeout the others consider this member gone.
      if (this.membership.expired()) for (const p of this.membership.forgetAll()) await this.deactivate(p);
      return;
    }
    for (const p of change.lost) await this.deactivate(p);
    for (const p of change.revoke) {
      await this.deactivate(p);
      await this.membership.release(p).catch(() => undefined);
    }
    if (change.acquired.length === 0 || this.closed) return;
    try {
      await this.activate(change.acquired);
    } catch (err) {
      const e = err instanceof SynclineError ? err : natsError(err, `starting to read partitions ${change.acquired.join(',')} as group ${this.groupId}`);
      for (const p of change.acquired) await this.membership.release(p).catch(() => undefined);
      if (first) throw e;
      this.fail(e);
    }
  }

  /** Positions the readers of newly leased partitions (startPositions, else committed) and starts them. */
  private async activate(partitions: readonly number[]): Promise<void> {
    const committed = await this.committed();
    const start = this.options.startPositions ? await this.options.startPositions(partitions) : new Map<number, bigint>();
    const states = partitions.map((p) => this.states[p] as PartitionState);
    await Promise.all(
      states.map(async (st) => {
        const asked = start.get(st.partition) ?? committed.get(st.partition);
        const offset = asked ?? 0n;
        st.explicit = asked !== undefined;
        await this.deliveries.started(st.partition, offset);
        await this.reposition(st, offset);
      }),
    );
    for (const st of states) {
      if (this.closed) return;
      st.active = true;
      st.loop = this.run(st);
    }
    this.assigned = Object.freeze([...new Set([...this.assigned, ...partitions])].sort((a, b) => a - b));
  }

  /** Stops reading a partition; nothing of it comes out of poll() afterwards. */
  private async deactivate(partition: number): Promise<void> {
    const st = this.states[partition] as PartitionState;
    this.assigned = Object.freeze(this.assigned.filter((p) => p !== partition));
    // Handed over, not died on: its deliveries do not count.
    await this.deliveries.handedOver(partition);
    st.active = false;
    st.epoch++;
    st.pull?.stop();
    this.wakeLoops();
    await st.loop;
    st.loop = null;
    this.dropBuffered(st);
  }

  assignment(): readonly number[] {
    return this.assigned;
  }

  async poll(maxRecords: number, maxWaitMs: number): Promise<StreamRecord[]> {
    if (this.closed) throw closedError('consumer');
    if (this.failure !== null) throw this.failure;
    if (this.polling) throw new SynclineError('STREAM_CONCURRENT_POLL', 'poll() called while a previous poll() is still running', { retriable: false });
    this.polling = true;
    try {
      const deadline = performance.now() + maxWaitMs;
      for (;;) {
        // Near the session timeout without a heartbeat, the others may already read our
        // partitions: hand out nothing until a heartbeat gets through (or the leases are gone).
        if (this.membership.expired()) {
          await new Promise((r) => setTimeout(r, Math.min(200, Math.max(0, deadline - performance.now()))));
          if (performance.now() >= deadline || this.closed) return [];
          continue;
        }
        const out = await this.take(maxRecords);
        if (out.length > 0) {
          this.handedOut(out);
          return out;
        }
        if (this.closed) return out;
        if (this.failure !== null) throw this.failure;
        const remaining = deadline - performance.now();
        if (remaining <= 0) return out;
        await this.buffer.wait(remaining);
      }
    } finally {
      this.polling = false;
    }
  }

  /**
   * Takes buffered records for poll(). A partition's first poll after its reader started is
   * limited by its delivery history (delivery-tracker.ts), and recorded before it is handed out.
   */
  private async take(maxRecords: number): Promise<StreamRecord[]> {
    const out: StreamRecord[] = [];
    const normal: number[] = [];
    for (const p of this.assigned) {
      const first = this.deliveries.first(p);
      if (!first) {
        normal.push(p);
        continue;
      }
      if (this.buffer.count(p) === 0 || out.length >= maxRecords) continue;
      const records = this.buffer.take([p], Math.min(first.cap, maxRecords - out.length));
      if (first.exhausted && records[0] !== undefined) records[0].deliveries = first.count;
      try {
        await this.deliveries.handed(p, records.length);
      } catch (err) {
        // Not recorded: nothing is handed out, the records are read again from the stream.
        this.states[p]?.pull?.stop();
        this.seek(p, first.offset);
        throw natsError(err, `recording deliveries of ${this.states[p]?.stream ?? p}`);
      }
      // Handed to another member while the delivery was being recorded: not ours any more.
      if (this.assigned.includes(p)) out.push(...records);
    }
    // Partitions revoked while a delivery was being recorded are left out.
    if (out.length < maxRecords) out.push(...this.buffer.take(normal.filter((p) => this.assigned.includes(p)), maxRecords - out.length));
    return out;
  }

  seek(partition: number, offset: bigint): void {
    const st = this.states[partition];
    if (st === undefined || offset < 0n) {
      throw new SynclineError('STREAM_SEEK_INVALID', `cannot seek partition ${partition} to offset ${offset}`, { retriable: false });
    }
    this.deliveries.stopped(partition);
    // Nothing of the old position comes out of poll() from now on.
    this.dropBuffered(st);
    st.want = offset;
    st.explicit = true;
    st.pull?.stop();
    this.wakeLoops();
  }

  async commit(positions: ReadonlyMap<number, bigint>): Promise<void> {
    if (this.closed) throw closedError('consumer');
    for (const [p, offset] of positions) {
      if (this.states[p] === undefined || offset < 0n) {
        throw new SynclineError('STREAM_COMMIT_INVALID', `cannot commit offset ${offset} for partition ${p}`, { retriable: false });
      }
    }
    // A partition handed to another member since it was polled is that member's to commit.
    const owned = [...positions].filter(([p]) => this.assigned.includes(p));
    try {
      await Promise.all(owned.map(([p, offset]) => this.stream.kv.put(`${this.durable}.${p}`, offset.toString())));
    } catch (err) {
      throw natsError(err, `committing positions of group ${this.groupId}`);
    }
  }

  async committed(): Promise<Map<number, bigint>> {
    try {
      const entries = await Promise.all(this.states.map((st) => this.stream.kv.get(`${this.durable}.${st.partition}`)));
      const result = new Map<number, bigint>();
      entries.forEach((e, p) => {
        if (e !== null && e.operation === 'PUT') result.set(p, BigInt(e.string()));
      });
      return result;
    } catch (err) {
      throw natsError(err, `reading committed positions of group ${this.groupId}`);
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.membershipTimer);
    for (const st of this.states) {
      st.epoch++;
      st.pull?.stop();
    }
    this.wakeLoops();
    this.buffer.wake();
    await Promise.allSettled(this.states.map((st) => st.loop));
    await this.round.catch(() => undefined);
    this.buffer.clear();
    await this.deliveries.closedCleanly();
    // Hand the partitions over now rather than after the session timeout.
    await this.membership.leave().catch(() => undefined);
    this.stream.consumerClosed(this);
  }

  private fail(err: SynclineError): void {
    this.failure ??= err;
    this.buffer.wake();
  }

  private dropBuffered(st: PartitionState): void {
    st.epoch++;
    this.buffer.clear(st.partition);
    st.msgs = [];
    st.msgHead = 0;
    st.next = null;
  }

  /** Acknowledges, per partition, the last message handed out (AckPolicy.All covers the earlier ones). */
  private handedOut(records: readonly StreamRecord[]): void {
    const last = new Map<number, bigint>();
    for (const r of records) last.set(r.partition, r.offset);
    for (const [p, offset] of last) {
      const st = this.states[p] as PartitionState;
      let ack: JsMsg | undefined;
      while (st.msgHead < st.msgs.length) {
        const m = st.msgs[st.msgHead] as JsMsg;
        if (BigInt(m.seq) - 1n > offset) break;
        ack = m;
        st.msgHead++;
      }
      if (st.msgHead === st.msgs.length) {
        st.msgs = [];
        st.msgHead = 0;
      } else if (st.msgHead > 4096) {
        st.msgs = st.msgs.slice(st.msgHead);
        st.msgHead = 0;
      }
      ack?.ack();
    }
    this.wakeLoops();
  }

  private wakeLoops(): void {
    const waiters = this.spaceWaiters;
    this.spaceWaiters = [];
    for (const w of waiters) w();
  }

  private waitForSpace(ms: number): Promise<void> {
    return new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, ms);
      this.spaceWaiters.push(() => {
        clearTimeout(timer);
        resolve();
      });
    });
  }

  /**
   * (Re)creates the partition's durable consumer so that it delivers from `offset` on.
   * Keeps what is buffered: after a seek the buffer was already emptied, and after a failed
   * pull `offset` is the first record not buffered yet, so the buffer stays valid.
   */
  private async reposition(st: PartitionState, offset: bigint): Promise<void> {
    st.epoch++; // deliveries of the old consumer's pulls are ignored from now on
    st.next = null;
    st.position = offset;
    const jsm = this.stream.jsm;
    if (st.explicit) {
      // JetStream starts a consumer below the first retained record at that record, which
      // would skip what retention (max_age) deleted unread: refuse instead.
      const first = BigInt((await jsm.streams.info(st.stream)).state.first_seq) - 1n;
      if (offset < first) throw new RetentionGapError(`NATS stream ${st.stream}`, st.partition, offset, first);
    }
    try {
      await jsm.consumers.delete(st.stream, this.durable);
    } catch (err) {
      if (apiErrorCode(err) !== JS_CONSUMER_NOT_FOUND) throw err;
    }
    await jsm.consumers.add(st.stream, {
      durable_name: this.durable,
      ack_policy: AckPolicy.All,
      deliver_policy: DeliverPolicy.StartSequence,
      opt_start_seq: Number(offset) + 1,
      ack_wait: nanos(ACK_WAIT_MS),
      max_deliver: -1,
      max_ack_pending: 4 * (this.perPartition + this.fetchBatch),
    });
    st.handle = await this.stream.js.consumers.get(st.stream, this.durable);
  }

  /** The pull loop of one partition: repositions when asked, pulls while its buffer has room. */
  private async run(st: PartitionState): Promise<void> {
    let failures = 0;
    /** Accepted deliveries not yet in the buffer; flushed even when the pull fails, so that
     *  everything below `st.next` is always buffered or polled. */
    const batch: StreamRecord[] = [];
    while (!this.closed && st.active) {
      let repositioning = false;
      let epoch = st.epoch;
      try {
        if (st.want !== null) {
          const at = st.want;
          st.want = null;
          repositioning = true;
          await this.reposition(st, at);
          continue; // a seek during the reposition wins
        }
        const room = this.perPartition - this.buffer.count(st.partition);
        if (room <= 0) {
          await this.waitForSpace(200);
          continue;
        }
        epoch = st.epoch;
        const consumer = st.handle;
        if (consumer === null) throw new SynclineError('STREAM_NOT_POSITIONED', `${st.stream} has no reader`, { retriable: true });
        const pull = await consumer.fetch({ max_messages: Math.min(room, this.fetchBatch), expires: PULL_EXPIRES_MS });
        st.pull = pull;
        if (epoch !== st.epoch || this.closed) pull.stop();
        for await (const m of pull) {
          if (epoch !== st.epoch || this.closed) continue; // stopped: let the iterator finish
          if (!this.accept(st, m, batch)) pull.stop();
          // Hand over what arrived so far whenever the pull pauses between messages (the
          // message being processed still counts as pending).
          if (batch.length > 0 && pull.getPending() <= 1) this.flush(st, batch, epoch);
        }
        failures = 0;
      } catch (err) {
        if (this.closed) break;
        const e = natsError(err, `${repositioning ? 'positioning' : 'reading'} ${st.stream} as group ${this.groupId}`);
        // Creating the reader failed for good (the stream is gone, permissions...): give up.
        if (repositioning && !e.retriable) {
          this.fail(e);
          return;
        }
        // A failed pull (consumer deleted, connection lost...): start over from where this
        // reader is.
        st.want ??= st.next ?? st.position;
        await new Promise((r) => setTimeout(r, Math.min(100 * 2 ** failures, 2000)));
        failures++;
      } finally {
        this.flush(st, batch, epoch);
        st.pull = null;
      }
    }
  }

  /** Checks a delivery's sequence; false when the reader must reposition (a gap). */
  private accept(st: PartitionState, m: JsMsg, batch: StreamRecord[]): boolean {
    const offset = BigInt(m.seq) - 1n;
    if (st.next === null && st.explicit && offset > st.position) {
      // The first delivery after positioning is past the position: records were deleted in
      // between. Reposition there, which checks the retained range and refuses a gap.
      st.want = st.position;
      return false;
    }
    if (st.next !== null) {
      if (offset < st.next) return true; // a redelivery of what this reader already has
      if (offset > st.next) {
        // A lost delivery (or expired records): reread from the expected offset; the server
        // starts at the first record still retained.
        st.want = st.next;
        return false;
      }
    }
    st.next = offset + 1n;
    st.explicit = true; // from here on the reader has a position of its own
    batch.push({
      partition: st.partition,
      offset,
      key: keyOf(m.headers),
      value: Buffer.from(m.data),
      timestamp: Math.floor(m.info.timestampNanos / 1e6),
    });
    st.msgs.push(m);
    return true;
  }

  private flush(st: PartitionState, batch: StreamRecord[], epoch: number): void {
    if (batch.length === 0) return;
    if (epoch === st.epoch && !this.closed) this.buffer.push(st.partition, batch.splice(0));
    else batch.length = 0;
  }
}
