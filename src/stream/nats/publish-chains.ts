/**
 * Which records of a publish() call the server answers. JetStream answers every message
 * published with a reply subject with its own PubAck; making and routing those answers costs
 * nats-server ~2.3–3.3 µs of CPU per record (measured: 8.5 → 5.2–6.25 µs per record stored
 * with Nats-Msg-Id) and the producer the reading of each, while capture on NATS is bound by
 * the CPU of the server and capture together. So the producer chains a partition's records
 * (from when, see below): each carries
 * `Nats-Expected-Last-Msg-Id` = the Msg-Id of the record before it, and only the partition's
 * last record of the call has a reply subject. The server stores a record only when the
 * stream's last message is exactly its predecessor, so a record it refuses without an answer
 * (a limit, no stream leader, another publisher's message in between) makes it refuse every
 * later record of that partition too, up to the answered one, whose refusal (JetStream error
 * 10070, wrong last msg ID) fails the call: nothing is ever stored after a record that was
 * not, and what was stored is a gap-free run, as with an answer per record. Expected-Last-Msg-
 * Id rather than Expected-Last-Sequence: a sequence number can line up again by chance after
 * another publisher's message; a Msg-Id is the record's own identity (commit LSN, sequence,
 * key). A duplicate is dropped before that check, so a chained record found already stored
 * (another capture publishing the same changes) breaks the chain as well, and the answered
 * one reports a duplicate: the producer fails the call then too.
 *
 * A partition gets an answer per record, as before, until an answer says that one of its
 * records was stored as a new message: until then capture may be republishing what the
 * stream holds (after a restart), and those duplicates would break a chain. From then on what
 * capture publishes to it is new, so its records are chained from the last one sent to it,
 * answered or not (calls are pipelined: waiting for every answer first would never chain): if
 * that one is not stored, its own refusal or the chain's fails the producer. After a
 * reconnect, or a record without an id (no Msg-Id to expect), the partition starts over with
 * answers. A topic that another publisher writes to as well (several captures fanning in, a
 * capture taking over from one still running) would break chains again and again, each break
 * a capture restart: after the first, the stream's producers answer every record for the
 * rest of the process (ChainSwitch, shared by the producers of one stream).
 */

/** Shared by the producers of one stream: set when a chain broke. */
export interface ChainSwitch {
  broken: boolean;
}

export interface PublishPlan {
  /** The subject of each record. */
  subjects: string[];
  /** Each record's reply subject; undefined: stored without an answer (a chained record). */
  replies: (string | undefined)[];
  /** Each record's `Nats-Msg-Id` value (see natsMsgIdOf), undefined without an id. */
  msgIds: (string | undefined)[];
  /** Each record's `Nats-Expected-Last-Msg-Id` value; undefined outside a chain. */
  expected: (string | undefined)[];
  /** How many answers the call waits for. */
  answers: number;
}

/** The reply subject of an answered record: `<reply>.<partition>`. */
function answeredReply(reply: string, partition: number): string {
  return `${reply}.${partition}`;
}

export class PublishChains {
  /** The Msg-Id of the last record sent to each partition; undefined after a reconnect or a record without one. */
  private readonly sentId: (string | undefined)[];
  /** Whether an answer said a record of the partition was stored as a new message. */
  private readonly storedNew: boolean[];

  constructor(
    partitions: number,
    private readonly chainSwitch: ChainSwitch,
  ) {
    this.sentId = new Array<string | undefined>(partitions).fill(undefined);
    this.storedNew = new Array<boolean>(partitions).fill(false);
  }

  /**
   * The plan of one call: `partitions[i]`, `subjects[i]` and `msgIds[i]` are record i's; a
   * chain's last record is answered on `reply`, the others not; a record outside a chain on
   * `answeredReply(reply, p)`. `fitsChained(i, expected)`: whether record i is still under
   * the server's max_payload with `Nats-Expected-Last-Msg-Id: expected`; one that is not
   * leaves its partition unchained in this call, as a record without an id does (refusing
   * it would fail a publish that answers per record stores).
   */
  plan(partitions: readonly number[], subjects: string[], msgIds: (string | undefined)[], reply: string, fitsChained: (i: number, expected: string) => boolean = () => true): PublishPlan {
    const n = partitions.length;
    const replies = new Array<string | undefined>(n);
    const expected = new Array<string | undefined>(n);
    // Per partition of the call: the index of its last record, or -1 when it is not chained.
    const last = new Map<number, number>();
    for (let i = 0; i < n; i++) {
      const p = partitions[i] as number;
      const before = last.get(p);
      if (before === -1) continue;
      // The record this one would expect: the partition's previous one in this call, or the last one sent to it.
      const predecessor = before === undefined ? this.sentId[p] : msgIds[before];
      const chainable = !this.chainSwitch.broken && this.storedNew[p] === true && predecessor !== undefined && msgIds[i] !== undefined && fitsChained(i, predecessor);
      last.set(p, chainable ? i : -1);
    }
    let answers = 0;
    for (let i = 0; i < n; i++) {
      const p = partitions[i] as number;
      const end = last.get(p) as number;
      if (end === -1) {
        replies[i] = answeredReply(reply, p);
        answers++;
      } else {
        expected[i] = this.sentId[p];
        if (end === i) {
          replies[i] = reply;
          answers++;
        }
      }
      this.sentId[p] = msgIds[i];
    }
    return { subjects, replies, msgIds, expected, answers };
  }

  /** An answered record of partition `p` was answered; `storedNew`: stored as a new message (not a duplicate, not refused). */
  answered(p: number, storedNew: boolean): void {
    if (storedNew) this.storedNew[p] = true;
  }

  /** After a reconnect: the server may have lost or moved on from what was sent. */
  forget(): void {
    this.sentId.fill(undefined);
    this.storedNew.fill(false);
  }
}
