import { describe, expect, it } from 'vitest';
import { partitionFor, partitionKeyOf, type ChangeEvent } from '../../src/core/change.js';
import { systemClock } from '../../src/core/clock.js';
import { SynclineError } from '../../src/core/errors.js';
import { Events } from '../../src/core/events.js';
import { SharedExclusiveLock } from '../../src/core/shared-exclusive-lock.js';
import type { DeadLetter, DeadLetterEntry, DeadLetterQueue } from '../../src/dlq/dead-letter-queue.js';
import { rowIdOf } from '../../src/dlq/dead-letter-queue.js';
import { silentLogger } from '../../src/log/logger.js';
import { Apply } from '../../src/pipeline/apply.js';
import type { ApplyOutcome, Sink } from '../../src/sink/sink.js';
import { MemorySink } from '../../src/testing/memory-sink.js';
import { MemoryStream } from '../../src/testing/memory-stream.js';
import { waitFor } from '../helpers/wait.js';

const PARTITIONS = 4;

function change(id: number, op: ChangeEvent['op'] = 'INSERT'): ChangeEvent {
  const lsn = `0/${(0x1000 + id).toString(16).toUpperCase()}`;
  return {
    source: 's', schema: 'public', table: 't', op, lsn, commit_lsn: lsn, xid: id, seq: 1,
    commit_ts: '2026-12-04T00:00:00.000000Z', key: op === 'TRUNCATE' ? {} : { id: String(id) }, payload: op === 'TRUNCATE' ? null : { id: String(id), v: 'x' },
    _version: String(BigInt(0x1000 + id) * 2n ** 32n + 1n), _schema_version: 1, tx_last: true,
  };
}

/** A MemorySink that takes `lanes` batches at once, records every call, and fails the changes `poison` names. */
class LaneSink implements Sink {
  readonly storesPositions = true;
  readonly inner = new MemorySink();
  readonly calls: { ids: string[]; partitions: number[] }[] = [];
  inFlight = 0;
  maxInFlight = 0;
  constructor(readonly applyLanes: number, private readonly poison = new Set<string>()) {}
  prepare(): Promise<void> { return this.inner.prepare(); }
  positions(group: string): Promise<Map<number, bigint>> { return this.inner.positions(group); }
  close(): Promise<void> { return this.inner.close(); }
  async apply(changes: readonly ChangeEvent[], positions: ReadonlyMap<number, bigint>, group: string): Promise<ApplyOutcome> {
    this.inFlight++;
    this.maxInFlight = Math.max(this.maxInFlight, this.inFlight);
    try {
      await new Promise((r) => setTimeout(r, 5));
      if (changes.some((c) => this.poison.has(c.key.id ?? ''))) throw new SynclineError('SINK_23514', 'check constraint', { retriable: false });
      this.calls.push({ ids: changes.map((c) => c.key.id ?? 'truncate'), partitions: [...positions.keys()].sort() });
      return await this.inner.apply(changes, positions, group);
    } finally {
      this.inFlight--;
    }
  }
}

class MemoryDeadLetters implements DeadLetterQueue {
  readonly letters: DeadLetter[] = [];
  async prepare(): Promise<void> {}
  async add(letters: readonly DeadLetter[]): Promise<void> { this.letters.push(...letters); }
  async list(): Promise<DeadLetterEntry[]> { return []; }
  async remove(): Promise<number> { return 0; }
  async recordFailure(): Promise<void> {}
  async depth(): Promise<{ count: number; oldestAgeSeconds: number }> { return { count: this.letters.length, oldestAgeSeconds: 0 }; }
  async blockedRows(): Promise<Set<string>> { return new Set(this.letters.flatMap((l) => (l.change ? [rowIdOf(l.change)] : []))); }
  async orphans(): Promise<DeadLetterEntry[]> { return []; }
  async close(): Promise<void> {}
}

async function run(sink: LaneSink, changes: ChangeEvent[], deadLetters?: DeadLetterQueue): Promise<void> {
  const stream = new MemoryStream(PARTITIONS);
  const producer = await stream.producer();
  await producer.publish(changes.map((c) => ({ key: partitionKeyOf(c), value: Buffer.from(JSON.stringify(c)) })));
  const apply = new Apply((options) => stream.consumer('g', options), sink, new Events(), silentLogger(), {
    group: 'g', batchSize: 1000, batchWaitMs: 5, clock: systemClock, deadLetters, truncate: 'apply',
    retry: { maxAttempts: 3, baseMs: 10, maxMs: 20, jitter: false }, endOffsets: () => stream.endOffsets(),
  });
  const stop = new AbortController();
  const running = apply.run(stop.signal);
  const ends = await stream.endOffsets();
  await waitFor('every partition applied', async () => {
    const stored = await sink.positions('g');
    return [...ends].every(([p, o]) => o === 0n || stored.get(p) === o);
  }, 10_000, 10);
  stop.abort();
  await running;
}

const partitionOf = (id: number): number => partitionFor(partitionKeyOf(change(id)), PARTITIONS);

describe('apply lanes (Sink.applyLanes)', () => {
  it('applies a batch in lanes of whole stream partitions, each with its own partitions\' positions', async () => {
    const sink = new LaneSink(2);
    const ids = Array.from({ length: 40 }, (_, i) => i + 1);
    await run(sink, ids.map((id) => change(id)));
    expect(sink.maxInFlight).toBe(2);
    for (const call of sink.calls) {
      const lane = (call.partitions[0] ?? 0) % 2;
      expect(call.partitions.every((p) => p % 2 === lane)).toBe(true);
      expect(call.ids.every((id) => partitionOf(Number(id)) % 2 === lane)).toBe(true);
    }
    expect(sink.calls.flatMap((c) => c.ids).map(Number).sort((a, b) => a - b)).toEqual(ids);
    expect(sink.inner.rows('public.t')).toHaveLength(40);
  });

  it('applies a batch with a TRUNCATE whole, in one transaction', async () => {
    const sink = new LaneSink(2);
    await run(sink, [...[1, 2, 3, 4, 5, 6].map((id) => change(id)), change(7, 'TRUNCATE')]);
    expect(sink.maxInFlight).toBe(1);
    expect(sink.calls).toHaveLength(1);
    expect(sink.calls[0]?.partitions.length).toBeGreaterThan(1);
  });

  it('isolates only the failed lane\'s changes; the other lane\'s stay applied once', async () => {
    const poisonId = 3;
    const sink = new LaneSink(2, new Set([String(poisonId)]));
    const dlq = new MemoryDeadLetters();
    const ids = Array.from({ length: 20 }, (_, i) => i + 1);
    await run(sink, ids.map((id) => change(id)), dlq);
    expect(dlq.letters.map((l) => l.change?.key.id)).toEqual([String(poisonId)]);
    const applied = sink.calls.flatMap((c) => c.ids).map(Number);
    // Every change but the poison one is applied exactly once.
    expect(applied.sort((a, b) => a - b)).toEqual(ids.filter((id) => id !== poisonId));
  });
});

describe('SharedExclusiveLock', () => {
  it('lets shared holders overlap and an exclusive one run alone, in arrival order', async () => {
    const lock = new SharedExclusiveLock();
    const log: string[] = [];
    const hold = (name: string, exclusive: boolean, ms: number) => lock.run(exclusive, async () => {
      log.push(`+${name}`);
      await new Promise((r) => setTimeout(r, ms));
      log.push(`-${name}`);
    });
    await Promise.all([hold('a', false, 20), hold('b', false, 20), hold('x', true, 5), hold('c', false, 5)]);
    expect(log).toEqual(['+a', '+b', '-a', '-b', '+x', '-x', '+c', '-c']);
  });
});
