import { describe, expect, it } from 'vitest';
import type { ChangeEvent } from '../../src/core/change.js';
import { isWidening, planEvolution, renamesSince, withKnownAttnums, withRenamedColumns, type RecordedColumn, type TableDefinition, type TargetColumnShape } from '../../src/core/schema-evolution.js';

const col = (name: string, attnum: number, type = 'text', key = false): RecordedColumn => ({ name, type, type_oid: 0, typmod: -1, attnum, not_null: key, key });
const def = (version: number, ...columns: RecordedColumn[]): TableDefinition => ({ version, columns });
const target = (cols: Record<string, string | [string, boolean]>): Map<string, TargetColumnShape> =>
  new Map(Object.entries(cols).map(([name, t]) => [name, typeof t === 'string' ? { type: t, notNull: false } : { type: t[0], notNull: t[1] }]));
const options = (mode: 'none' | 'add_columns' | 'full', dropColumns: 'keep' | 'drop' = 'keep') => ({ mode, dropColumns, typeFor: (c: RecordedColumn) => c.type });

const V1 = def(1, col('id', 1, 'integer', true), col('v', 2, 'integer'), col('note', 3), col('legacy', 4));
const V2 = def(2, col('id', 1, 'integer', true), col('v', 2, 'integer'), col('note', 3), col('legacy', 4), col('added', 5, 'numeric(12,2)'));
const V3 = def(3, col('id', 1, 'integer', true), col('v', 2, 'integer'), col('note', 3), col('added', 5, 'numeric(12,2)'));
const V4 = def(4, col('id', 1, 'integer', true), col('v', 2, 'integer'), col('remark', 3), col('added', 5, 'numeric(12,2)'));
const V5 = def(5, col('id', 1, 'integer', true), col('v', 2, 'bigint'), col('remark', 3), col('added', 5, 'numeric(12,2)'));
const AT_V1 = { id: 'integer', v: 'integer', note: 'text', legacy: 'text' };

describe('planEvolution', () => {
  it('full: adds, drops, renames (same attnum) and widens, from the target as it is', () => {
    expect(planEvolution([V1, V2, V3, V4, V5], target(AT_V1), options('full', 'drop')).steps).toEqual([
      { kind: 'widen', column: col('v', 2, 'bigint'), notNull: false },
      { kind: 'rename', from: 'note', to: 'remark' },
      { kind: 'add', column: col('added', 5, 'numeric(12,2)') },
      { kind: 'drop', name: 'legacy' },
    ]);
  });

  it('is empty once applied (a plan made again after a crash holds only what is left)', () => {
    expect(planEvolution([V1, V2, V3, V4, V5], target({ id: 'integer', v: 'bigint', remark: 'text', added: 'numeric(12,2)' }), options('full', 'drop'))).toEqual({ steps: [], mismatches: [] });
    expect(planEvolution([V1, V2, V3, V4, V5], target({ id: 'integer', v: 'integer', remark: 'text', legacy: 'text' }), options('full', 'drop')).steps.map((s) => s.kind)).toEqual(['widen', 'add', 'drop']);
  });

  it('add_columns: adds and renames; keeps a dropped column, NOT NULL made nullable; no type change', () => {
    expect(planEvolution([V1, V2, V3, V4, V5], target({ ...AT_V1, legacy: ['text', true] }), options('add_columns')).steps).toEqual([
      { kind: 'rename', from: 'note', to: 'remark' },
      { kind: 'add', column: col('added', 5, 'numeric(12,2)') },
      { kind: 'nullable', name: 'legacy' },
    ]);
  });

  it('none plans nothing; a column the source had from the first definition is not added (the target is wrong, not old)', () => {
    expect(planEvolution([V1, V2], target(AT_V1), options('none')).steps).toEqual([]);
    expect(planEvolution([V1, V2], target({ id: 'integer', v: 'integer', note: 'text' }), options('full')).steps).toEqual([{ kind: 'add', column: col('added', 5, 'numeric(12,2)') }]);
  });

  it('a narrowing type change is a mismatch; a target type of the user’s own is left alone', () => {
    const narrowed = def(6, col('id', 1, 'integer', true), col('v', 2, 'smallint'), col('remark', 3), col('added', 5, 'numeric(12,2)'));
    const plan = planEvolution([V4, V5, narrowed], target({ id: 'integer', v: 'bigint', remark: 'text', added: 'numeric(12,2)' }), options('full'));
    expect(plan.mismatches).toEqual(['column v changed type at the source from bigint to smallint, which is not a widening']);
    expect(planEvolution([V4, V5], target({ id: 'integer', v: 'numeric', remark: 'text', added: 'numeric(12,2)' }), options('full'))).toEqual({ steps: [], mismatches: [] });
  });
});

describe('a column dropped and another added under its name', () => {
  const before = def(1, col('id', 1, 'integer', true), col('c', 2, 'integer'));
  const after = def(2, col('id', 1, 'integer', true), col('c', 3, 'text'));

  it('is dropped and added (full, drop), else the table is held: the target column is the dropped one', () => {
    expect(planEvolution([before, after], target({ id: 'integer', c: 'integer' }), options('full', 'drop')).steps).toEqual([{ kind: 'drop', name: 'c' }, { kind: 'add', column: col('c', 3, 'text') }]);
    for (const mode of ['full', 'add_columns'] as const) {
      const plan = planEvolution([before, after], target({ id: 'integer', c: 'integer' }), options(mode));
      expect(plan.steps).toEqual([]);
      expect(plan.mismatches).toEqual([expect.stringContaining('column c (integer) was dropped at the source and another column c (text) added')]);
    }
  });

  it('plans nothing left once applied; the new column is added once the old one is renamed aside', () => {
    expect(planEvolution([before, after], target({ id: 'integer', c: 'text' }), options('full', 'drop'))).toEqual({ steps: [], mismatches: [] });
    expect(planEvolution([before, after], target({ id: 'integer', c_old: 'integer' }), options('add_columns'))).toEqual({ steps: [{ kind: 'add', column: col('c', 3, 'text') }], mismatches: [] });
  });

  it('RENAME c TO x; ADD c stays a rename', () => {
    const renamed = def(2, col('id', 1, 'integer', true), col('x', 2, 'integer'), col('c', 3, 'text'));
    expect(planEvolution([before, renamed], target({ id: 'integer', c: 'integer' }), options('add_columns'))).toEqual({
      steps: [{ kind: 'rename', from: 'c', to: 'x' }, { kind: 'add', column: col('c', 3, 'text') }],
      mismatches: [],
    });
  });
});

describe('isWidening', () => {
  it.each([
    ['integer', 'bigint', true],
    ['smallint', 'numeric', true],
    ['bigint', 'integer', false],
    ['character varying(10)', 'character varying(20)', true],
    ['character varying(20)', 'character varying(10)', false],
    ['character varying(20)', 'text', true],
    ['text', 'character varying(20)', false],
    ['numeric(10,2)', 'numeric(12,2)', true],
    ['numeric(10,2)', 'numeric(10,3)', false],
    ['numeric(10,2)', 'numeric(12,4)', true],
    ['real', 'double precision', true],
    ['integer', 'text', false],
  ])('%s → %s: %s', (from, to, widening) => expect(isWidening(from, to)).toBe(widening));
});

describe('changes of an older definition', () => {
  it('carry renamed columns under their newest name', () => {
    const renames = renamesSince([V1, V2, V3, V4, V5], 3);
    expect([...renames]).toEqual([['note', 'remark']]);
    const change = { key: { id: '1' }, payload: { id: '1', note: 'x' }, before: { id: '1', note: 'y' }, unchanged: ['note'] } as unknown as ChangeEvent;
    expect(withRenamedColumns(change, renames)).toMatchObject({ payload: { id: '1', remark: 'x' }, before: { id: '1', remark: 'y' }, unchanged: ['remark'] });
    expect(renamesSince([V1, V2, V3, V4, V5], 5).size).toBe(0);
  });
});

describe('withKnownAttnums', () => {
  it('a column recorded late keeps attnum null unless the next definition has its name; then evolution holds rather than guess a rename', () => {
    const unknown = (c: RecordedColumn): RecordedColumn => ({ ...c, attnum: null });
    const v3 = def(3, unknown(col('id', 1, 'integer', true)), unknown(col('v', 2, 'integer')), unknown(col('note', 3)), unknown(col('added', 5, 'numeric(12,2)')));
    const history = withKnownAttnums([v3, V4]);
    // Same name in V4: known; `note` (renamed to remark, or dropped and remark added?) stays unknown.
    expect(history[0]?.columns?.map((c) => c.attnum)).toEqual([1, 2, null, 5]);
    expect(renamesSince(history, 3).size).toBe(0);
    const target = new Map<string, TargetColumnShape>([
      ['id', { type: 'integer', notNull: true }],
      ['v', { type: 'integer', notNull: true }],
      ['note', { type: 'text', notNull: false }],
      ['added', { type: 'numeric(12,2)', notNull: false }],
    ]);
    const plan = planEvolution(history, target, { mode: 'full', dropColumns: 'drop', typeFor: (c) => c.type });
    expect(plan.steps).toEqual([]);
    expect(plan.mismatches.join()).toMatch(/with note .*became remark .*cannot be told/);
    // An earlier definition recorded in time knows note's attnum: the rename is certain.
    const known = planEvolution(withKnownAttnums([V2, v3, V4]), target, { mode: 'full', dropColumns: 'drop', typeFor: (c) => c.type });
    expect(known.mismatches).toEqual([]);
    expect(known.steps).toContainEqual({ kind: 'rename', from: 'note', to: 'remark' });
  });

  it('red-team repro: DROP COLUMN a; ADD COLUMN b recorded late is never taken for a rename of a to b', () => {
    const v1 = def(1, col('id', 1, 'integer', true), { ...col('a', 2), attnum: null });
    const v2 = def(2, col('id', 1, 'integer', true), col('b', 3));
    const history = withKnownAttnums([v1, v2]);
    const target = new Map<string, TargetColumnShape>([['id', { type: 'integer', notNull: true }], ['a', { type: 'text', notNull: false }]]);
    const plan = planEvolution(history, target, { mode: 'add_columns', dropColumns: 'keep', typeFor: (c) => c.type });
    expect(plan.steps.filter((s) => s.kind === 'rename')).toEqual([]);
    expect(plan.mismatches.length).toBe(1);
    expect(renamesSince(history, 1).size).toBe(0);
  });
});
