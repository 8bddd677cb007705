import { spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { appendFile, mkdtemp, open, readFile, readdir, rm, stat, truncate, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { partitionFor } from '../../src/core/change.js';
import { SynclineError } from '../../src/core/errors.js';
import { openEmbeddedStream, type EmbeddedStreamOptions } from '../../src/stream/embedded/embedded-stream.js';
import type { OutgoingRecord, Stream, StreamConsumer, StreamRecord } from '../../src/stream/stream.js';

let dir: string;
let opened: Stream[];

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'syncline-embedded-'));
  opened = [];
});

afterEach(async () => {
  await Promise.allSettled(opened.map((s) => s.close()));
  await rm(dir, { recursive: true, force: true });
});

async function openStream(opts: Partial<EmbeddedStreamOptions> = {}): Promise<Stream> {
  const stream = await openEmbeddedStream({ path: dir, partitions: 4, ...opts });
  opened.push(stream);
  return stream;
}

function rec(key: string, value: string): OutgoingRecord {
  return { key, value: Buffer.from(value) };
}

async function readN(consumer: StreamConsumer, n: number, timeoutMs = 5000): Promise<StreamRecord[]> {
  const out: StreamRecord[] = [];
  const deadline = Date.now() + timeoutMs;
  while (out.length < n && Date.now() < deadline) out.push(...(await consumer.poll(n - out.length, 100)));
  return out;
}

async function expectNothingMore(consumer: StreamConsumer): Promise<void> {
  expect(await consumer.poll(100, 150)).toEqual([]);
}

async function segments(partition = 0): Promise<string[]> {
  const names = await readdir(join(dir, `partition-${partition}`));
  return names.filter((n) => n.endsWith('.log')).sort();
}

async function lastSegmentPath(partition = 0): Promise<string> {
  const names = await segments(partition);
  return join(dir, `partition-${partition}`, names[names.length - 1] as string);
}

function values(records: readonly StreamRecord[]): string[] {
  return records.map((r) => r.value.toString());
}

async function expectCode(promise: Promise<unknown>, code: string): Promise<SynclineError> {
  const err: unknown = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(SynclineError);
  expect((err as SynclineError).code).toBe(code);
  return err as SynclineError;
}

describe('embedded stream', () => {
  it('reads back acknowledged records from every partition, each in offset order', async () => {
    const stream = await openStream();
    const producer = await stream.producer();
    const records = Array.from({ length: 100 }, (_, i) => rec(`key-${i % 10}`, `v${i}`));
    await producer.publish(records);
    const consumer = await stream.consumer('g');
    expect(consumer.assignment()).toEqual([0, 1, 2, 3]);
    const got = await readN(consumer, 100);
    expect(got).toHaveLength(100);
    await expectNothingMore(consumer);
    const byPartition = new Map<number, bigint[]>();
    for (const r of got) {
      expect(r.partition).toBe(partitionFor(r.key, 4));
      expect(r.value.toString()).toMatch(/^v\d+$/);
      expect(typeof r.timestamp).toBe('number');
      byPartition.set(r.partition, [...(byPartition.get(r.partition) ?? []), r.offset]);
    }
    expect(byPartition.size).toBeGreaterThan(1);
    for (const offsets of byPartition.values()) {
      expect(offsets).toEqual(offsets.map((_, i) => BigInt(i)));
    }
    const ends = await stream.endOffsets();
    for (const [p, offsets] of byPartition) expect(ends.get(p)).toBe(BigInt(offsets.length));
  });

  it('keeps per-key order across many concurrent publishes', async () => {
    const stream = await openStream();
    const producer = await stream.producer();
    const publishes: Promise<void>[] = [];
    for (let i = 0; i < 300; i++) publishes.push(producer.publish([rec(`k${i % 7}`, String(i))]));
    await Promise.all(publishes);
    const got = await readN(await stream.consumer('g'), 300);
    expect(got).toHaveLength(300);
    const perKey = new Map<string, number[]>();
    for (const r of got) perKey.set(r.key, [...(perKey.get(r.key) ?? []), Number(r.value.toString())]);
    for (const [key, seq] of perKey) {
      expect(seq).toEqual([...seq].sort((a, b) => a - b));
      expect(seq.every((v) => `k${v % 7}` === key)).toBe(true);
    }
  });

  it('group-commits concurrent publishes: far fewer fdatasyncs than publishes', async () => {
    const stream = await openStream({ partitions: 1 });
    const producer = await stream.producer();
    const probe = await open(join(dir, 'meta.json'), 'r');
    const proto = Object.getPrototypeOf(probe) as { datasync: () => Promise<void> };
    await probe.close();
    const spy = vi.spyOn(proto, 'datasync');
    try {
      const publishes: Promise<void>[] = [];
      for (let i = 0; i < 200; i++) publishes.push(producer.publish([rec('k', String(i))]));
      // Some arrive while the first batch is being synced.
      await new Promise((r) => setTimeout(r, 1));
      for (let i = 200; i < 400; i++) publishes.push(producer.publish([rec('k', String(i))]));
      await Promise.all(publishes);
      expect(spy.mock.calls.length).toBeGreaterThan(0);
      expect(spy.mock.calls.length).toBeLessThan(20);
    } finally {
      spy.mockRestore();
    }
    const got = await readN(await stream.consumer('g'), 400);
    expect(values(got)).toEqual(Array.from({ length: 400 }, (_, i) => String(i)));
  });

  it('stores a batch even if the caller reuses its array right after publish()', async () => {
    const stream = await openStream({ partitions: 1 });
    const producer = await stream.producer();
    const batch = [rec('k', '1'), rec('k', '2')];
    const first = producer.publish(batch);
    batch.length = 0;
    batch.push(rec('k', '3'));
    await Promise.all([first, producer.publish(batch)]);
    expect(values(await readN(await stream.consumer('g'), 3))).toEqual(['1', '2', '3']);
  });

  it('refuses further publishes after a failed write until the producer is reopened', async () => {
    const stream = await openStream({ partitions: 1 });
    let producer = await stream.producer();
    await producer.publish([rec('k', 'before')]);
    const probe = await open(join(dir, 'meta.json'), 'r');
    const proto = Object.getPrototypeOf(probe) as { datasync: () => Promise<void> };
    await probe.close();
    const spy = vi.spyOn(proto, 'datasync').mockRejectedValueOnce(Object.assign(new Error('EIO: i/o error'), { code: 'EIO' }));
    try {
      const failed = await expectCode(producer.publish([rec('k', 'lost?')]), 'STREAM_WRITE_FAILED');
      expect(failed.retriable).toBe(false);
      await expectCode(producer.publish([rec('k', 'refused')]), 'STREAM_WRITE_FAILED');
    } finally {
      spy.mockRestore();
    }
    await producer.close();
    producer = await stream.producer();
    await producer.publish([rec('k', 'after')]);
    // The unacknowledged record may or may not be there (at-least-once); the refused one is not.
    const got = values(await readN(await stream.consumer('g'), 3, 1000));
    expect(got[0]).toBe('before');
    expect(got[got.length - 1]).toBe('after');
    expect(got).not.toContain('refused');
  });

  it('continues offsets across a reopen', async () => {
    let stream = await openStream({ partitions: 1 });
    let producer = await stream.producer();
    await producer.publish([rec('a', '1'), rec('a', '2')]);
    await stream.close();
    stream = await openStream({ partitions: 1 });
    expect(await stream.endOffsets()).toEqual(new Map([[0, 2n]]));
    producer = await stream.producer();
    await producer.publish([rec('a', '3')]);
    const got = await readN(await stream.consumer('g'), 3);
    expect(got.map((r) => r.offset)).toEqual([0n, 1n, 2n]);
    expect(values(got)).toEqual(['1', '2', '3']);
  });

  it('reports end offsets from the files when this instance has no producer', async () => {
    const writer = await openStream({ partitions: 2 });
    const producer = await writer.producer();
    await producer.publish(Array.from({ length: 30 }, (_, i) => rec(`k${i}`, 'x')));
    const reader = await openStream({ partitions: 2 });
    expect(await reader.endOffsets()).toEqual(await writer.endOffsets());
    await producer.publish([rec('k1', 'y')]);
    expect(await reader.endOffsets()).toEqual(await writer.endOffsets());
  });

  it('commits group positions and resumes from them', async () => {
    const stream = await openStream({ partitions: 2 });
    const producer = await stream.producer();
    await producer.publish(Array.from({ length: 20 }, (_, i) => rec(`k${i}`, String(i))));
    const c1 = await stream.consumer('group/one');
    expect(await c1.committed()).toEqual(new Map());
    const first = await readN(c1, 5);
    const positions = new Map<number, bigint>();
    for (const r of first) positions.set(r.partition, r.offset + 1n);
    await c1.commit(positions);
    expect(await c1.committed()).toEqual(positions);
    await c1.close();
    // The group file name is the encoded group id.
    expect(await readdir(join(dir, 'groups'))).toContain(`${encodeURIComponent('group/one')}.json`);

    const c2 = await stream.consumer('group/one');
    const rest = await readN(c2, 15);
    expect(rest).toHaveLength(15);
    const seen = new Set([...first, ...rest].map((r) => `${r.partition}:${r.offset}`));
    expect(seen.size).toBe(20);
    // Committing one partition keeps the other's stored position.
    await c2.commit(new Map([[0, 1n]]));
    const merged = await c2.committed();
    expect(merged.get(0)).toBe(1n);
    for (const [p, o] of positions) if (p !== 0) expect(merged.get(p)).toBe(o);

    // Another group starts from the beginning.
    expect(await readN(await stream.consumer('other'), 20)).toHaveLength(20);
  });

  it('replays from a sought offset', async () => {
    const stream = await openStream({ partitions: 1 });
    const producer = await stream.producer();
    await producer.publish(Array.from({ length: 10 }, (_, i) => rec('k', String(i))));
    const consumer = await stream.consumer('g');
    expect(values(await readN(consumer, 10))).toHaveLength(10);
    consumer.seek(0, 4n);
    expect(values(await readN(consumer, 6))).toEqual(['4', '5', '6', '7', '8', '9']);
    consumer.seek(0, 12n);
    await producer.publish([rec('k', '10'), rec('k', '11'), rec('k', '12')]);
    expect(values(await readN(consumer, 1))).toEqual(['12']);
    expect(() => consumer.seek(1, 0n)).toThrow(SynclineError);
  });

  it('refuses to reopen with another partition count', async () => {
    await (await openStream({ partitions: 4 })).close();
    const err = await expectCode(openStream({ partitions: 8 }), 'STREAM_PARTITIONS_MISMATCH');
    expect(err.retriable).toBe(false);
    expect(err.message).toContain('4');
    expect(err.message).toContain('8');
    expect(err.message).toContain(dir);
    expect(JSON.parse(await readFile(join(dir, 'meta.json'), 'utf8'))).toEqual({ partitions: 4, format: 1 });
  });

  it('refuses a producer while a live process holds the lock', async () => {
    const sleeper = spawn(process.execPath, ['-e', 'setTimeout(() => {}, 60000)'], { stdio: 'ignore' });
    try {
      const pid = sleeper.pid as number;
      const stream = await openStream();
      await writeFile(join(dir, 'writer.lock'), `${pid}\n`);
      const err = await expectCode(stream.producer(), 'STREAM_LOCKED');
      expect(err.message).toContain(String(pid));
      expect(await readFile(join(dir, 'writer.lock'), 'utf8')).toBe(`${pid}\n`);
    } finally {
      sleeper.kill('SIGKILL');
      await once(sleeper, 'exit');
    }
  });

  it('refuses a second producer in the same process and releases the lock on close', async () => {
    const stream = await openStream();
    const producer = await stream.producer();
    expect(await readFile(join(dir, 'writer.lock'), 'utf8')).toBe(`${process.pid}\n`);
    const other = await openStream();
    const err = await expectCode(other.producer(), 'STREAM_LOCKED');
    expect(err.message).toContain(String(process.pid));
    await producer.close();
    await expect(stat(join(dir, 'writer.lock'))).rejects.toThrow();
    await (await other.producer()).publish([rec('k', 'v')]);
  });

  it('takes over a lock left by a dead process', async () => {
    const dead = spawnSync(process.execPath, ['-e', '']);
    expect(dead.status).toBe(0);
    await writeFile(join(dir, 'writer.lock'), `${dead.pid}\n`);
    const stream = await openStream();
    const producer = await stream.producer();
    expect(await readFile(join(dir, 'writer.lock'), 'utf8')).toBe(`${process.pid}\n`);
    await producer.publish([rec('k', 'v')]);
    await producer.close();
  });

  it('takes over a lock whose writer was killed and not yet reaped (a zombie)', async () => {
    // sh starts a short child, then becomes `sleep`, which never waits: the child stays a zombie.
    const parent = spawn('sh', ['-c', 'sleep 0.05 & echo $!; exec sleep 60'], { stdio: ['ignore', 'pipe', 'ignore'] });
    try {
      const [line] = (await once(parent.stdout as NodeJS.ReadableStream, 'data')) as [Buffer];
      const pid = Number(line.toString().trim());
      const state = async (): Promise<string> => {
        const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
        return stat.charAt(stat.lastIndexOf(')') + 2);
      };
      for (let i = 0; i < 100 && (await state()) !== 'Z'; i++) await new Promise((r) => setTimeout(r, 20));
      expect(await state()).toBe('Z');
      expect(() => process.kill(pid, 0)).not.toThrow();
      await writeFile(join(dir, 'writer.lock'), `${pid}\n`);
      const producer = await (await openStream()).producer();
      expect(await readFile(join(dir, 'writer.lock'), 'utf8')).toBe(`${process.pid}\n`);
      await producer.close();
    } finally {
      parent.kill('SIGKILL');
      await once(parent, 'exit');
    }
  });

  it('gives a consumer group to one process at a time: another waits (retriable), this one is refused, a dead holder is taken over', async () => {
    const stream = await openStream();
    const producer = await stream.producer();
    await producer.publish([rec('k', 'v')]);
    const lock = join(dir, 'groups', 'g%2F1.lock');
    const first = await stream.consumer('g/1');
    expect(await readFile(lock, 'utf8')).toBe(`${process.pid}\n`);
    const own = await expectCode(stream.consumer('g/1'), 'STREAM_GROUP_BUSY');
    expect(own.retriable).toBe(false);
    // Another group is independent.
    await (await stream.consumer('g2')).close();
    await first.close();
    await expect(stat(lock)).rejects.toThrow();

    const sleeper = spawn(process.execPath, ['-e', 'setTimeout(() => {}, 60000)'], { stdio: 'ignore' });
    try {
      await writeFile(lock, `${sleeper.pid}\n`);
      const busy = await expectCode(stream.consumer('g/1'), 'STREAM_GROUP_BUSY');
      expect(busy.retriable).toBe(true);
      expect(busy.message).toContain(String(sleeper.pid));
      expect(await readFile(lock, 'utf8')).toBe(`${sleeper.pid}\n`);
    } finally {
      sleeper.kill('SIGKILL');
      await once(sleeper, 'exit');
    }
    // Its holder is dead now: taken over, and the group reads from its start.
    const next = await stream.consumer('g/1');
    expect((await readN(next, 1)).map((r) => r.value.toString())).toEqual(['v']);
    await next.close();
    await producer.close();
    expect((await readdir(join(dir, 'groups'))).filter((f) => f.endsWith('.lock'))).toEqual([]);
  });

  it('rolls segments and reads across them, with records larger than the read chunk', async () => {
    const stream = await openStream({ partitions: 1, segmentBytes: 300, readChunkBytes: 64 });
    const producer = await stream.producer();
    const expected: string[] = [];
    for (let batch = 0; batch < 10; batch++) {
      const records: OutgoingRecord[] = [];
      for (let i = 0; i < 5; i++) {
        const n = batch * 5 + i;
        const value = n % 7 === 0 ? `${n}:${'x'.repeat(500)}` : String(n);
        expected.push(value);
        records.push(rec('k', value));
      }
      await producer.publish(records);
    }
    const names = await segments();
    expect(names.length).toBeGreaterThan(3);
    expect(names[0]).toBe('00000000000000000000.log');
    // Each segment's name is the offset of its first record.
    const consumer = await stream.consumer('g');
    const got = await readN(consumer, 50);
    expect(values(got)).toEqual(expected);
    expect(got.map((r) => r.offset)).toEqual(expected.map((_, i) => BigInt(i)));
    for (const name of names) expect(got.some((r) => r.offset === BigInt(name.slice(0, 20)))).toBe(true);
    // Seek into a middle segment.
    consumer.seek(0, 33n);
    expect(values(await readN(consumer, 17))).toEqual(expected.slice(33));
    // A reopened writer continues in the last segment.
    await stream.close();
    const again = await openStream({ partitions: 1, segmentBytes: 300, readChunkBytes: 64 });
    await (await again.producer()).publish([rec('k', 'after')]);
    const all = await readN(await again.consumer('g2'), 51);
    expect(values(all)).toEqual([...expected, 'after']);
  });

  it('drops a garbage tail on reopen, never returns it, and appends after it', async () => {
    let stream = await openStream({ partitions: 1 });
    await (await stream.producer()).publish([rec('k', 'a'), rec('k', 'b')]);
    await stream.close();
    const file = await lastSegmentPath();
    const goodSize = (await stat(file)).size;
    await appendFile(file, Buffer.from([0, 0, 0, 40, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]));

    stream = await openStream({ partitions: 1 });
    const consumer = await stream.consumer('g');
    expect(values(await readN(consumer, 2))).toEqual(['a', 'b']);
    await expectNothingMore(consumer);

    const producer = await stream.producer();
    expect((await stat(file)).size).toBe(goodSize);
    await producer.publish([rec('k', 'c')]);
    const got = await readN(consumer, 1);
    expect(values(got)).toEqual(['c']);
    expect(got[0]?.offset).toBe(2n);
  });

  it('drops a record cut mid-way (torn write) and reuses its offset', async () => {
    let stream = await openStream({ partitions: 1 });
    await (await stream.producer()).publish([rec('k', 'a'), rec('k', 'b'), rec('k', 'torn-record')]);
    await stream.close();
    const file = await lastSegmentPath();
    await truncate(file, (await stat(file)).size - 5);

    stream = await openStream({ partitions: 1 });
    const consumer = await stream.consumer('g');
    expect(values(await readN(consumer, 2))).toEqual(['a', 'b']);
    await expectNothingMore(consumer);
    expect(await stream.endOffsets()).toEqual(new Map([[0, 2n]]));

    const producer = await stream.producer();
    await producer.publish([rec('k', 'c'), rec('k', 'd')]);
    const got = await readN(consumer, 2);
    expect(values(got)).toEqual(['c', 'd']);
    expect(got.map((r) => r.offset)).toEqual([2n, 3n]);
    const replay = await readN(await stream.consumer('g2'), 4);
    expect(values(replay)).toEqual(['a', 'b', 'c', 'd']);
  });

  it('never returns a tail record whose CRC fails', async () => {
    let stream = await openStream({ partitions: 1 });
    await (await stream.producer()).publish([rec('k', 'a'), rec('k', 'b'), rec('k', 'ccc')]);
    await stream.close();
    const file = await lastSegmentPath();
    const bytes = await readFile(file);
    bytes[bytes.length - 1] = (bytes[bytes.length - 1] as number) ^ 0x20; // 'c' -> 'C'
    await writeFile(file, bytes);

    stream = await openStream({ partitions: 1 });
    const consumer = await stream.consumer('g');
    expect(values(await readN(consumer, 2))).toEqual(['a', 'b']);
    await expectNothingMore(consumer);
    const producer = await stream.producer();
    await producer.publish([rec('k', 'd')]);
    const got = await readN(consumer, 1);
    expect(values(got)).toEqual(['d']);
    expect(got[0]?.offset).toBe(2n);
  });

  it('deletes expired segments at open, but never the active one', async () => {
    const hour = 3_600_000;
    const old = Date.now() - 200 * hour;
    let stream = await openStream({ partitions: 1, segmentBytes: 100, clock: { now: () => old } });
    const producer = await stream.producer();
    for (let i = 0; i < 20; i++) await producer.publish([rec('k', `old-${i}`)]);
    await stream.close();
    const before = await segments();
    expect(before.length).toBeGreaterThan(3);
    // The files were written just now; make them look as old as their records.
    for (const name of before) await utimes(join(dir, 'partition-0', name), old / 1000, old / 1000);

    stream = await openStream({ partitions: 1, segmentBytes: 100, retentionHours: 168 });
    const after = await segments();
    expect(after).toEqual([before[before.length - 1]]);
    // A consumer positioned before the oldest kept segment starts at it.
    const consumer = await stream.consumer('g');
    const base = BigInt((after[0] as string).slice(0, 20));
    const got = await readN(consumer, 20 - Number(base));
    expect(got.map((r) => r.offset)).toEqual(got.map((_, i) => base + BigInt(i)));
    expect(values(got)).toEqual(got.map((r) => `old-${r.offset}`));
    expect(got[got.length - 1]?.value.toString()).toBe('old-19');
    await expectNothingMore(consumer);
  });

  it('keeps segments whose last record is recent, whatever their mtime', async () => {
    let stream = await openStream({ partitions: 1, segmentBytes: 100 });
    const producer = await stream.producer();
    for (let i = 0; i < 10; i++) await producer.publish([rec('k', `new-${i}`)]);
    await stream.close();
    const before = await segments();
    const oldSeconds = (Date.now() - 1000 * 3_600_000) / 1000;
    for (const name of before) await utimes(join(dir, 'partition-0', name), oldSeconds, oldSeconds);
    stream = await openStream({ partitions: 1, segmentBytes: 100, retentionHours: 1 });
    expect(await segments()).toEqual(before);
  });

  it('wakes a consumer of this process promptly when this process appends', async () => {
    const stream = await openStream({ partitions: 2, pollIntervalMs: 30_000 });
    const producer = await stream.producer();
    const consumer = await stream.consumer('g');
    const started = Date.now();
    const polled = consumer.poll(10, 20_000);
    setTimeout(() => void producer.publish([rec('k', 'hello')]), 50);
    const got = await polled;
    expect(values(got)).toEqual(['hello']);
    expect(Date.now() - started).toBeLessThan(5_000);
  });

  it('sees appends of another stream instance by polling the files alone', async () => {
    const writer = await openStream({ partitions: 2 });
    // No in-process notification: this instance learns of appends only as another
    // process's consumer would, by polling the segment files.
    const reader = await openStream({ partitions: 2, shareNotifications: false, pollIntervalMs: 20 });
    const producer = await writer.producer();
    const consumer = await reader.consumer('g');
    const polled = consumer.poll(10, 10_000);
    setTimeout(() => void producer.publish([rec('a', '1'), rec('b', '2')]), 100);
    const got = [...(await polled)];
    if (got.length < 2) got.push(...(await readN(consumer, 2 - got.length)));
    expect(values(got).sort()).toEqual(['1', '2']);
  });

  it('returns an empty batch on timeout, and an interrupted poll on close', async () => {
    const stream = await openStream();
    const consumer = await stream.consumer('g');
    const t0 = Date.now();
    expect(await consumer.poll(10, 100)).toEqual([]);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(90);
    const polled = consumer.poll(10, 30_000);
    const t1 = Date.now();
    await consumer.close();
    expect(await polled).toEqual([]);
    expect(Date.now() - t1).toBeLessThan(1_000);
    await expectCode(consumer.poll(1, 1), 'STREAM_CLOSED');
  });

  it('leaves no timers or handles behind after close', async () => {
    const timers = (): number => process.getActiveResourcesInfo().filter((r) => r === 'Timeout').length;
    const before = timers();
    const stream = await openEmbeddedStream({ path: dir, partitions: 2 });
    const producer = await stream.producer();
    const consumer = await stream.consumer('g');
    await producer.publish([rec('k', 'v')]);
    await readN(consumer, 1);
    const pending = consumer.poll(10, 60_000);
    await stream.close();
    expect(await pending).toEqual([]);
    expect(timers()).toBe(before);
    await expectCode(producer.publish([rec('k', 'v')]), 'STREAM_CLOSED');
    await expect(stat(join(dir, 'writer.lock'))).rejects.toThrow();
  });
});
