import { expect } from 'vitest';
import type { ChangeEvent, Row } from '../../src/core/change.js';
import type { Sink } from '../../src/sink/sink.js';
import { formatLsn } from '../../src/core/lsn.js';
import { builtInResolver, withDeltas, type ConflictResolver } from '../../src/sink/conflicts/resolve.js';
import type { ConflictOptions } from '../../src/sink/sql/sql-sink.js';

/** Conflict tracking options of a sink under test: last_write_wins unless a resolver is given; `deltas`: delta columns by table. */
export function tracking(resolver: ConflictResolver = builtInResolver('last_write_wins'), deltas: [string, string[]][] = []): ConflictOptions {
  return { strategy: 'last_write_wins', resolver: withDeltas(resolver), deltaColumns: new Map(deltas), localSource: 'local' };
}

/** source_priority tracking, the first of `order` first. */
export function priorityTracking(order: string[]): ConflictOptions {
  return { strategy: 'source_priority', resolver: withDeltas(builtInResolver('source_priority', order)), deltaColumns: new Map(), localSource: 'local' };
}

/**
 * Changes to `public.acc` (id, v, n) of any source, each with a larger LSN than the one
 * before, whatever its source: LSNs of different sources say nothing about which came last.
 */
export function changeMaker(table = 'acc'): (source: string, op: ChangeEvent['op'], id: string, payload: Row | null, commitTs: string, before?: Row) => ChangeEvent {
  let lsn = 0x1000n;
  return (source, op, id, payload, commitTs, before) => {
    lsn += 0x10n;
    return {
      source, schema: 'public', table, op, lsn: formatLsn(lsn), commit_lsn: formatLsn(lsn), xid: 1, seq: 1, commit_ts: commitTs,
      key: { id }, payload, ...(before ? { before } : {}), _version: String((lsn << 32n) + 1n), _schema_version: 1,
    };
  };
}

/** A change of `source` at its server's LSN `lsn` (LSNs of different servers are unrelated), committed at `ts`. */
export function changeAt(source: string, lsn: number, ts: string, op: ChangeEvent['op'], table: string, key: Row, payload: Row | null, before?: Row, seq = 1): ChangeEvent {
  const l = BigInt(lsn);
  return { source, schema: 'public', table, op, lsn: formatLsn(l), commit_lsn: formatLsn(l), xid: 1, seq, commit_ts: ts, key, payload, ...(before ? { before } : {}), _version: String((l << 32n) + BigInt(seq)), _schema_version: 1 };
}

/**
 * Fan-in with a truncation, on an empty tracked `acc` (id, v, n); `ids`: the target's ids in
 * order. Source a's server is far ahead in LSNs: its truncation must not make b's later
 * changes stale, and must keep the rows written after it by clock.
 */
export async function truncationScenario(sink: Sink, ids: () => Promise<string[]>): Promise<void> {
  const acc = (source: string, lsn: number, ts: string, id: string, v: string): ChangeEvent => changeAt(source, lsn, `2026-01-01T00:00:${ts}Z`, 'INSERT', 'acc', { id }, { id, v, n: '1' });
  await sink.apply([acc('a', 0x9000000, '01', 'a1', 'a')], new Map(), 'ga');
  await sink.apply([acc('b', 0x100, '02', 'b-before', 'b'), acc('b', 0x200, '09', 'b-after', 'b')], new Map(), 'gb');
  const t = await sink.apply([changeAt('a', 0x9000100, '2026-01-01T00:00:05Z', 'TRUNCATE', 'acc', {}, null)], new Map(), 'ga');
  expect(t.applied).toBe(1);
  expect(await ids()).toEqual(['b-after']);
  // b writes on with LSNs far below a's watermark: applied, not stale.
  expect(await sink.apply([acc('b', 0x300, '10', 'b-new', 'b')], new Map(), 'gb')).toMatchObject({ applied: 1, stale: 0 });
  // a's own replays from before its truncation stay out; its newer writes go in.
  expect((await sink.apply([acc('a', 0x9000000, '01', 'a1', 'a')], new Map(), 'ga')).applied).toBe(0);
  await sink.apply([acc('a', 0x9000200, '11', 'a2', 'a')], new Map(), 'ga');
  expect(await ids()).toEqual(['a2', 'b-after', 'b-new']);
}

/**
 * Fan-in into a tracked keyless `bag` (v text, n int); `bag`: its rows as `v:n`, sorted;
 * `markReset`: marks the table's snapshot as applied (after it a missing row is drift for
 * one writer). Each source's changes are new against its own versions; a row both sides
 * deleted is stale for the second, not a dead letter.
 */
export async function keylessScenario(sink: Sink, bag: () => Promise<string[]>, markReset: () => Promise<void>): Promise<void> {
  const x = (seq: number): ChangeEvent => changeAt('a', 0x9000000, '2026-01-01T00:00:01Z', 'INSERT', 'bag', {}, { v: 'x', n: '1' }, undefined, seq);
  await sink.apply([x(1), x(2)], new Map(), 'ga');
  const y = changeAt('b', 0x100, '2026-01-01T00:00:02Z', 'INSERT', 'bag', {}, { v: 'y', n: '2' });
  expect(await sink.apply([y], new Map(), 'gb')).toMatchObject({ applied: 1, stale: 0 });
  expect(await bag()).toEqual(['x:1', 'x:1', 'y:2']);
  await markReset();
  await sink.apply([changeAt('a', 0x9000100, '2026-01-01T00:00:03Z', 'DELETE', 'bag', {}, null, { v: 'y', n: '2' })], new Map(), 'ga');
  expect(await sink.apply([changeAt('b', 0x200, '2026-01-01T00:00:03Z', 'DELETE', 'bag', {}, null, { v: 'y', n: '2' })], new Map(), 'gb')).toMatchObject({ applied: 0, stale: 1 });
  // Replays of either source change nothing.
  await sink.apply([y, x(1)], new Map(), 'gb');
  await sink.apply([x(1), x(2)], new Map(), 'ga');
  expect(await bag()).toEqual(['x:1', 'x:1']);
}

/**
 * A change of `source` to `public.acc` keyed by `id`, each with a larger LSN than the last
 * (whatever its source: LSNs of different sources say nothing about which write came last).
 */
export const conflictChange = changeMaker();
