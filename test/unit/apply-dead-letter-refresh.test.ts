import { describe, expect, it } from 'vitest';
import { partitionKeyOf, type ChangeEvent } from '../../src/core/change.js';
import { systemClock } from '../../src/core/clock.js';
import { SynclineError } from '../../src/core/errors.js';
import { Events } from '../../src/core/events.js';
import { rowIdOf, type DeadLetter, type DeadLetterEntry, type DeadLetterQueue } from '../../src/dlq/dead-letter-queue.js';
import { silentLogger } from '../../src/log/logger.js';
import { Apply } from '../../src/pipeline/apply.js';
import type { ApplyOutcome, Sink } from '../../src/sink/sink.js';
import { MemorySink } from '../../src/testing/memory-sink.js';
import { MemoryStream } from '../../src/testing/memory-stream.js';
import { waitFor } from '../helpers/wait.js';

function change(id: number, n: number, op: ChangeEvent['op'] = 'INSERT'): ChangeEvent {
  const lsn = `0/${(0x1000 + n).toString(16).toUpperCase()}`;
  return {
    source: 's', schema: 'public', table: 't', op, lsn, commit_lsn: lsn, xid: n, seq: 1,
    commit_ts: '2026-12-04T00:00:00.000000Z', key: { id: String(id) }, payload: { id: String(id), v: String(n) },
    _version: String(BigInt(0x1000 + n) * 2n ** 32n + 1n), _schema_version: 1, tx_last: true,
  };
}

/** A MemorySink that refuses the INSERTs of the rows `poison` names (a target CHECK constraint). */
class CheckSink implements Sink {
  readonly storesPositions = true;
  readonly inner = new MemorySink();
  constructor(readonly poison: Set<string>) {}
  prepare(): Promise<void> { return this.inner.prepare(); }
  positions(group: string): Promise<Map<number, bigint>> { return this.inner.positions(group); }
  close(): Promise<void> { return this.inner.close(); }
  async apply(changes: readonly ChangeEvent[], positions: ReadonlyMap<number, bigint>, group: string): Promise<ApplyOutcome> {
    if (changes.some((c) => c.op === 'INSERT' && this.poison.has(c.key.id ?? ''))) throw new SynclineError('SINK_23514', 'check constraint', { retriable: false });
    return this.inner.apply(changes, positions, group);
  }
}

/** A queue in memory that counts how often its whole view (depth, blocked rows) is read. */
class CountingDeadLetters implements DeadLetterQueue {
  letters: DeadLetter[] = [];
  reads = 0;
  async prepare(): Promise<void> {}
  async add(letters: readonly DeadLetter[]): Promise<void> { this.letters.push(...letters); }
  async list(): Promise<DeadLetterEntry[]> { return []; }
  async remove(): Promise<number> { return 0; }
  async recordFailure(): Promise<void> {}
  async depth(): Promise<{ count: number; oldestAgeSeconds: number }> { return { count: this.letters.length, oldestAgeSeconds: 0 }; }
  async blockedRows(): Promise<Set<string>> {
    this.reads++;
    return new Set(this.letters.flatMap((l) => (l.change ? [rowIdOf(l.change)] : [])));
  }
  async orphans(): Promise<DeadLetterEntry[]> { return []; }
  async close(): Promise<void> {}
}

async function start(sink: Sink, dlq: DeadLetterQueue, refreshMs: number) {
  const stream = new MemoryStream(2);
  const producer = await stream.producer();
  const events = new Events();
  const depths: number[] = [];
  events.on('apply:dead-letters', ({ count }) => depths.push(count));
  const apply = new Apply((options) => stream.consumer('g', options), sink, events, silentLogger(), {
    group: 'g', batchSize: 4, batchWaitMs: 5, clock: systemClock, deadLetters: dlq, truncate: 'apply', deadLetterRefreshMs: refreshMs,
    retry: { maxAttempts: 3, baseMs: 10, maxMs: 20, jitter: false }, endOffsets: () => stream.endOffsets(),
  });
  const stop = new AbortController();
  const running = apply.run(stop.signal);
  const publish = async (changes: ChangeEvent[]): Promise<void> => {
    await producer.publish(changes.map((c) => ({ key: partitionKeyOf(c), value: Buffer.from(JSON.stringify(c)) })));
    const ends = await stream.endOffsets();
    await waitFor('every partition applied', async () => {
      const stored = await sink.positions('g');
      return [...ends].every(([p, o]) => o === 0n || stored.get(p) === o);
    }, 10_000, 10);
  };
  const end = async (): Promise<void> => {
    stop.abort();
    await running;
  };
  return { publish, end, depths };
}

describe('apply: dead-letter depth and blocked rows during a poison flood', () => {
  it('counts what it dead-letters without re-reading the whole queue after each batch; later changes of those rows still follow them', async () => {
    const ids = Array.from({ length: 40 }, (_, i) => i + 1);
    const poison = new Set(ids.filter((id) => id % 4 === 0).map(String));
    const dlq = new CountingDeadLetters();
    const sink = new CheckSink(poison);
    const { publish, end, depths } = await start(sink, dlq, 60_000);
    try {
      // Inserts, then an update of every row: the poison rows' updates follow their inserts.
      await publish([...ids.map((id) => change(id, id)), ...ids.map((id) => change(id, 100 + id, 'UPDATE'))]);
    } finally {
      await end();
    }
    expect(dlq.letters).toHaveLength(20);
    expect(dlq.letters.filter((l) => l.errorCode === 'BLOCKED_BY_EARLIER').map((l) => l.change?.key.id).sort()).toEqual([...poison].sort());
    expect(sink.inner.rows('public.t')).toHaveLength(30);
    // One read at start; none per dead-lettering batch (the periodic refresh is 60 s away).
    expect(dlq.reads).toBe(1);
    // sync_deadletter_count followed every batch that dead-lettered.
    expect(depths.at(-1)).toBe(20);
    expect(depths.length).toBeGreaterThan(2);
  });

  it('releases a row whose entries an operator replayed at the next periodic refresh', async () => {
    const dlq = new CountingDeadLetters();
    const sink = new CheckSink(new Set(['1']));
    const { publish, end, depths } = await start(sink, dlq, 50);
    try {
      await publish([change(1, 1)]);
      expect(dlq.letters.map((l) => l.errorCode)).toEqual(['SINK_23514']);
      expect(depths.at(-1)).toBe(1);
      // The operator fixes the target and replays the entry (here: removes it, the row as the replay wrote it).
      sink.poison.clear();
      await sink.inner.apply([change(1, 1)], new Map(), 'replay');
      dlq.letters = [];
      await new Promise((r) => setTimeout(r, 100));
      // The refresh is due at the next batch: the row is released before that batch is classified.
      await publish([change(1, 2, 'UPDATE')]);
    } finally {
      await end();
    }
    expect(dlq.letters).toEqual([]);
    expect(sink.inner.rows('public.t')).toEqual([expect.objectContaining({ id: '1', v: '2' })]);
    expect(depths.at(-1)).toBe(0);
  });
});
