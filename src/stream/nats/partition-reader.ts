/**
 * The reader of one partition for one member of a group: a durable pull consumer on the
 * partition's stream, repositioned (deleted and recreated) whenever the reader must move, and
 * a pull loop that feeds the member's buffer while the partition's share of it has room. The
 * pulls are answered on an inbox that stays subscribed until the next reposition
 * (pull-inbox.ts): a delivery is checked and buffered as it arrives.
 *
 * The durable pull consumers use acknowledgements (AckPolicy.All, covering what poll() handed
 * out), which keeps the server from redelivering what this reader already has; records it
 * redelivers anyway (after `ack_wait`) are recognised by sequence and skipped. An ack is a
 * message (and, at each poll, a socket write of its own): the reader acks what was handed
 * out just before its next pull request, or once a pull's worth of records waits for one,
 * so that one ack covers many polls.
 *
 * A record with an empty body that names an object (a record over the server's max_payload,
 * see claim-check.ts) is held, with every record accepted after it, until its object is read:
 * then it goes to the buffer with the object's bytes as its value, and the records behind it
 * follow in order. Other records take the path they always took (a length test more).
 */
import { AckPolicy, DeliverPolicy, nanos, type JetStreamManager, type Msg, type NatsConnection } from 'nats';
import { PrerequisiteError, SynclineError } from '../../core/errors.js';
import type { RecordBuffer } from '../record-buffer.js';
import { RetentionGapError, type StreamRecord } from '../stream.js';
import { claimOf, type Claim, type ObjectBucket } from './claim-check.js';
import { JS_CONSUMER_NOT_FOUND, apiErrorCode, natsError } from './nats-errors.js';
import { DeliveredRecord } from './delivered-record.js';
import { PullInbox, type Delivery } from './pull-inbox.js';

/** Server-side redelivery of unacknowledged messages; a live reader acks on poll, so rarely. */
const ACK_WAIT_MS = 300_000;
const PULL_EXPIRES_MS = 1000;
const ACK = Buffer.from('+ACK');

/** What the readers of a member share. */
export interface ReaderHost {
  readonly jsm: JetStreamManager;
  readonly nc: NatsConnection;
  /** The topic's object store, where the values of records over max_payload are (claim-check.ts). */
  readonly objects?: ObjectBucket;
  /** How many times the connection was lost so far: deliveries on the wire then are lost. */
  readonly disconnects: number;
  /** The durable consumer's name: the group's. */
  readonly durable: string;
  readonly groupId: string;
  readonly buffer: RecordBuffer;
  /** Records one partition may hold in the buffer before its reader stops pulling. */
  readonly perPartition: number;
  /** Messages per pull request. */
  readonly fetchBatch: number;
  isClosed(): boolean;
  /** Fails the member: every later poll() throws `err`. */
  fail(err: SynclineError): void;
  /** Resolves when poll() made room in the buffer (or the reader must look again), or after `ms`. */
  waitForSpace(ms: number): Promise<void>;
  /** Wakes every reader waiting for space. */
  wakeLoops(): void;
}

/** An accepted delivery held behind a claim check whose object is not read yet. */
interface Held {
  offset: bigint;
  delivery: Delivery;
  /** Its own claim, if it is one. */
  claim: Claim | undefined;
}

export class PartitionReader {
  /** This member holds the partition's lease and reads it. */
  private active = false;
  /** Bumped at every reposition, seek and stop: a pull loop iteration of an older one hands nothing over. */
  private epoch = 0;
  /** Where the reader was last positioned. */
  private position = 0n;
  /**
   * The position is one the reader must start at (asked for, committed, sought, or reached):
   * one below the first retained record is refused. False only for a group's first start
   * without any position, which begins at the first retained record.
   */
  private explicit = false;
  /**
   * Offset the next accepted delivery must have, set at every reposition: a later one means
   * deliveries were lost (a connection dropped with them on the wire, or records deleted)
   * and the reader repositions there. Null only while the reader is stopped or being
   * repositioned.
   */
  private next: bigint | null = null;
  /** A reposition to do before the next pull. */
  private want: bigint | null = null;
  /** Accepted deliveries not yet in the buffer (handed over at the end of each socket read). */
  private arrived: StreamRecord[] = [];
  /** Accepted deliveries from the first claim check whose object is not read yet on, in offset order (see fetchHeld). */
  private held: Held[] = [];
  /** A fetchHeld loop of the current epoch runs. */
  private fetching = false;
  /** The messages of the buffered records (their ack subjects), aligned with the buffer, and their stream sequences. */
  private acks: Msg[] = [];
  private seqs: number[] = [];
  private ackHead = 0;
  /** The message of the last record handed out and not acknowledged yet, and how many records it covers. */
  private unacked: Msg | null = null;
  private unackedCount = 0;
  /** The stream's creation time, as of the first reposition: another one means it was created again. */
  private created: string | undefined;
  /**
   * The member's count of lost connections as of the reader's last reposition or look at what
   * the server delivered: a higher count means deliveries may have been lost since.
   */
  private checkedDisconnects = 0;
  /** Where the durable consumer's deliveries arrive, as of the last reposition; null while stopped or moving. */
  private inbox: PullInbox | null = null;
  private loop: Promise<void> | null = null;

  constructor(
    private readonly host: ReaderHost,
    readonly partition: number,
    /** The partition's JetStream stream. */
    readonly stream: string,
  ) {}

  /** Positions the reader at `offset` before it starts; `explicit` as for the field of that name. */
  async positionAt(offset: bigint, explicit: boolean): Promise<void> {
    // A seek left over from an earlier lease (asked for while the partition was being
    // handed away) must not override where this lease starts.
    this.want = null;
    this.explicit = explicit;
    await this.reposition(offset);
  }

  /** Starts the pull loop of a positioned reader. */
  start(): void {
    this.active = true;
    this.loop = this.run();
  }

  /** Stops reading; nothing of the partition comes out of the buffer afterwards. */
  async stop(): Promise<void> {
    this.active = false;
    this.halt();
    this.host.wakeLoops();
    await this.loop;
    this.loop = null;
    this.dropBuffered();
  }

  /** Stops the running pull and every later delivery at once (the member closes, or the reader stops). */
  halt(): void {
    this.epoch++;
    this.dropHeld();
    this.closeInbox();
  }

  /** Forgets the held deliveries (their epoch is over: they are read again, or not at all). */
  private dropHeld(): void {
    this.held = [];
    this.fetching = false;
  }

  /** Where reading must resume for nothing accepted and not buffered to be lost: the first held delivery, else `next`. */
  private resumeAt(): bigint | null {
    return this.held.length > 0 ? (this.held[0] as Held).offset : this.next;
  }

  /** Resolves when the pull loop has ended. */
  async stopped(): Promise<void> {
    await this.loop;
  }

  /** Next records come from `offset`; nothing of the old position comes out of poll() from now on. */
  seek(offset: bigint): void {
    this.dropBuffered();
    this.closeInbox();
    this.want = offset;
    this.explicit = true;
  }

  /**
   * poll() handed out the records up to `offset`: their messages are acknowledged before the
   * next pull, or now once a pull's worth waits (AckPolicy.All covers the earlier ones with
   * the last).
   */
  handedOut(offset: bigint): void {
    const seq = Number(offset) + 1;
    while (this.ackHead < this.acks.length) {
      if ((this.seqs[this.ackHead] as number) > seq) break;
      this.unacked = this.acks[this.ackHead] as Msg;
      this.unackedCount++;
      this.ackHead++;
    }
    if (this.ackHead === this.acks.length) {
      this.acks = [];
      this.seqs = [];
      this.ackHead = 0;
    } else if (this.ackHead > 4096) {
      this.acks = this.acks.slice(this.ackHead);
      this.seqs = this.seqs.slice(this.ackHead);
      this.ackHead = 0;
    }
    if (this.unackedCount >= this.host.fetchBatch) this.ack();
  }

  /** Sends the pending acknowledgement, if any (`+ACK`, what nats.js's `JsMsg.ack()` sends). */
  private ack(): void {
    const msg = this.unacked;
    this.unacked = null;
    this.unackedCount = 0;
    if (msg?.reply) this.host.nc.publish(msg.reply, ACK);
  }

  private dropBuffered(): void {
    this.epoch++;
    this.host.buffer.clear(this.partition);
    this.arrived = [];
    this.dropHeld();
    this.acks = [];
    this.seqs = [];
    this.ackHead = 0;
    this.unacked = null;
    this.unackedCount = 0;
    this.next = null;
  }

  private closeInbox(): void {
    this.inbox?.close();
    this.inbox = null;
  }

  /**
   * (Re)creates the partition's durable consumer so that it delivers from `offset` on.
   * Keeps what is buffered: after a seek the buffer was already emptied, and after a failed
   * pull `offset` is the first record not buffered yet, so the buffer stays valid.
   */
  private async reposition(at: bigint): Promise<void> {
    // Deliveries accepted but not handed over yet are below `next`, where reading resumes:
    // they go to the buffer first (a seek has dropped them already).
    this.handOver(this.epoch);
    this.epoch++;
    if (this.held.length > 0) {
      // Read again from the first held one (`at` is no later, see resumeAt): their acks go.
      const firstSeq = (this.held[0] as Held).delivery.seq;
      while (this.seqs.length > this.ackHead && (this.seqs[this.seqs.length - 1] as number) >= firstSeq) {
        this.seqs.pop();
        this.acks.pop();
      }
      this.dropHeld();
    }
    const disconnects = this.host.disconnects;
    this.closeInbox(); // deliveries of the old consumer's pulls are ignored from now on
    this.next = null;
    const { jsm, durable } = this.host;
    // JetStream starts a consumer below the first retained record at that record: that would
    // skip what retention (max_age) deleted unread, so a position of the reader's own below
    // it is refused; a group's first start begins there.
    const info = await jsm.streams.info(this.stream);
    const first = BigInt(info.state.first_seq) - 1n;
    if (this.explicit && at < first) throw new RetentionGapError(`NATS stream ${this.stream}`, this.partition, at, first);
    // A stream deleted and created again (a topic reset, then a capture start) numbers its
    // records from 1 again: positions of the old one would skip the new one's first records
    // without a trace. Seen as a new creation time, or as a position past the stream's end
    // (which no reader of the same stream ever reaches).
    if (this.created !== undefined && info.created !== this.created) throw this.recreated(at, `it was created again at ${info.created}`);
    this.created = info.created;
    const end = BigInt(info.state.last_seq);
    if (at > end) throw this.recreated(at, `it ends at offset ${end}`);
    const offset = at < first ? first : at;
    this.position = offset;
    // Deleted and created again: another reader of the group (one that has not seen yet that
    // it lost the lease) or an operator may delete it right after; its pulls then go
    // unanswered or get a 409, and the reader comes back here.
    try {
      await jsm.consumers.delete(this.stream, durable);
    } catch (err) {
      if (apiErrorCode(err) !== JS_CONSUMER_NOT_FOUND) throw err;
    }
    await jsm.consumers.add(this.stream, {
      durable_name: durable,
      ack_policy: AckPolicy.All,
      deliver_policy: DeliverPolicy.StartSequence,
      opt_start_seq: Number(offset) + 1,
      ack_wait: nanos(ACK_WAIT_MS),
      max_deliver: -1,
      max_ack_pending: 4 * (this.host.perPartition + this.host.fetchBatch),
    });
    const epoch = this.epoch;
    this.inbox = new PullInbox(this.host.nc, this.stream, durable, {
      delivered: (d) => this.accept(d, epoch),
      readDone: () => this.handOver(epoch),
    });
    this.next = offset;
    this.checkedDisconnects = disconnects;
    // Closed meanwhile (a member closing while it positions its readers): no reader will close it.
    if (this.host.isClosed()) this.closeInbox();
  }

  private recreated(at: bigint, why: string): PrerequisiteError {
    return new PrerequisiteError(
      `NATS stream ${this.stream} (partition ${this.partition}) no longer holds the records group ${this.host.groupId} was reading: it was to read on from offset ${at}, but ${why}; it was deleted and created again (or restored from an older copy)`,
      `rebuild the target from the new stream: start \`syncline apply\` (or \`run\`) once with \`--from ${this.partition}:0\` and re-sync the target with \`syncline snapshot\``,
    );
  }

  /** The pull loop; its inbox goes with it (a reposition can outlast a halt). */
  private async run(): Promise<void> {
    try {
      await this.pullLoop();
    } finally {
      this.closeInbox();
    }
  }

  /** Repositions when asked, pulls while the partition's buffer has room. */
  private async pullLoop(): Promise<void> {
    const host = this.host;
    let failures = 0;
    while (!host.isClosed() && this.active) {
      /** The offset of the reposition under way: `next` is null meanwhile, and `position` may still be the previous one's. */
      let repositioning: bigint | null = null;
      try {
        if (this.want !== null) {
          const at = this.want;
          this.want = null;
          repositioning = at;
          await this.reposition(at);
          continue; // a seek during the reposition wins
        }
        const room = host.perPartition - host.buffer.count(this.partition) - this.arrived.length - this.held.length;
        if (room <= 0) {
          await host.waitForSpace(200);
          continue;
        }
        const epoch = this.epoch;
        const inbox = this.inbox;
        if (inbox === null) throw new SynclineError('STREAM_NOT_POSITIONED', `${this.stream} has no reader`, { retriable: true });
        this.ack();
        const asked = Math.min(room, host.fetchBatch);
        const pull = await inbox.pull(asked, PULL_EXPIRES_MS);
        // Ask the server when a short pull may have lost deliveries (the connection dropped
        // since the reader last looked, see `next`: at the stream's tail no later delivery
        // would show the gap), or got no answer at all (its consumer is gone: the lookup fails
        // and the reader repositions).
        const suspect = host.disconnects !== this.checkedDisconnects || (!pull.answered && pull.received === 0);
        if (pull.received < asked && suspect && this.want === null && epoch === this.epoch && !host.isClosed()) await this.checkDelivered(epoch);
        failures = 0;
      } catch (err) {
        if (host.isClosed()) break;
        const e = natsError(err, `${repositioning !== null ? 'positioning' : 'reading'} ${this.stream} as group ${host.groupId}`);
        // Creating the reader failed for good (the stream is gone, permissions...): give up.
        if (repositioning !== null && !e.retriable) {
          host.fail(e);
          return;
        }
        // A failed pull (consumer deleted, connection lost...): start over from where this
        // reader is. A failed reposition: try it again where it was to go (falling back to
        // `position`, the previous reposition's offset, would hand out again what was read
        // since, or skip what a seek backwards asked for).
        this.want ??= repositioning ?? this.resumeAt() ?? this.position;
        // retry: see core/retry
        await new Promise((r) => setTimeout(r, Math.min(100 * 2 ** failures, 2000)));
        failures++;
      }
    }
  }

  /** Repositions at `next` when the durable consumer delivered past it (deliveries lost on the way). */
  private async checkDelivered(epoch: number): Promise<void> {
    const disconnects = this.host.disconnects;
    const info = await this.host.jsm.consumers.info(this.stream, this.host.durable);
    if (epoch === this.epoch) this.checkedDisconnects = disconnects;
    const lastDelivered = BigInt(info.delivered.stream_seq) - 1n;
    if (epoch === this.epoch && this.want === null && this.next !== null && lastDelivered >= this.next) this.want = this.resumeAt();
  }

  /** Checks a delivery's sequence and keeps it for the buffer; a gap makes the reader reposition. */
  private accept(d: Delivery, epoch: number): void {
    const next = this.next;
    if (epoch !== this.epoch || next === null || this.want !== null || this.host.isClosed()) return;
    const offset = BigInt(d.seq) - 1n;
    if (offset < next) return; // a redelivery of what this reader already has
    if (offset > next) {
      // Lost deliveries (see `next`) or records deleted since: read again from the expected
      // offset (or the first held one); repositioning checks the retained range and refuses a gap.
      this.want = this.resumeAt();
      this.inbox?.interrupt();
      return;
    }
    this.next = offset + 1n;
    this.explicit = true; // from here on the reader has a position of its own
    this.acks.push(d.msg);
    this.seqs.push(d.seq);
    // An empty body: a claim check's record (no change record is empty), or another client's.
    const claim = d.value.length === 0 ? claimOf(d.msg) : undefined;
    if (claim === undefined && this.held.length === 0) {
      this.arrived.push(new DeliveredRecord(this.partition, offset, d.value, d.timestampMs, d.msg));
      return;
    }
    this.held.push({ offset, delivery: d, claim });
    if (!this.fetching) void this.fetchHeld(epoch);
  }

  /**
   * Moves the held deliveries to `arrived` in order, reading each claim check's object first
   * (one at a time: the records behind wait anyway), and hands them over. A read that may pass
   * is tried again; a missing object fails the member. Ends when nothing is held, or at the
   * end of its epoch.
   */
  private async fetchHeld(epoch: number): Promise<void> {
    this.fetching = true;
    let failures = 0;
    while (epoch === this.epoch && !this.host.isClosed() && this.held.length > 0) {
      const h = this.held[0] as Held;
      let value = h.delivery.value;
      if (h.claim !== undefined) {
        // What is before it need not wait for its object.
        this.handOver(epoch);
        try {
          value = await this.readObject(h.claim);
          failures = 0;
        } catch (err) {
          if (epoch !== this.epoch || this.host.isClosed()) return;
          const e = natsError(err, `reading the object of ${this.stream} offset ${h.offset}`);
          if (!e.retriable) {
            this.host.fail(e);
            return;
          }
          // retry: see core/retry
          await new Promise((r) => setTimeout(r, Math.min(100 * 2 ** failures, 2000)));
          failures++;
          continue;
        }
        if (epoch !== this.epoch) return;
      }
      this.held.shift();
      this.arrived.push(new DeliveredRecord(this.partition, h.offset, value, h.delivery.timestampMs, h.delivery.msg));
    }
    if (epoch !== this.epoch) return;
    this.handOver(epoch);
    this.fetching = false;
  }

  private readObject(claim: Claim): Promise<Buffer> {
    const objects = this.host.objects;
    if (objects === undefined) {
      return Promise.reject(new PrerequisiteError(`NATS: ${this.stream} holds a record whose value is object ${claim.name} of bucket ${claim.bucket}, and this reader has no object store`, 'read the stream with syncline\'s NATS stream'));
    }
    return objects.get(claim);
  }

  /** Hands the accepted deliveries to the buffer (everything below `next` is then buffered or polled). */
  private handOver(epoch: number): void {
    if (this.arrived.length === 0) return;
    if (epoch === this.epoch && !this.host.isClosed()) this.host.buffer.push(this.partition, this.arrived);
    this.arrived = [];
  }
}
