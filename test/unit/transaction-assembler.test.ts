import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import type { ChangeEvent } from '../../src/core/change.js';
import { formatLsn } from '../../src/core/lsn.js';
import { TransactionAssembler, type AssemblerItem } from '../../src/pipeline/transaction-assembler.js';

/** Changes of transaction `t` (commit LSN (t+1)*16) as capture would publish them. */
function transaction(t: number, size: number, prev: number | undefined): ChangeEvent[] {
  return Array.from({ length: size }, (_, i) => {
    const e = { commit_lsn: formatLsn(BigInt((t + 1) * 16)), seq: i + 1, key: { id: `${t}-${i}` } } as unknown as ChangeEvent;
    if (i === size - 1) {
      e.tx_last = true;
      if (prev !== undefined) e.tx_prev = formatLsn(BigInt((prev + 1) * 16));
    }
    return e;
  });
}

/** Lays changes out on `partitions` partitions by a key hash, each partition in publish order. */
function partitioned(changes: ChangeEvent[], partitions: number, placement: number[]): AssemblerItem[][] {
  const logs: AssemblerItem[][] = Array.from({ length: partitions }, () => []);
  changes.forEach((change, i) => {
    const p = (placement[i % placement.length] ?? 0) % partitions;
    const log = logs[p] as AssemblerItem[];
    log.push({ change, record: { partition: p, offset: BigInt(log.length), key: '', value: Buffer.alloc(0), timestamp: 0 } });
  });
  return logs;
}

describe('TransactionAssembler', () => {
  it('releases whole transactions in commit order whatever the partitions interleave (property)', () => {
    fc.assert(
      fc.property(
        fc.array(fc.integer({ min: 1, max: 6 }), { minLength: 1, maxLength: 12 }),
        fc.integer({ min: 1, max: 4 }),
        fc.array(fc.nat(), { minLength: 1, maxLength: 40 }),
        fc.array(fc.nat(), { minLength: 1, maxLength: 200 }),
        (sizes, partitions, placement, schedule) => {
          const changes = sizes.flatMap((size, t) => transaction(t, size, t === 0 ? undefined : t - 1));
          const logs = partitioned(changes, partitions, placement);
          const a = new TransactionAssembler();
          for (let p = 0; p < partitions; p++) a.startAt(p, 0n);
          const cursor = new Array<number>(partitions).fill(0);
          const out: AssemblerItem[] = [];
          const step = (p: number): void => {
            const item = logs[p]?.[cursor[p] as number];
            if (!item) return;
            cursor[p] = (cursor[p] as number) + 1;
            const released: AssemblerItem[] = [];
            a.add([item], released);
            if (a.barrierNeeded()) a.setBarrier(new Map(logs.map((l, i) => [i, BigInt(l.length)])));
            a.release(released);
            // Positions never pass a record that is still held.
            const done = new Set([...out, ...released]);
            for (const [q, pos] of a.positions()) for (const r of logs[q]?.slice(0, Number(pos)) ?? []) expect(done.has(r)).toBe(true);
            out.push(...released);
          };
          for (const s of schedule) step(s % partitions);
          for (let p = 0; p < partitions; p++) while ((cursor[p] as number) < (logs[p]?.length ?? 0)) step(p);
          // Everything released, transaction by transaction, in commit order and seq order.
          expect(out.map((i) => `${i.change?.commit_lsn}:${i.change?.seq}`)).toEqual(changes.map((c) => `${c.commit_lsn}:${c.seq}`));
          expect(a.heldRecords).toBe(0);
        },
      ),
    );
  });

  it('holds a transaction until it is whole and nothing before it can be unread', () => {
    const [t0, t1] = [transaction(0, 2, undefined), transaction(1, 1, 0)];
    const a = new TransactionAssembler();
    for (const p of [0, 1, 2]) a.startAt(p, 0n);
    const rec = (change: ChangeEvent, partition: number, offset: number): AssemblerItem => ({ change, record: { partition, offset: BigInt(offset), key: '', value: Buffer.alloc(0), timestamp: 0 } });
    const out: AssemblerItem[] = [];
    // t0's first change arrives; its last change sits in a partition not read yet.
    a.add([rec(t0[0] as ChangeEvent, 0, 0)], out);
    a.release(out);
    expect(out).toEqual([]);
    expect(a.positions().get(0)).toBe(0n); // the held record will be read again after a restart
    a.add([rec(t0[1] as ChangeEvent, 1, 0)], out);
    // Whole, but the first transaction after a start has no known predecessor: barrier.
    expect(a.barrierNeeded()).toBe(true);
    a.setBarrier(new Map([[0, 1n], [1, 1n], [2, 1n]]));
    a.release(out);
    expect(out).toEqual([]); // partition 2 has neither been read to the barrier nor shown anything newer
    a.add([rec(t1[0] as ChangeEvent, 2, 0)], out);
    a.release(out);
    expect(out.map((i) => `${i.change?.commit_lsn}:${i.change?.seq}`)).toEqual(['0/10:1', '0/10:2', '0/20:1']);
    expect(a.positions()).toEqual(new Map([[0, 1n], [1, 1n], [2, 1n]]));
    // A republished copy of a released transaction goes straight through.
    const again: AssemblerItem[] = [];
    a.add([rec(t1[0] as ChangeEvent, 2, 1)], again);
    expect(again).toHaveLength(1);
  });

  it('after a restart, a transaction at or below the stored mark passes as stale; the first newer one still waits for a barrier', () => {
    const a = new TransactionAssembler();
    a.startAt(0, 5n);
    a.startAt(1, 5n);
    expect(a.releasedUpTo).toBeUndefined();
    a.resumeAfter(BigInt(2 * 16)); // t1 was released before the restart
    const rec = (change: ChangeEvent, partition: number, offset: number): AssemblerItem => ({ change, record: { partition, offset: BigInt(offset), key: '', value: Buffer.alloc(0), timestamp: 0 } });
    const [t1, t2] = [transaction(1, 3, 0), transaction(2, 1, 1)];
    const out: AssemblerItem[] = [];
    // The tail of a republished copy of t1 (its head applied before the restart): stale, at once.
    a.add([rec(t1[2] as ChangeEvent, 0, 5)], out);
    expect(out).toHaveLength(1);
    expect(a.heldRecords).toBe(0);
    // t2 is chained to t1, but the mark vouches for nothing after it: a barrier first.
    a.add([rec(t2[0] as ChangeEvent, 1, 5)], out);
    a.release(out);
    expect(out).toHaveLength(1);
    expect(a.barrierNeeded()).toBe(true);
    a.setBarrier(new Map([[0, 6n], [1, 6n]]));
    a.release(out);
    expect(out.map((i) => i.change?.commit_lsn)).toEqual(['0/20', '0/30']);
    expect(a.releasedUpTo).toBe(BigInt(3 * 16));
    // An older mark read again (a re-assignment) does not move it back.
    a.resumeAfter(16n);
    expect(a.releasedUpTo).toBe(BigInt(3 * 16));
  });

  it('passes a barrier on partitions that already show later transactions (a backlog is not read into memory)', () => {
    const a = new TransactionAssembler();
    for (const p of [0, 1]) a.startAt(p, 0n);
    const [t0, t1] = [transaction(0, 1, undefined), transaction(1, 1, 0)];
    const out: AssemblerItem[] = [];
    a.add([{ change: t0[0] as ChangeEvent, record: { partition: 0, offset: 0n, key: '', value: Buffer.alloc(0), timestamp: 0 } }], out);
    a.add([{ change: t1[0] as ChangeEvent, record: { partition: 1, offset: 0n, key: '', value: Buffer.alloc(0), timestamp: 0 } }], out);
    expect(a.barrierNeeded()).toBe(true);
    a.setBarrier(new Map([[0, 1_000_000n], [1, 1_000_000n]])); // a million records behind
    a.release(out);
    expect(out.map((i) => i.change?.commit_lsn)).toEqual(['0/10', '0/20']);
  });

  it('waits for a known predecessor even past a barrier; lets snapshot rows through; can abandon a transaction that cannot become whole', () => {
    const a = new TransactionAssembler();
    a.startAt(0, 0n);
    const rec = (change: ChangeEvent, offset: number): AssemblerItem => ({ change, record: { partition: 0, offset: BigInt(offset), key: '', value: Buffer.alloc(0), timestamp: 0 } });
    const [t0, t1, t2] = [transaction(0, 1, undefined), transaction(1, 1, 0), transaction(2, 1, 1)];
    const out: AssemblerItem[] = [];
    a.add([rec(t0[0] as ChangeEvent, 0)], out);
    a.setBarrier(new Map([[0, 1n]]));
    a.release(out);
    expect(out).toHaveLength(1);
    // t2 arrives, t1 (its known predecessor) not: it waits, whatever the end offsets say.
    a.add([rec(t2[0] as ChangeEvent, 1)], out);
    expect(a.barrierNeeded()).toBe(false);
    a.release(out);
    expect(out).toHaveLength(1);
    const read = { ...(t2[0] as ChangeEvent), op: 'READ', tx_last: undefined, tx_prev: undefined, commit_lsn: '0/40', seq: 1 } as ChangeEvent;
    const reset = { ...read, op: 'TRUNCATE', key: {}, snapshot_reset: true } as ChangeEvent;
    a.add([rec(reset, 2), rec(read, 2)], out);
    // t0 (no op in these fixtures), then a keyless snapshot's reset and the READ at once
    expect(out.map((i) => i.change?.op)).toEqual([undefined, 'TRUNCATE', 'READ']);
    a.add([rec(t1[0] as ChangeEvent, 3)], out);
    a.release(out);
    expect(out.slice(3).map((i) => i.change?.commit_lsn)).toEqual(['0/20', '0/30']);
    // A transaction whose last change never comes (undecodable): stuck only once a later one
    // is whole (while capture may still publish it, it is not), then released as it is.
    const [t3, t4] = [transaction(3, 2, 2), transaction(4, 1, 3)];
    a.add([rec(t3[0] as ChangeEvent, 4)], out);
    expect(a.firstStuck()).toBe(false);
    a.add([rec(t4[0] as ChangeEvent, 5)], out);
    a.release(out);
    expect(a.firstStuck()).toBe(true);
    expect(a.readTo(new Map([[0, 6n]]))).toBe(true);
    const rest: AssemblerItem[] = [];
    a.releaseFirstAsIs(rest);
    a.release(rest);
    expect(rest.map((i) => `${i.change?.commit_lsn}:${i.change?.seq}`)).toEqual(['0/40:1', '0/50:1']);
    expect(a.heldRecords).toBe(0);
    expect(a.positions().get(0)).toBe(6n);
  });
});
