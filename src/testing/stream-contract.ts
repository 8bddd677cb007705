/**
 * The contract every Stream implementation passes (embedded, Kafka, NATS JetStream).
 * Each test uses its own topic (random suffix), so runs and brokers do not collide.
 */
import { randomBytes } from 'node:crypto';
import { afterEach, describe, expect, it } from 'vitest';
import { partitionFor } from '../core/change.js';
import type { OutgoingRecord, Stream, StreamConsumer, StreamRecord } from '../stream/stream.js';

export type OpenStream = (opts: { partitions: number; topic: string }) => Promise<Stream>;

const PARTITIONS = 3;

function uniqueTopic(name: string): string {
  return `syncline-contract-${name}-${randomBytes(4).toString('hex')}`;
}

function rec(key: string, value: string, id?: string): OutgoingRecord {
  return id === undefined ? { key, value: Buffer.from(value) } : { key, value: Buffer.from(value), id };
}

/** `count` records over `keys` keys; value = `${prefix}:${i}` with a global sequence i. */
function records(count: number, keys: number, prefix = 'v', from = 0): OutgoingRecord[] {
  return Array.from({ length: count }, (_, j) => {
    const i = from + j;
    // A unique id per record, as capture's `${commit_lsn}:${seq}`: brokers that deduplicate by id must store each.
    return rec(`public.t:["k${i % keys}"]`, `${prefix}:${i}`, `${prefix}/${i.toString(16)}:1`);
  });
}

const seqOf = (r: StreamRecord): number => Number(r.value.toString().split(':')[1]);

/** Polls until `count` records arrived (fails after `timeoutMs`), then checks nothing more comes. */
async function drain(consumer: StreamConsumer, count: number, timeoutMs = 20_000, settleMs = 300): Promise<StreamRecord[]> {
  const out: StreamRecord[] = [];
  const deadline = Date.now() + timeoutMs;
  // Never asks for more than `count`: callers rely on reading exactly that many.
  while (out.length < count && Date.now() < deadline) out.push(...(await consumer.poll(Math.min(500, count - out.length), 100)));
  if (out.length < count) throw new Error(`expected ${count} records, got ${out.length} within ${timeoutMs} ms`);
  if (settleMs > 0) out.push(...(await consumer.poll(500, settleMs)));
  return out;
}

function positionsAfter(rs: readonly StreamRecord[]): Map<number, bigint> {
  const pos = new Map<number, bigint>();
  for (const r of rs) if ((pos.get(r.partition) ?? -1n) < r.offset + 1n) pos.set(r.partition, r.offset + 1n);
  return pos;
}

function byPartition(rs: readonly StreamRecord[]): Map<number, StreamRecord[]> {
  const m = new Map<number, StreamRecord[]>();
  for (const r of rs) {
    const list = m.get(r.partition) ?? [];
    list.push(r);
    m.set(r.partition, list);
  }
  return m;
}

/** Every partition's records are contiguous offsets from `from` (default 0). */
function expectContiguous(rs: readonly StreamRecord[], from: ReadonlyMap<number, bigint> = new Map()): void {
  for (const [p, list] of byPartition(rs)) {
    const start = from.get(p) ?? 0n;
    expect(list.map((r) => r.offset)).toEqual(list.map((_, i) => start + BigInt(i)));
  }
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export function describeStreamContract(name: string, open: OpenStream): void {
  describe(`Stream contract: ${name}`, () => {
    const opened: Stream[] = [];
    const openNew = async (partitions = PARTITIONS): Promise<Stream> => {
      const s = await open({ partitions, topic: uniqueTopic(name) });
      opened.push(s);
      return s;
    };

    afterEach(async () => {
      const all = opened.splice(0);
      await Promise.all(all.map((s) => s.close()));
    });

    it('stores what publish acknowledged and a consumer reads all of it, offsets from 0', async () => {
      const stream = await openNew();
      expect(stream.partitions).toBe(PARTITIONS);
      const producer = await stream.producer();
      const sent = records(150, 20);
      await producer.publish(sent.slice(0, 50));
      await producer.publish(sent.slice(50, 100));
      await producer.publish(sent.slice(100));
      const consumer = await stream.consumer('g1');
      expect([...consumer.assignment()].sort()).toEqual([0, 1, 2]);
      const got = await drain(consumer, sent.length);
      expect(got).toHaveLength(sent.length);
      expect(got.map((r) => `${r.key}=${r.value.toString()}`).sort()).toEqual(sent.map((r) => `${r.key}=${r.value.toString()}`).sort());
      expectContiguous(got);
      for (const r of got) expect(typeof r.timestamp).toBe('number');
      await producer.close();
    });

    it('keeps the order of each key and puts a key in partition partitionFor(key, partitions)', async () => {
      const stream = await openNew();
      const producer = await stream.producer();
      for (let b = 0; b < 5; b++) await producer.publish(records(40, 7, 'v', b * 40));
      const consumer = await stream.consumer('g1');
      const got = await drain(consumer, 200);
      const lastSeq = new Map<string, number>();
      for (const [, list] of byPartition(got)) {
        for (const r of list) {
          expect(r.partition).toBe(partitionFor(r.key, PARTITIONS));
          const s = seqOf(r);
          expect(s).toBeGreaterThan(lastSeq.get(r.key) ?? -1);
          lastSeq.set(r.key, s);
        }
      }
      expect(lastSeq.size).toBe(7);
    });

    it('stores several concurrent publishes in call order', async () => {
      const stream = await openNew();
      const producer = await stream.producer();
      const calls = Array.from({ length: 20 }, (_, c) => records(25, 5, 'v', c * 25));
      await Promise.all(calls.map((batch) => producer.publish(batch)));
      const consumer = await stream.consumer('g1');
      const got = await drain(consumer, 500);
      // In every partition the global sequence grows with the offset: call order kept.
      for (const [, list] of byPartition(got)) {
        const sorted = [...list].sort((a, b) => (a.offset < b.offset ? -1 : 1));
        const seqs = sorted.map(seqOf);
        expect(seqs).toEqual([...seqs].sort((a, b) => a - b));
      }
    });

    it('endOffsets gives the next offset of every partition', async () => {
      const stream = await openNew();
      expect(await stream.endOffsets()).toEqual(new Map([[0, 0n], [1, 0n], [2, 0n]]));
      const producer = await stream.producer();
      const sent = records(60, 11);
      await producer.publish(sent);
      const expected = new Map<number, bigint>([[0, 0n], [1, 0n], [2, 0n]]);
      for (const r of sent) {
        const p = partitionFor(r.key, PARTITIONS);
        expected.set(p, (expected.get(p) ?? 0n) + 1n);
      }
      expect(await stream.endOffsets()).toEqual(expected);
    });

    it('a group resumes at its committed positions; another group starts from the beginning', async () => {
      const stream = await openNew();
      const producer = await stream.producer();
      const sent = records(90, 13);
      await producer.publish(sent);

      const a = await stream.consumer('group-a');
      expect(await a.committed()).toEqual(new Map());
      const first = await drain(a, 30, 20_000, 0);
      const committed = positionsAfter(first);
      await a.commit(committed);
      expect(await a.committed()).toEqual(committed);
      await a.close();
      // Where a stream reads a group's commits from outside the group (syncline status), they are the same.
      if (stream.committedOffsets) {
        expect(await stream.committedOffsets('group-a')).toEqual(committed);
        expect(await stream.committedOffsets('group-none')).toEqual(new Map());
      }

      const b = await stream.consumer('group-a');
      expect(await b.committed()).toEqual(committed);
      const rest = await drain(b, sent.length - first.length);
      expect(rest).toHaveLength(sent.length - first.length);
      expectContiguous(rest, committed);
      const seen = new Set([...first, ...rest].map((r) => r.value.toString()));
      expect(seen.size).toBe(sent.length);
      await b.close();

      const other = await stream.consumer('group-b');
      expect(await other.committed()).toEqual(new Map());
      const all = await drain(other, sent.length);
      expect(all).toHaveLength(sent.length);
      expectContiguous(all);
    });

    it('startPositions override the committed positions; partitions it leaves out use them', async () => {
      const stream = await openNew();
      const producer = await stream.producer();
      const sent = records(60, 9);
      await producer.publish(sent);
      const ends = await stream.endOffsets();

      const a = await stream.consumer('g');
      await drain(a, sent.length);
      await a.commit(ends);
      await a.close();

      const asked: number[][] = [];
      const b = await stream.consumer('g', {
        startPositions: async (partitions) => {
          asked.push([...partitions].sort());
          return new Map([[1, 1n]]);
        },
      });
      expect(asked).toEqual([[0, 1, 2]]);
      const want = Number((ends.get(1) ?? 0n) - 1n);
      const got = await drain(b, want);
      expect(got.every((r) => r.partition === 1)).toBe(true);
      expect(got.map((r) => r.offset)).toEqual(Array.from({ length: want }, (_, i) => BigInt(i + 1)));
      // The override moved the reader, not the group's stored positions.
      expect(await b.committed()).toEqual(ends);
    });

    it('redelivers what a closed consumer read but did not commit', async () => {
      const stream = await openNew();
      const producer = await stream.producer();
      const sent = records(40, 6);
      await producer.publish(sent);
      const a = await stream.consumer('g');
      const part = await drain(a, 10, 20_000, 0);
      const committed = positionsAfter(part);
      await a.commit(committed);
      await drain(a, sent.length - part.length); // read the rest, never committed
      await a.close(); // as after a crash: the uncommitted records must come again

      const b = await stream.consumer('g');
      const again = await drain(b, sent.length - part.length);
      expect(again).toHaveLength(sent.length - part.length);
      expectContiguous(again, committed);
    });

    it('replays from an offset (seek), also after reading past it', async () => {
      const stream = await openNew();
      const producer = await stream.producer();
      const sent = records(45, 10);
      await producer.publish(sent);
      const ends = await stream.endOffsets();
      const c = await stream.consumer('g');
      const all = await drain(c, sent.length);
      const p = [...ends.entries()].find(([, end]) => end >= 3n)?.[0] ?? 0;
      c.seek(p, 2n);
      const replay = await drain(c, Number((ends.get(p) ?? 0n) - 2n));
      expect(replay.every((r) => r.partition === p)).toBe(true);
      expect(replay.map((r) => r.value.toString())).toEqual(
        all.filter((r) => r.partition === p && r.offset >= 2n).sort((x, y) => (x.offset < y.offset ? -1 : 1)).map((r) => r.value.toString()),
      );
      // New records after a replay continue right after it.
      await producer.publish(records(6, 10, 'w'));
      const more = await drain(c, 6);
      expect(more.map((r) => r.value.toString().split(':')[0])).toEqual(Array(6).fill('w'));
    });

    it('seek and commit take only partitions of the assignment and offsets >= 0, and a refused one changes nothing', async () => {
      const stream = await openNew();
      const producer = await stream.producer();
      const sent = records(30, 7);
      await producer.publish(sent);
      const c = await stream.consumer('g');
      const codeOf = (f: () => void): unknown => {
        try {
          f();
        } catch (err) {
          return (err as { code?: unknown }).code;
        }
        return undefined;
      };
      const outside = [-1, 1.5, PARTITIONS, ...Array.from({ length: PARTITIONS }, (_, p) => p).filter((p) => !c.assignment().includes(p))];
      for (const p of outside) expect(codeOf(() => c.seek(p, 0n))).toBe('STREAM_SEEK_INVALID');
      expect(codeOf(() => c.seek(c.assignment()[0] ?? 0, -1n))).toBe('STREAM_SEEK_INVALID');
      await expect(c.commit(new Map([[PARTITIONS, 1n]]))).rejects.toMatchObject({ code: 'STREAM_COMMIT_INVALID' });
      await expect(c.commit(new Map([[0, -1n]]))).rejects.toMatchObject({ code: 'STREAM_COMMIT_INVALID' });
      const got = await drain(c, sent.length);
      expectContiguous(got);
      expect(await c.committed()).toEqual(new Map());
    });

    it('replays from a time (offsetsForTime)', async () => {
      const stream = await openNew();
      const producer = await stream.producer();
      await producer.publish(records(30, 8, 'old'));
      await sleep(40);
      const t = Date.now();
      await sleep(40);
      await producer.publish(records(30, 8, 'new'));
      const ends = await stream.endOffsets();

      expect(await stream.offsetsForTime(0)).toEqual(new Map([[0, 0n], [1, 0n], [2, 0n]]));
      expect(await stream.offsetsForTime(Date.now() + 60_000)).toEqual(ends);
      const at = await stream.offsetsForTime(t);
      const c = await stream.consumer('g');
      await drain(c, 60);
      for (const [p, o] of at) c.seek(p, o);
      const replay = await drain(c, 30);
      expect(replay.map((r) => r.value.toString().split(':')[0])).toEqual(Array(30).fill('new'));
      for (const r of replay) expect(r.timestamp).toBeGreaterThanOrEqual(t);
    });
  });
}
