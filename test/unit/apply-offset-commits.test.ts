/**
 * With positions stored by the sink (atomic with its rows), the stream group's offsets only
 * inform (status, the embedded stream's retention, a broker's tools): apply commits them at
 * most once a second, the newest merged, and commits the last ones when it stops. Each batch
 * committed them before: on the embedded stream a file rewritten with two fsyncs per batch.
 */
import { describe, expect, it } from 'vitest';
import { partitionKeyOf, type ChangeEvent } from '../../src/core/change.js';
import { systemClock } from '../../src/core/clock.js';
import { Events } from '../../src/core/events.js';
import { silentLogger } from '../../src/log/logger.js';
import { Apply } from '../../src/pipeline/apply.js';
import type { StreamConsumer } from '../../src/stream/stream.js';
import { MemorySink } from '../../src/testing/memory-sink.js';
import { MemoryStream } from '../../src/testing/memory-stream.js';
import { waitFor } from '../helpers/wait.js';

function insert(id: number): ChangeEvent {
  const lsn = `0/${(0x1000 + id).toString(16).toUpperCase()}`;
  return {
    source: 's', schema: 'public', table: 't', op: 'INSERT', lsn, commit_lsn: lsn, xid: id, seq: 1,
    commit_ts: '2026-12-04T00:00:00.000000Z', key: { id: String(id) }, payload: { id: String(id), v: 'x' },
    _version: String(BigInt(0x1000 + id) * 2n ** 32n + 1n), _schema_version: 1, tx_last: true,
  };
}

describe('apply: stream offsets with positions stored by the sink', () => {
  it('commits them at most once a second, and the last ones when it stops', async () => {
    const stream = new MemoryStream(2);
    const producer = await stream.producer();
    const sink = new MemorySink();
    const commits: Map<number, bigint>[] = [];
    const openConsumer = async (options: Parameters<MemoryStream['consumer']>[1]): Promise<StreamConsumer> => {
      const consumer = await stream.consumer('g', options);
      return {
        ...consumer,
        commit: async (positions) => {
          commits.push(new Map(positions));
          await consumer.commit(positions);
        },
      };
    };
    const apply = new Apply(openConsumer, sink, new Events(), silentLogger(), {
      group: 'g', batchSize: 100, batchWaitMs: 5, clock: systemClock, deadLetters: undefined, truncate: 'apply',
      retry: { maxAttempts: 3, baseMs: 10, maxMs: 20, jitter: false }, endOffsets: () => stream.endOffsets(),
    });
    const stop = new AbortController();
    const running = apply.run(stop.signal);
    // A batch every 20 ms for 1.5 s: ~75 batches.
    let id = 0;
    const started = Date.now();
    while (Date.now() - started < 1500) {
      id++;
      await producer.publish([{ key: partitionKeyOf(insert(id)), value: Buffer.from(JSON.stringify(insert(id))) }]);
      await waitFor('applied', async () => sink.rows('public.t').length === id, 5000, 2);
      await new Promise((r) => setTimeout(r, 20));
    }
    expect(id).toBeGreaterThan(30);
    expect(commits.length).toBeGreaterThan(0);
    expect(commits.length).toBeLessThanOrEqual(3);
    stop.abort();
    await running;
    // The group holds the end of the stream once apply stopped.
    const after = await stream.consumer('g');
    expect(await after.committed()).toEqual(await stream.endOffsets());
    await after.close();
  });

  it('brings the group up to the positions the sink stored when a partition is assigned (commits lost to a kill -9)', async () => {
    // Repro (red16b): apply killed -9 within a second of its last batches: the sink stored
    // their positions, the group's offsets (committed at most once a second) lag. A restarted
    // apply resumes from the sink's positions; with no new record in a partition, nothing
    // committed it again: syncline status showed committed 30105 for sink position 45846 (NATS,
    // caught up) for good, and the embedded stream's retention keeps what the sink applied.
    const stream = new MemoryStream(2);
    const producer = await stream.producer();
    const sink = new MemorySink();
    const options = {
      group: 'g', batchSize: 100, batchWaitMs: 5, clock: systemClock, deadLetters: undefined, truncate: 'apply' as const,
      retry: { maxAttempts: 3, baseMs: 10, maxMs: 20, jitter: false }, endOffsets: () => stream.endOffsets(),
    };
    for (let id = 1; id <= 20; id++) await producer.publish([{ key: partitionKeyOf(insert(id)), value: Buffer.from(JSON.stringify(insert(id))) }]);
    // The first apply: its commits never reach the group (killed before its timer fired).
    const lost = async (o: Parameters<MemoryStream['consumer']>[1]): Promise<StreamConsumer> => ({ ...(await stream.consumer('g', o)), commit: async () => undefined });
    const first = new AbortController();
    const one = new Apply(lost, sink, new Events(), silentLogger(), options).run(first.signal);
    await waitFor('applied', () => sink.rows('public.t').length === 20, 5000, 5);
    first.abort();
    await one;
    const ends = await stream.endOffsets();
    expect(await sink.positions('g')).toEqual(ends);
    // Restarted, nothing new to read.
    const second = new AbortController();
    const two = new Apply((o) => stream.consumer('g', o), sink, new Events(), silentLogger(), options).run(second.signal);
    const committed = async (): Promise<Map<number, bigint>> => {
      const c = await stream.consumer('g');
      try {
        return await c.committed();
      } finally {
        await c.close();
      }
    };
    const text = (m: Map<number, bigint>): string => [...m].map(([p, o]) => `${p}:${o}`).sort().join(' ');
    await waitFor('the group at the sink positions', async () => text(await committed()) === text(ends), 3000, 50, async () => text(await committed()));
    second.abort();
    await two;
  });
});
