import { describe, expect, it } from 'vitest';
import type { ChangeEvent, Row } from '../../src/core/change.js';
import { addDifferences, countAcrossDelete } from '../../src/sink/conflicts/incarnations.js';

const at = (s: string): string => `2026-01-01T00:00:${s}Z`;

function update(n: number, clock: string, before: { n: number; at: string }): ChangeEvent {
  const payload: Row = { id: 'k', n: String(n), at: at(clock) };
  return { source: 'a', schema: 'public', table: 't', op: 'UPDATE', lsn: '0/10', commit_lsn: '0/10', xid: 1, seq: 1, commit_ts: at(clock), key: { id: 'k' }, payload, before: { id: 'k', n: String(before.n), at: at(before.at) }, _version: '1', _schema_version: 1 };
}

const clockOf = (c: ChangeEvent): string | null => c.payload?.at ?? c.commit_ts;

describe('delta counters across a delete (pure)', () => {
  it('leaves out the changes no later than the delete and buries their differences in its tombstone', () => {
    const run = [update(6, '01', { n: 5, at: '00' }), update(7, '02', { n: 6, at: '01' })];
    const counted = countAcrossDelete(run, { clock: at('05'), counters: { n: '5' } }, clockOf, 'at', ['n']);
    expect(counted.run).toEqual([]);
    expect(counted.counters).toEqual({ n: '7' });
  });

  it('a later change made to a copy of the deleted row takes the tombstone’s counters along (its old values lowered by them), once', () => {
    const revive = update(8, '06', { n: 7, at: '02' });
    const next = update(9, '07', { n: 8, at: '06' });
    const counted = countAcrossDelete([revive, next], { clock: at('05'), counters: { n: '7' } }, clockOf, 'at', ['n']);
    expect(counted.run).toEqual([{ ...revive, before: { ...revive.before, n: '0' } }, next]);
    expect(counted.counters).toBeNull();
  });

  it('a later change to the row written since the delete counts its difference; unknown counters bury nothing', () => {
    const since = update(3, '07', { n: 2, at: '06' });
    expect(countAcrossDelete([since], { clock: at('05'), counters: { n: '7' } }, clockOf, 'at', ['n'])).toEqual({ run: [since] });
    const old = update(6, '01', { n: 5, at: '00' });
    expect(countAcrossDelete([old, since], { clock: at('05'), counters: null }, clockOf, 'at', ['n'])).toEqual({ run: [since] });
  });

  it('adds differences exactly, and not without old values', () => {
    expect(addDifferences({ n: '9007199254740993' }, [update(11, '01', { n: 10, at: '00' })], ['n'])).toEqual({ n: '9007199254740994' });
    const noOld = { ...update(11, '01', { n: 10, at: '00' }), before: null };
    expect(addDifferences({ n: '1' }, [noOld], ['n'])).toBeUndefined();
  });
});
