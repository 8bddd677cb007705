/**
 * Which records of a publish() call the server answers. JetStream answers every message
 * published with a reply subject with its own PubAck; making and routing those answers costs
 * nats-server ~2.3–3.3 µs of CPU per record (measured: 8.5 → 5.2–6.25 µs per record stored
 * with Nats-Msg-Id) and the producer the reading of each, while capture on NATS is bound by
 * the CPU of the server and capture together. So once the producer knows the Nats-Msg-Id of
 * a partition stream's last message (it published that message itself and the server
 * answered that it stored it), it chains that partition's records: each carries
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
 * A partition whose last Msg-Id is not known (the first records after a start or a reconnect,
 * a record without an id) gets an answer per record, as before; its last Msg-Id becomes known
 * when every answered record sent to it was answered and the last answer stored a new message
 * (a duplicate's answer names an older message, not the stream's last).
 */
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

/** The reply subject of an answered record: `<reply>.<partition>`, see answeredPartition. */
export function answeredReply(reply: string, partition: number): string {
  return `${reply}.${partition}`;
}

export class PublishChains {
  /** The Msg-Id of each partition stream's last message, when this producer knows it. */
  private readonly lastId: (string | undefined)[];
  /** Answered records sent to each partition and not answered yet. */
  private readonly unanswered: number[];
  /** The Msg-Id of the last answered record sent to each partition. */
  private readonly lastAnsweredId: (string | undefined)[];

  constructor(partitions: number) {
    this.lastId = new Array<string | undefined>(partitions).fill(undefined);
    this.unanswered = new Array<number>(partitions).fill(0);
    this.lastAnsweredId = new Array<string | undefined>(partitions).fill(undefined);
  }

  /**
   * The plan of one call: `partitions[i]`, `subjects[i]` and `msgIds[i]` are record i's; the
   * chained records' replies are `reply`, the answered ones' `answeredReply(reply, p)`.
   */
  plan(partitions: readonly number[], subjects: string[], msgIds: (string | undefined)[], reply: string): PublishPlan {
    const n = partitions.length;
    const replies = new Array<string | undefined>(n);
    const expected = new Array<string | undefined>(n);
    // Per partition of the call: the index of its last record, -1 once it cannot be chained.
    const last = new Map<number, number>();
    for (let i = 0; i < n; i++) {
      const p = partitions[i] as number;
      const chainable = this.lastId[p] !== undefined && msgIds[i] !== undefined && last.get(p) !== -1;
      last.set(p, chainable ? i : -1);
    }
    const previous = new Map<number, string | undefined>();
    let answers = 0;
    for (let i = 0; i < n; i++) {
      const p = partitions[i] as number;
      if (last.get(p) === -1) {
        replies[i] = answeredReply(reply, p);
        this.unanswered[p] = (this.unanswered[p] as number) + 1;
        this.lastAnsweredId[p] = msgIds[i];
        // Unknown from here until its answers are in: a later call answers each record too.
        this.lastId[p] = undefined;
        answers++;
        continue;
      }
      expected[i] = previous.has(p) ? previous.get(p) : this.lastId[p];
      previous.set(p, msgIds[i]);
      if (last.get(p) === i) {
        replies[i] = reply;
        answers++;
      }
    }
    // The chained partitions' last Msg-Id once this call is stored; a refusal fails the
    // producer, so nothing is planned on a wrong one.
    for (const [p, id] of previous) this.lastId[p] = id;
    return { subjects, replies, msgIds, expected, answers };
  }

  /** An answered record of partition `p` was answered; `stored`: as a new message, not a duplicate. */
  answered(p: number, stored: boolean): void {
    const left = (this.unanswered[p] as number) - 1;
    this.unanswered[p] = Math.max(0, left);
    // Answers of one partition come in publish order: this one is its last sent record's.
    if (left === 0 && stored) this.lastId[p] = this.lastAnsweredId[p];
  }

  /** After a reconnect: the server may have lost or moved on from what was known. */
  forget(): void {
    this.lastId.fill(undefined);
  }
}
