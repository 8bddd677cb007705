import { describe, expect, it } from 'vitest';
import type { ChangeEvent } from '../../src/core/change.js';
import { addDifference, builtInResolver, compareClocks, lastWriteWins, mergeCounters, withDeltas, type Conflict } from '../../src/sink/conflicts/resolve.js';
import { conflictOptionsOf } from '../../src/config/conflict-options.js';
import { parseConfig } from '../../src/config/load.js';
import { ConfigError } from '../../src/core/errors.js';
import { WriterBoundaries } from '../../src/pipeline/writer-boundaries.js';
import { CaptureHarness, tick } from '../helpers/capture-harness.js';
import { pgo, type RelationSpec } from '../helpers/pgoutput-encode.js';

function change(source: string, payload: Record<string, string>, before?: Record<string, string>, op: ChangeEvent['op'] = 'UPDATE'): ChangeEvent {
  return { source, schema: 'public', table: 't', op, lsn: '0/10', commit_lsn: '0/10', xid: 1, seq: 1, commit_ts: '2026-01-01T00:00:00.000001Z', key: { id: '1' }, payload, ...(before ? { before } : {}), _version: '1', _schema_version: 1 };
}

function conflict(over: Partial<Conflict> & { incoming: ChangeEvent }): Conflict {
  return {
    table: 'public.t',
    strategy: 'last_write_wins',
    run: [over.incoming],
    incomingClock: over.incoming.commit_ts,
    stored: { row: { id: '1', n: '5' }, writer: 'b', local: false, clock: '2026-01-01 00:00:00+00' },
    deltaColumns: [],
    ...over,
  };
}

describe('conflict resolvers (pure)', () => {
  it('compares clocks: timestamps of any offset to the microsecond, integers numerically', () => {
    expect(compareClocks('2026-01-01 01:00:00.000001+01', '2026-01-01T00:00:00Z')).toBe(1);
    expect(compareClocks('2026-01-01 00:00:00.5+00', '2026-01-01T00:00:00.500000Z')).toBe(0);
    expect(compareClocks('2026-01-01 00:00:00.000001+00', '2026-01-01 00:00:00.000002+00')).toBe(-1);
    expect(compareClocks('2026-01-01 05:30:00+05:30', '2026-01-01 00:00:00+00')).toBe(0);
    expect(compareClocks('10', '9')).toBe(1);
  });

  it('last_write_wins: the later clock, ties to the writer name sorting first, unknown stored clock loses', () => {
    expect(lastWriteWins('2026-01-02 00:00:00+00', 'b', '2026-01-01 00:00:00+00', 'a')).toBe('incoming');
    expect(lastWriteWins('2026-01-01 00:00:00+00', 'a', '2026-01-02 00:00:00+00', 'b')).toBe('stored');
    expect(lastWriteWins('5', 'a', '5', 'b')).toBe('incoming');
    expect(lastWriteWins('5', 'b', '5', 'a')).toBe('stored');
    expect(lastWriteWins('5', 'b', null, 'a')).toBe('incoming');
    // Both sides of a pair decide the same: at A the incoming is B's, at B it is A's.
    const atA = lastWriteWins('7', 'b', '7', 'a');
    const atB = lastWriteWins('7', 'a', '7', 'b');
    expect([atA, atB].sort()).toEqual(['incoming', 'stored']);
  });

  it('source_priority: the listed order decides, unlisted writers come last', () => {
    const r = builtInResolver('source_priority', ['east', 'west']);
    expect(r(conflict({ incoming: change('east', { id: '1' }), stored: { row: {}, writer: 'west', local: false, clock: null } })).winner).toBe('incoming');
    expect(r(conflict({ incoming: change('west', { id: '1' }), stored: { row: {}, writer: 'east', local: false, clock: null } })).winner).toBe('stored');
    expect(r(conflict({ incoming: change('other', { id: '1' }), stored: { row: {}, writer: 'west', local: false, clock: null } })).winner).toBe('stored');
    expect(builtInResolver('source_lsn_priority')(conflict({ incoming: change('x', { id: '1' }) })).winner).toBe('incoming');
  });

  it('delta: counters take the whole run of differences whoever wins; without old values the decision stands', () => {
    const r = withDeltas(builtInResolver('last_write_wins'));
    const older = change('a', { id: '1', n: '11', name: 'x' }, { id: '1', n: '10', name: 'w' });
    const newer = change('a', { id: '1', n: '13', name: 'y' }, { id: '1', n: '11', name: 'x' });
    const lost = r(conflict({ incoming: newer, run: [older, newer], incomingClock: '1', stored: { row: { id: '1', n: '20', name: 'z' }, writer: 'b', local: true, clock: '2' }, deltaColumns: ['n'] }));
    expect(lost).toEqual({ winner: 'stored', row: { id: '1', n: '23', name: 'z' } });
    const won = r(conflict({ incoming: newer, run: [newer], incomingClock: '3', stored: { row: { id: '1', n: '20', name: 'z' }, writer: 'b', local: true, clock: '2' }, deltaColumns: ['n'] }));
    expect(won).toEqual({ winner: 'incoming', row: { id: '1', n: '22', name: 'y' } });
    expect(r(conflict({ incoming: change('a', { id: '1', n: '3' }), incomingClock: '3', stored: { row: { id: '1', n: '5' }, writer: 'b', local: false, clock: '2' }, deltaColumns: ['n'] }))).toEqual({ winner: 'incoming' });
    expect(mergeCounters([change('a', { n: '4' }, undefined, 'INSERT')], { n: '10' }, ['n'])).toEqual({ n: '14' });
    expect(addDifference('1.5', '2.25', '2')).toBe('1.75');
    expect(addDifference('9007199254740993', '2', '1')).toBe('9007199254740994');
    expect(addDifference('x', '2', '1')).toBeUndefined();
  });
});

const T: RelationSpec = { id: 1, schema: 'public', name: 't', columns: [{ name: 'id', key: true }, { name: 'v' }] };

describe('capture with source.skip_origins (PostgreSQL 15: the Origin message)', () => {
  it('drops the changes of a transaction with an origin, keeps the others, and still confirms past it', async () => {
    const h = new CaptureHarness({ skipOrigins: true });
    h.feed(10n, pgo.begin(20n, 500));
    h.feed(11n, pgo.origin('from_b', 7n));
    h.feed(12n, pgo.relation(T));
    h.feed(13n, pgo.insert(1, ['1', 'looped']));
    h.feed(20n, pgo.commit(20n, 21n));
    h.feed(30n, pgo.begin(40n, 501));
    h.feed(31n, pgo.insert(1, ['2', 'local']));
    h.feed(40n, pgo.commit(40n, 41n));
    h.feed(50n, pgo.begin(60n, 502));
    h.feed(51n, pgo.origin('from_b'));
    h.feed(52n, pgo.update(1, ['2', 'looped again']));
    h.feed(60n, pgo.commit(60n, 61n));
    await tick(30);
    expect(h.published.map((e) => `${e.op} ${e.payload?.v}`)).toEqual(['INSERT local']);
    // The only published change has no predecessor: skipped transactions are not in the chain.
    expect(h.published[0]?.tx_prev).toBeUndefined();
    await h.close();
    expect(h.acknowledged.at(-1)).toBe(61n);
  });

  it('drops a streamed transaction whose first chunk carried an origin; without skip_origins keeps it', async () => {
    for (const skip of [true, false]) {
      const h = new CaptureHarness({ skipOrigins: skip });
      h.feed(10n, pgo.begin(20n, 500));
      h.feed(11n, pgo.relation(T));
      h.feed(12n, pgo.insert(1, ['1', 'plain']));
      h.feed(20n, pgo.commit(20n, 21n));
      h.feed(30n, pgo.streamStart(600, true));
      h.feed(31n, pgo.origin('from_b'));
      h.feed(32n, pgo.insert(1, ['2', 'streamed'], 600));
      h.feed(33n, pgo.streamStop());
      h.feed(40n, pgo.streamCommit(600, 40n, 41n));
      await tick(30);
      expect(h.published.map((e) => e.payload?.v)).toEqual(skip ? ['plain'] : ['plain', 'streamed']);
      await h.close();
    }
  });
});

describe('many-writers configuration', () => {
  const base = 'source:\n  slots: [{ name: s, publication: p }]\n';
  const issues = (sink: string): string[] => {
    try {
      parseConfig(`${base}sink:\n${sink}`, {});
      return [];
    } catch (err) {
      if (err instanceof ConfigError) return [...err.issues];
      throw err;
    }
  };

  it('accepts the keys on a postgres sink, strategies on every SQL sink, and refuses them elsewhere, each with its path', () => {
    expect(issues('  conflict_strategy: last_write_wins\n  lww_column: updated_at\n  origin: from_a\n  delta_columns: { accounts: [hits] }\n  writers: { a: [accounts] }\n')).toEqual([]);
    for (const type of ['mysql', 'sqlite']) {
      expect(issues(`  type: ${type}\n  conflict_strategy: last_write_wins\n  delta_columns: { accounts: [hits] }\n`)).toEqual([]);
      expect(issues(`  type: ${type}\n  origin: from_a\n`)).toEqual([expect.stringMatching(/^sink\.origin: .*postgres sink only/)]);
    }
    const refused = issues('  type: redis\n  conflict_strategy: last_write_wins\n  origin: from_a\n  delta_columns: { accounts: [hits] }\n');
    expect(refused).toEqual(expect.arrayContaining([expect.stringMatching(/^sink\.origin: .*postgres sink only/), expect.stringMatching(/^sink\.conflict_strategy: .*SQL sinks only/), expect.stringMatching(/^sink\.delta_columns: /)]));
    expect(issues('  conflict_strategy: source_priority\n')).toEqual([expect.stringMatching(/^sink\.source_priority: .*ordered list/)]);
    expect(issues('  conflict_strategy: newest\n')).toEqual([expect.stringMatching(/^sink\.conflict_strategy: /)]);
  });

  it('library resolvers replace the strategy; no tracking without one', () => {
    const config = parseConfig(`${base}sink:\n  url: postgres://t/db\n`, {});
    expect(conflictOptionsOf(config)).toBeUndefined();
    expect(conflictOptionsOf(config, () => ({ winner: 'stored' }))?.strategy).toBe('custom');
    const deltas = parseConfig(`${base}sink:\n  url: postgres://t/db\n  delta_columns: { accounts: [hits] }\n`, {});
    expect(conflictOptionsOf(deltas)?.deltaColumns.get('public.accounts')).toEqual(['hits']);
  });

  it('sink.writers: owners only; undeclared tables are open', () => {
    const w = new WriterBoundaries({ a: ['accounts'], b: ['public.accounts', 'other.t'] });
    expect(w.refuse({ source: 'a', schema: 'public', table: 'accounts' })).toBeUndefined();
    expect(w.refuse({ source: 'c', schema: 'public', table: 'accounts' })?.code).toBe('NOT_OWNER');
    expect(w.refuse({ source: 'a', schema: 'other', table: 't' })?.message).toMatch(/source a does not own other\.t \(sink\.writers: b\)/);
    expect(w.refuse({ source: 'c', schema: 'public', table: 'free' })).toBeUndefined();
    expect(w.shared()).toEqual([['public.accounts', ['a', 'b']]]);
  });
});
