import { mkdir, mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { PrerequisiteError } from '../../src/core/errors.js';
import { Metrics } from '../../src/metrics/metrics.js';
import { openEmbeddedStream, type EmbeddedStreamOptions } from '../../src/stream/embedded/embedded-stream.js';
import { PartitionLog } from '../../src/stream/embedded/partition-log.js';
import { RetentionGapError, type Stream, type StreamConsumer, type StreamRecord } from '../../src/stream/stream.js';

/**
 * F7: records retention deleted before a consumer read them must never be skipped silently,
 * and retention keeps what a consumer group has not consumed. F14: readers of the writer's
 * process only see records whose fdatasync completed.
 */
let dir: string;
let opened: Stream[];
const HOUR = 3_600_000;

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'syncline-retention-'));
  opened = [];
});

afterEach(async () => {
  await Promise.allSettled(opened.map((s) => s.close()));
  await rm(dir, { recursive: true, force: true });
});

/** A clock the test moves; it starts now, so the segment files' mtimes never look newer. */
const clock = { t: Date.now(), now(): number { return this.t; } };

async function openStream(opts: Partial<EmbeddedStreamOptions> = {}): Promise<Stream> {
  const stream = await openEmbeddedStream({ path: dir, partitions: 1, segmentBytes: 100, retentionHours: 1, clock, ...opts });
  opened.push(stream);
  return stream;
}

async function segments(): Promise<bigint[]> {
  return (await readdir(join(dir, 'partition-0'))).filter((n) => n.endsWith('.log')).map((n) => BigInt(n.slice(0, 20))).sort((a, b) => (a < b ? -1 : 1));
}

async function readN(consumer: StreamConsumer, n: number, timeoutMs = 3000): Promise<StreamRecord[]> {
  const out: StreamRecord[] = [];
  const deadline = Date.now() + timeoutMs;
  while (out.length < n && Date.now() < deadline) out.push(...(await consumer.poll(n - out.length, 50)));
  return out;
}

/** Publishes 10 records (several segments), closes, and reopens the stream two hours later. */
async function tenRecordsTwoHoursAgo(commit?: { group: string; position: bigint }): Promise<Stream> {
  clock.t = Date.now();
  const stream = await openStream();
  const producer = await stream.producer();
  for (let i = 0; i < 10; i++) await producer.publish([{ key: 'k', value: Buffer.from(`r${i}`) }]);
  expect(await stream.endOffsets()).toEqual(new Map([[0, 10n]]));
  if (commit) {
    const c = await stream.consumer(commit.group);
    await c.commit(new Map([[0, commit.position]]));
    await c.close();
  }
  await stream.close();
  expect((await segments()).length).toBeGreaterThan(3);
  clock.t += 2 * HOUR; // apply was down for 2 h; retention is 1 h
  return openStream();
}

describe('embedded stream retention (F7)', () => {
  it('refuses a start position that retention deleted, naming partition, offsets and the fix, and counts it', async () => {
    const metrics = new Metrics();
    const stream = await tenRecordsTwoHoursAgo();
    const first = (await segments())[0] as bigint;
    expect(first).toBeGreaterThan(0n); // retention did delete records nobody consumed
    // The sink's position is 0 (it never applied anything): starting at `first` would lose 0..first-1.
    const consumer = await stream.consumer('apply', { startPositions: async () => new Map([[0, 0n]]) });
    const err: unknown = await consumer.poll(100, 100).then(
      (records) => records.map((r) => r.offset),
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(RetentionGapError);
    expect(err).toBeInstanceOf(PrerequisiteError);
    const gap = err as RetentionGapError;
    expect(gap.retriable).toBe(false);
    expect(gap.partition).toBe(0);
    expect(gap.wanted).toBe(0n);
    expect(gap.firstRetained).toBe(first);
    expect(gap.message).toContain(`partition 0`);
    expect(gap.message).toContain(`offset 0`);
    expect(gap.message).toContain(`deleted the records before ${first}`);
    expect(gap.fix).toContain(`--from 0:${first}`);
    expect(gap.fix).toContain('syncline snapshot');
    expect(gap.fix).toContain('stream.retention_hours');
    // It stays refused (no later poll skips ahead either).
    await expect(consumer.poll(100, 50)).rejects.toBeInstanceOf(RetentionGapError);
    const text = await metrics.registry.getSingleMetricAsString('sync_stream_retention_gap_total');
    expect(text).toMatch(/sync_stream_retention_gap_total\{partition="0"\} 2\b/);
    // Accepting the gap explicitly (what `--from 0:<first>` does) reads on from there.
    consumer.seek(0, first);
    const got = await readN(consumer, Number(10n - first));
    expect(got.map((r) => r.offset)).toEqual(got.map((_, i) => first + BigInt(i)));
  });

  it('refuses a committed group position that retention deleted', async () => {
    const stream = await tenRecordsTwoHoursAgo();
    const first = (await segments())[0] as bigint;
    // A group file that names a deleted position (written by an older version, or copied).
    const writer = await stream.consumer('late');
    await writer.commit(new Map([[0, 1n]]));
    await writer.close();
    const consumer = await stream.consumer('late');
    await expect(consumer.poll(10, 50)).rejects.toMatchObject({ partition: 0, wanted: 1n, firstRetained: first });
  });

  it('a group without a position still starts at the first retained record', async () => {
    const stream = await tenRecordsTwoHoursAgo();
    const first = (await segments())[0] as bigint;
    const consumer = await stream.consumer('new-group');
    const got = await readN(consumer, Number(10n - first));
    expect(got[0]?.offset).toBe(first);
    expect(got.map((r) => r.value.toString())).toEqual(got.map((r) => `r${r.offset}`));
  });

  it('keeps expired segments that a consumer group has not consumed yet', async () => {
    const stream = await tenRecordsTwoHoursAgo({ group: 'apply', position: 4n });
    const bases = await segments();
    // The segment holding offset 4 is kept (those before it may go).
    expect(bases[0]).toBeLessThanOrEqual(4n);
    const consumer = await stream.consumer('apply');
    const got = await readN(consumer, 6);
    expect(got.map((r) => r.offset)).toEqual([4n, 5n, 6n, 7n, 8n, 9n]);
    // Once the group has consumed everything, the expired segments go at the next pass.
    await consumer.commit(new Map([[0, 10n]]));
    await stream.close();
    await openStream();
    const after = await segments();
    expect(after).toHaveLength(1);
    expect((after[0] as bigint) > 4n).toBe(true);
  });
});

describe('embedded stream retention with several partitions', () => {
  it('keeps a partition a group never committed: unconsumed from its start', async () => {
    clock.t = Date.now();
    const stream = await openStream({ partitions: 2 });
    const producer = await stream.producer();
    // Partition 0 gets a record the group consumes; partition 1 only records it has not.
    for (let i = 0; i < 10; i++) await producer.publish([{ key: i === 0 ? 'a' : 'b', value: Buffer.from(`r${i}`) }]);
    const ends = await stream.endOffsets();
    const p1 = [...ends].find(([, end]) => end >= 9n)?.[0] as number;
    const c = await stream.consumer('g');
    await c.commit(new Map([[1 - p1, ends.get(1 - p1) as bigint]]));
    await c.close();
    await stream.close();
    clock.t += 2 * HOUR;
    const reopened = await openStream({ partitions: 2 });
    const consumer = await reopened.consumer('g', { startPositions: async (ps) => new Map(ps.map((p) => [p, p === p1 ? 0n : (ends.get(p) as bigint)])) });
    const got = await readN(consumer, Number(ends.get(p1)));
    expect(got.map((r) => r.offset)).toEqual([...Array(Number(ends.get(p1))).keys()].map(BigInt));
  });
});

describe('embedded stream durable high-water mark (F14)', () => {
  it('a reader of the writer\'s process does not return records appended but not yet synced', async () => {
    const partDir = join(dir, 'partition-0');
    await mkdir(partDir, { recursive: true });
    const log = new PartitionLog(partDir, 0);
    const writer = await log.openWriter();
    try {
      await writer.append([{ key: 'a', value: Buffer.from('1') }, { key: 'b', value: Buffer.from('2') }], Date.now());
      await writer.sync();
      // Written (in the page cache, visible to read()) but its fdatasync has not run yet.
      await writer.append([{ key: 'c', value: Buffer.from('3') }], Date.now());
      const reader = log.openReader(0n);
      const out: StreamRecord[] = [];
      expect(await reader.read(10, out)).toBe(2);
      expect(out.map((r) => r.offset)).toEqual([0n, 1n]);
      expect(await reader.read(10, out)).toBe(0);
      expect(log.durableEnd).toBe(2n);
      expect(await log.endOffset()).toBe(2n);
      await writer.sync();
      expect(await reader.read(10, out)).toBe(1);
      expect(out.map((r) => r.value.toString())).toEqual(['1', '2', '3']);
      await reader.close();
    } finally {
      await writer.close();
    }
    // Without a writer in this process the files are all there is to go by.
    expect(log.durableEnd).toBeUndefined();
  });

  it('end offsets of a stream with a producer stop at the synced records', async () => {
    clock.t = Date.now();
    const stream = await openStream({ partitions: 1 });
    const producer = await stream.producer();
    await producer.publish([{ key: 'k', value: Buffer.from('x') }]);
    expect(await stream.endOffsets()).toEqual(new Map([[0, 1n]]));
  });
});
