import { describe, expect, it } from 'vitest';
import type { ChangeEvent } from '../../src/core/change.js';
import type { DeadLetter, DeadLetterQueue } from '../../src/dlq/dead-letter-queue.js';

function change(id: number, commitLsn: string, seq: number, table = 'orders'): ChangeEvent {
  return {
    source: 'src',
    schema: 'public',
    table,
    op: 'UPDATE',
    lsn: commitLsn,
    commit_lsn: commitLsn,
    xid: 7,
    seq,
    commit_ts: '2026-11-27T00:00:00.000Z',
    key: { id },
    payload: { id, v: 13 },
    unchanged: [],
    _version: '1',
    _schema_version: 1,
  } as unknown as ChangeEvent;
}

function letter(id: number, commitLsn: string, seq: number, offset: bigint, error = 'new row violates check constraint "no_thirteen"', table = 'orders'): DeadLetter {
  return { change: change(id, commitLsn, seq, table), error, errorCode: '23514', attempts: 1, partition: 0, offset };
}

/**
 * What every dead-letter store promises (the PostgreSQL table and the Kafka topic): entries
 * keep change, error, attempts, failure times and stream position; adding the same change
 * again is one entry; filters; removal; what another handle wrote is visible.
 */
export function describeDeadLetterContract(name: string, newStore: () => Promise<() => DeadLetterQueue>): void {
  describe(`dead-letter queue contract: ${name}`, () => {
    it('keeps each entry whole, merges a re-added change into one entry, lists oldest first', async () => {
      const q = (await newStore())();
      try {
        await q.prepare();
        await q.add([letter(2, '0/20', 1, 11n), letter(1, '0/10', 0, 10n)]);
        // The same change again, from another stream offset (a capture restart republished it).
        await q.add([letter(2, '0/20', 1, 12n, 'still failing')]);
        const all = await q.list({});
        expect(all.map((e) => e.rowKey)).toEqual(['[1]', '[2]']);
        const [first, second] = all;
        expect(first?.change?.key).toEqual({ id: 1 });
        expect(first?.commitLsn).toBe('0/10');
        expect(first?.table).toBe('public.orders');
        expect(first?.errorCode).toBe('23514');
        expect(first?.offset).toBe(10n);
        expect(second?.attempts).toBe(2);
        expect(second?.error).toBe('still failing');
        expect(second?.offset).toBe(11n);
        expect(second?.firstFailedAt.getTime()).toBeLessThanOrEqual(second?.lastFailedAt.getTime() ?? 0);
        expect(await q.depth()).toMatchObject({ count: 2 });
        expect(await q.blockedRows()).toEqual(new Set(['public.orders\u0000[1]', 'public.orders\u0000[2]']));
      } finally {
        await q.close();
      }
    });

    it('filters by id, table, error and age; removes; records another failure', async () => {
      const q = (await newStore())();
      try {
        await q.prepare();
        await q.add([letter(1, '0/10', 0, 10n), letter(5, '0/50', 0, 50n, 'deadlock detected', 'users')]);
        const [users] = await q.list({ table: 'users' });
        expect(users?.rowKey).toBe('[5]');
        expect((await q.list({ error: 'DEADLOCK' })).map((e) => e.id)).toEqual([users?.id]);
        expect(await q.list({ olderThanMs: 3_600_000 })).toEqual([]);
        expect((await q.list({ ids: [users?.id as string] })).length).toBe(1);
        await q.recordFailure(users?.id as string, 'failed again');
        const [again] = await q.list({ ids: [users?.id as string] });
        expect(again?.attempts).toBe(2);
        expect(again?.error).toBe('failed again');
        expect(await q.remove([users?.id as string, '999999'])).toBe(1);
        expect((await q.list({})).map((e) => e.rowKey)).toEqual(['[1]']);
        expect((await q.depth()).count).toBe(1);
      } finally {
        await q.close();
      }
    });

    it('keeps the first real error when the same change fails again as BLOCKED_BY_EARLIER or with another code', async () => {
      const q = (await newStore())();
      try {
        await q.prepare();
        const tooLong = 'applying to the sink failed: value too long for type character varying(3) (SQLSTATE 22001)';
        await q.add([{ ...letter(7, '0/70', 0, 70n, tooLong), errorCode: 'SINK_22001' }]);
        // A re-read of the change (crash before the position commit, or apply --from) is
        // blocked by its own entry: the entry must keep why it failed.
        await q.add([{ ...letter(7, '0/70', 0, 71n, 'an earlier change to this row is in the dead-letter queue'), errorCode: 'BLOCKED_BY_EARLIER' }]);
        let [entry] = await q.list({});
        expect(entry?.errorCode).toBe('SINK_22001');
        expect(entry?.error).toBe(tooLong);
        expect(entry?.attempts).toBe(2);
        expect(entry?.lastFailedAt.getTime()).toBeGreaterThanOrEqual(entry?.firstFailedAt.getTime() ?? Infinity);
        expect((await q.list({ error: 'value too long' })).length).toBe(1);
        // Another real code later: still the first diagnosis, one more attempt.
        await q.add([{ ...letter(7, '0/70', 0, 72n, 'deadlock detected'), errorCode: 'SINK_40P01' }]);
        [entry] = await q.list({});
        expect(entry?.errorCode).toBe('SINK_22001');
        expect(entry?.error).toBe(tooLong);
        expect(entry?.attempts).toBe(3);
        // A change first dead-lettered as blocked that then fails for real gets the real error.
        await q.add([{ ...letter(8, '0/80', 0, 80n, 'an earlier change to this row is in the dead-letter queue'), errorCode: 'BLOCKED_BY_EARLIER' }]);
        await q.add([{ ...letter(8, '0/80', 0, 81n, 'value too long'), errorCode: 'SINK_22001' }]);
        const [, blocked] = await q.list({});
        expect(blocked?.errorCode).toBe('SINK_22001');
        expect(blocked?.error).toBe('value too long');
        expect(blocked?.attempts).toBe(2);
        // A change held with its table (TABLE_BLOCKED) that then fails for real gets the real
        // error; re-read while still held, it keeps it.
        await q.add([{ ...letter(9, '0/90', 0, 90n, 'the target table cannot take this table\'s changes'), errorCode: 'TABLE_BLOCKED' }]);
        await q.add([{ ...letter(9, '0/90', 0, 91n, 'check violation'), errorCode: 'SINK_23514' }]);
        await q.add([{ ...letter(9, '0/90', 0, 92n, 'the target table cannot take this table\'s changes'), errorCode: 'TABLE_BLOCKED' }]);
        const [, , held] = await q.list({});
        expect(held?.errorCode).toBe('SINK_23514');
        expect(held?.error).toBe('check violation');
        // A replay that fails records its code with its message.
        await q.recordFailure(held?.id as string, 'still too long', 'SINK_22001');
        const [again] = await q.list({ ids: [held?.id as string] });
        expect(again).toMatchObject({ errorCode: 'SINK_22001', error: 'still too long', attempts: 4 });
      } finally {
        await q.close();
      }
    });

    it('orphans: the entries of rows whose oldest entry waits for an entry that is gone', async () => {
      const q = (await newStore())();
      try {
        await q.prepare();
        const waiting = (id: number, lsn: string, offset: bigint): DeadLetter => ({ ...letter(id, lsn, 0, offset), errorCode: 'BLOCKED_BY_EARLIER' });
        // Row 5: poison then a follower; row 6: its poison was replayed, two followers are left.
        await q.add([letter(5, '0/50', 0, 50n), waiting(5, '0/51', 51n), letter(6, '0/60', 0, 60n), waiting(6, '0/62', 62n), waiting(6, '0/61', 61n)]);
        expect(await q.orphans(10)).toEqual([]);
        const [poison6] = (await q.list({})).filter((e) => e.rowKey === '[6]');
        await q.remove([poison6?.id as string]);
        expect((await q.orphans(10)).map((e) => e.commitLsn)).toEqual(['0/61', '0/62']);
        expect((await q.orphans(1)).map((e) => e.commitLsn)).toEqual(['0/61']);
      } finally {
        await q.close();
      }
    });

    it('an id no entry can have (dlq show abc) names nothing instead of failing', async () => {
      const q = (await newStore())();
      try {
        await q.prepare();
        await q.add([letter(7, '0/70', 0, 70n)]);
        for (const id of ['abc', '1e3', '99999999999999999999']) {
          expect(await q.list({ ids: [id] })).toEqual([]);
          expect(await q.remove([id])).toBe(0);
          await q.recordFailure(id, 'x');
        }
        expect((await q.depth()).count).toBe(1);
      } finally {
        await q.close();
      }
    });

    it('keeps undecodable records by stream position', async () => {
      const q = (await newStore())();
      try {
        await q.prepare();
        const raw: DeadLetter = { change: undefined, raw: '{not json', error: 'undecodable record', errorCode: 'DECODE_FAILED', attempts: 1, partition: 1, offset: 99n };
        await q.add([raw]);
        await q.add([raw]);
        const entries = await q.list({});
        expect(entries).toHaveLength(1);
        expect(entries[0]?.raw).toBe('{not json');
        expect(entries[0]?.change).toBeUndefined();
        expect(await q.blockedRows()).toEqual(new Set());
      } finally {
        await q.close();
      }
    });

    it('a second handle (another process) sees what the first wrote and removed', async () => {
      const open = await newStore();
      const a = open();
      const b = open();
      try {
        await a.prepare();
        await b.prepare();
        await a.add([letter(3, '0/30', 0, 30n)]);
        const seen = await b.list({});
        expect(seen.map((e) => e.rowKey)).toEqual(['[3]']);
        expect(await b.remove(seen.map((e) => e.id))).toBe(1);
        expect(await a.list({})).toEqual([]);
        expect((await a.depth()).count).toBe(0);
      } finally {
        await a.close();
        await b.close();
      }
    });
  });
}
