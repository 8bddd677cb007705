import { randomBytes } from 'node:crypto';
import { changeIdOf, rowKeyOf, tableLabelOf } from '../core/change.js';
import { errorMessage, SynclineError } from '../core/errors.js';
import { parseLsn } from '../core/lsn.js';
import { firstPresent, tableArgLabels } from '../core/table-arg.js';
import type { Stream, StreamConsumer, StreamProducer } from '../stream/stream.js';
import { FOLLOWER_CODES, keepFirstError, type DeadLetter, type DeadLetterEntry, type DeadLetterFilter, type DeadLetterQueue } from './dead-letter-queue.js';

/** The JSON value of one entry on the dead-letter topic (what other Kafka clients read). */
interface TopicEntry {
  id: string;
  source: string;
  table: string;
  row_key: string;
  op: string | null;
  commit_lsn: string | null;
  seq: number | null;
  error_code: string;
  error: string;
  attempts: number;
  first_failed_at: string;
  last_failed_at: string;
  stream_partition: number;
  stream_offset: string;
  change: DeadLetterEntry['change'] | null;
  raw: string | null;
}

/** Oldest change first, as the table orders them: undecodable records, then by commit LSN and seq. */
function byChange(a: TopicEntry, b: TopicEntry): number {
  return compareLsn(a.commit_lsn, b.commit_lsn) || (a.seq ?? 0) - (b.seq ?? 0) || a.id.localeCompare(b.id);
}

/** How long a catch-up waits for records it knows exist before it settles for what it has. */
const CATCH_UP_IDLE_MS = 2000;

/**
 * The dead-letter queue as a topic of the stream (`dead_letter.topic`), like Kafka Connect's
 * `errors.deadletterqueue.topic.name`: other tools can consume it with any client, and it
 * needs no database next to the broker, whatever the sink.
 *
 * The topic is a keyed changelog, compacted on Kafka: the key is the entry id, the value the
 * entry as JSON (the shape of `TopicEntry`); a later record with the same key replaces it
 * (another failed attempt), an empty value removes it (replayed or purged). The queue is
 * the fold of the topic: each handle tails it with a private consumer that never commits,
 * and catches up to the topic's end before answering, so it sees what other processes
 * (apply workers, `syncline dlq`, the dashboard) wrote. Entries live in memory, which is
 * fine for a queue that a person is meant to empty.
 *
 * Entry ids name the change, `<source>:<commit_lsn>:<seq>` (an undecodable record: its stream position
 * `<partition>-<offset>`): adding the same change again — a crash between dead-lettering and
 * committing the stream position, or a capture restart that republished it at another
 * offset — lands on the same entry, as with the table's unique index.
 */
export class TopicDeadLetterQueue implements DeadLetterQueue {
  private readonly entries = new Map<string, TopicEntry>();
  private stream: Stream | undefined;
  private producer: StreamProducer | undefined;
  private consumer: StreamConsumer | undefined;
  /** Next offset to read, per partition. */
  private readonly read = new Map<number, bigint>();
  private catchingUp: Promise<void> | undefined;

  constructor(
    private readonly openTopic: () => Promise<Stream>,
    private readonly topic: string,
    /**
     * This pipeline's source name: the topic may hold other pipelines' queues too (the default
     * `db-changes.dlq` whatever the stream topic), so, as the table store, this queue holds rows
     * behind, lists, counts, replays and removes only its own entries (and those without a
     * source, written before this scoping).
     */
    private readonly source: string,
  ) {}

  /** The entries of this pipeline (see `source`). */
  private mine(): TopicEntry[] {
    return [...this.entries.values()].filter((e) => e.source === this.source || e.source === '');
  }

  async prepare(): Promise<void> {
    if (this.stream) return;
    try {
      this.stream = await this.openTopic();
      this.producer = await this.stream.producer();
      // A group of its own that never commits: every handle reads the whole topic.
      this.consumer = await this.stream.consumer(`syncline-dlq-reader-${randomBytes(6).toString('hex')}`, { startPositions: async () => new Map() });
    } catch (err) {
      await this.close();
      throw wrap(err, `opening the dead-letter topic ${this.topic}`);
    }
    await this.catchUp();
  }

  async add(letters: readonly DeadLetter[]): Promise<void> {
    if (letters.length === 0) return;
    await this.catchUp();
    const now = new Date().toISOString();
    const written = letters.map((l) => {
      const c = l.change;
      const id = c ? changeIdOf(c) : `${l.partition}-${l.offset}`;
      const before = this.entries.get(id);
      const entry: TopicEntry = {
        id,
        source: c?.source ?? this.source,
        table: c ? tableLabelOf(c) : '',
        row_key: c ? rowKeyOf(c) : '',
        op: c?.op ?? null,
        commit_lsn: c?.commit_lsn ?? null,
        seq: c?.seq ?? null,
        error_code: before && keepFirstError(before.error_code, l.errorCode) ? before.error_code : l.errorCode,
        error: before && keepFirstError(before.error_code, l.errorCode) ? before.error : l.error,
        attempts: (before?.attempts ?? 0) + l.attempts,
        first_failed_at: before?.first_failed_at ?? now,
        last_failed_at: now,
        stream_partition: before?.stream_partition ?? l.partition,
        stream_offset: before?.stream_offset ?? l.offset.toString(),
        change: c ?? null,
        raw: l.raw ?? null,
      };
      return entry;
    });
    await this.publish(written.map((e) => ({ key: e.id, value: Buffer.from(JSON.stringify(e)) })));
    for (const e of written) this.entries.set(e.id, e);
  }

  async list(filter: DeadLetterFilter): Promise<DeadLetterEntry[]> {
    await this.catchUp();
    const ids = filter.ids && filter.ids.length > 0 ? new Set(filter.ids) : undefined;
    const mine = this.mine();
    // The first reading of the name (as printed, or as SQL: see parseTableArg) the queue has entries of.
    const table = filter.table ? (firstPresent(tableArgLabels(filter.table), new Set(mine.map((e) => e.table))) ?? null) : undefined;
    const error = filter.error?.toLowerCase();
    const cutoff = filter.olderThanMs === undefined ? undefined : Date.now() - filter.olderThanMs;
    const out = mine.filter(
      (e) =>
        (!ids || ids.has(e.id)) &&
        (table === undefined || e.table === table) &&
        (filter.label === undefined || e.table === filter.label) &&
        (!error || e.error.toLowerCase().includes(error) || e.error_code.toLowerCase().includes(error)) &&
        (cutoff === undefined || Date.parse(e.first_failed_at) < cutoff),
    );
    // Oldest change first, as the table orders them: undecodable records, then by commit LSN and seq.
    out.sort(byChange);
    return out.slice(0, filter.limit ?? 1000).map(toEntry);
  }

  async remove(ids: readonly string[]): Promise<number> {
    await this.catchUp();
    const own = new Set(this.mine().map((e) => e.id));
    const present = [...new Set(ids)].filter((id) => own.has(id));
    if (present.length === 0) return 0;
    await this.publish(present.map((id) => ({ key: id, value: Buffer.alloc(0) })));
    for (const id of present) this.entries.delete(id);
    return present.length;
  }

  async recordFailure(id: string, error: string, errorCode?: string): Promise<void> {
    await this.catchUp();
    const e = this.entries.get(id);
    if (!e || (e.source !== this.source && e.source !== '')) return;
    const updated: TopicEntry = { ...e, attempts: e.attempts + 1, error, error_code: errorCode ?? e.error_code, last_failed_at: new Date().toISOString() };
    await this.publish([{ key: id, value: Buffer.from(JSON.stringify(updated)) }]);
    this.entries.set(id, updated);
  }

  async orphans(limit: number): Promise<DeadLetterEntry[]> {
    await this.catchUp();
    const rows = this.mine().filter((e) => e.commit_lsn !== null && e.source === this.source);
    rows.sort(byChange);
    // A row's head is its oldest entry (by change identity, as replay orders them).
    const heads = new Map<string, string>();
    for (const e of rows) if (!heads.has(`${e.table}\u0000${e.row_key}`)) heads.set(`${e.table}\u0000${e.row_key}`, e.error_code);
    return rows.filter((e) => FOLLOWER_CODES.includes(heads.get(`${e.table}\u0000${e.row_key}`) ?? '')).slice(0, limit).map(toEntry);
  }

  async depth(): Promise<{ count: number; oldestAgeSeconds: number }> {
    await this.catchUp();
    const mine = this.mine();
    let oldest = Infinity;
    for (const e of mine) oldest = Math.min(oldest, Date.parse(e.first_failed_at));
    return { count: mine.length, oldestAgeSeconds: mine.length === 0 ? 0 : Math.max(0, (Date.now() - oldest) / 1000) };
  }

  async blockedRows(): Promise<Set<string>> {
    await this.catchUp();
    const rows = new Set<string>();
    for (const e of this.entries.values()) if (e.commit_lsn !== null && e.source === this.source) rows.add(`${e.table}\u0000${e.row_key}`);
    return rows;
  }

  async close(): Promise<void> {
    const stream = this.stream;
    this.stream = undefined;
    await this.consumer?.close().catch(() => undefined);
    await this.producer?.close().catch(() => undefined);
    await stream?.close().catch(() => undefined);
    this.consumer = undefined;
    this.producer = undefined;
  }

  private async publish(records: { key: string; value: Buffer }[]): Promise<void> {
    if (!this.producer) throw notPrepared();
    try {
      await this.producer.publish(records);
    } catch (err) {
      throw wrap(err, `writing the dead-letter topic ${this.topic}`);
    }
  }

  /** Reads the topic up to its current end (one catch-up at a time; callers share it). */
  private catchUp(): Promise<void> {
    this.catchingUp ??= this.readToEnd().finally(() => {
      this.catchingUp = undefined;
    });
    return this.catchingUp;
  }

  private async readToEnd(): Promise<void> {
    const stream = this.stream;
    const consumer = this.consumer;
    if (!stream || !consumer) throw notPrepared();
    try {
      const ends = await stream.endOffsets();
      const behind = (): boolean => [...ends].some(([p, end]) => (this.read.get(p) ?? 0n) < end);
      let idleSince = Date.now();
      while (behind()) {
        const records = await consumer.poll(10_000, 200);
        for (const r of records) {
          this.read.set(r.partition, r.offset + 1n);
          if (r.value.length === 0) {
            this.entries.delete(r.key);
            continue;
          }
          try {
            this.entries.set(r.key, JSON.parse(r.value.toString('utf8')) as TopicEntry);
          } catch {
            // Not written by syncline: not an entry, and it must not hide the ones after it.
          }
        }
        if (records.length > 0) idleSince = Date.now();
        // Compaction can remove the records just below the end: settle for what was read.
        else if (Date.now() - idleSince > CATCH_UP_IDLE_MS) break;
      }
    } catch (err) {
      throw wrap(err, `reading the dead-letter topic ${this.topic}`);
    }
  }
}

function toEntry(e: TopicEntry): DeadLetterEntry {
  return {
    id: e.id,
    table: e.table,
    rowKey: e.row_key,
    commitLsn: e.commit_lsn,
    change: e.change ?? undefined,
    ...(e.raw !== null ? { raw: e.raw } : {}),
    error: e.error,
    errorCode: e.error_code,
    attempts: e.attempts,
    firstFailedAt: new Date(e.first_failed_at),
    lastFailedAt: new Date(e.last_failed_at),
    partition: e.stream_partition,
    offset: BigInt(e.stream_offset),
  };
}

/** Orders LSN texts numerically; null (undecodable records) first. */
function compareLsn(a: string | null, b: string | null): number {
  if (a === b) return 0;
  if (a === null) return -1;
  if (b === null) return 1;
  const x = parseLsn(a);
  const y = parseLsn(b);
  return x < y ? -1 : x > y ? 1 : 0;
}

function notPrepared(): SynclineError {
  return new SynclineError('DLQ_FAILED', 'dead-letter topic: prepare() was not called', { retriable: false });
}

function wrap(err: unknown, doing: string): SynclineError {
  if (err instanceof SynclineError) return new SynclineError('DLQ_FAILED', `dead-letter queue: ${doing}: ${err.message}`, { retriable: err.retriable, cause: err });
  return new SynclineError('DLQ_FAILED', `dead-letter queue: ${doing}: ${errorMessage(err)}`, { retriable: true, cause: err });
}
