import { describe, expect, it } from 'vitest';
import type { ChangeEvent } from '../../src/core/change.js';
import type { DefinitionLookup, TableDefinition } from '../../src/core/schema-evolution.js';
import type { Item } from '../../src/pipeline/apply-context.js';
import { UnrecordedColumns } from '../../src/pipeline/unrecorded-columns.js';
import { col } from '../helpers/evolution-fixtures.js';

const history: TableDefinition[] = [
  { version: 1, columns: [col('id', 1, 'integer', 23, true), col('v', 2, 'text', 25)] },
  { version: 2, columns: [col('id', 1, 'integer', 23, true), col('v', 2, 'text', 25), col('w', 3, 'integer', 23)] },
];
const lookup = (h: TableDefinition[] | Error): DefinitionLookup => ({ history: async () => { if (h instanceof Error) throw h; return h; } });
const change = (payload: Record<string, string>, version: number, source = 'slot_a', table = 'orders'): Item => ({
  change: { source, schema: 'public', table, op: 'INSERT', lsn: '0/1', commit_lsn: '0/1', xid: 1, seq: 1, commit_ts: '2026-12-07T00:00:00Z', key: { id: '1' }, payload, _version: '1', _schema_version: version } as ChangeEvent,
  record: { partition: 0, offset: 0n, key: '', value: Buffer.alloc(0), timestamp: 0 },
});

describe('UnrecordedColumns', () => {
  it('finds a change naming a column no recorded definition has, with the columns', async () => {
    const forged = change({ id: '1', v: 'a', nope: 'x' }, 1);
    const found = await new UnrecordedColumns(lookup(history), 'slot_a').find('public.orders', [[change({ id: '2', v: 'b' }, 1)], [forged]]);
    expect([...found.entries()]).toEqual([[forged.change, ['nope']]]);
  });

  it('takes a column any version recorded (a change in another version terms)', async () => {
    const found = await new UnrecordedColumns(lookup(history), 'slot_a').find('public.orders', [[change({ id: '1', v: 'a', w: '1' }, 1)]]);
    expect(found.size).toBe(0);
  });

  it('judges nothing of a version not recorded yet, another source, another table, or unreadable definitions', async () => {
    const units = [[change({ id: '1', nope: 'x' }, 3)], [change({ id: '1', nope: 'x' }, 1, 'slot_b')], [change({ id: '1', nope: 'x' }, 1, 'slot_a', 'other')]];
    expect((await new UnrecordedColumns(lookup(history), 'slot_a').find('public.orders', units)).size).toBe(0);
    expect((await new UnrecordedColumns(lookup(new Error('source down')), 'slot_a').find('public.orders', [[change({ id: '1', nope: 'x' }, 1)]])).size).toBe(0);
  });
});

describe('UnrecordedColumns with two tables of one label', () => {
  it('judges only the changes of the table whose definitions it read ("a.b".c and a."b.c")', async () => {
    const perTable: DefinitionLookup = { history: async (schema) => (schema === 'a.b' ? history : [{ version: 1, columns: [col('id', 1, 'integer', 23, true), col('w', 2, 'text', 25)] }]) };
    const of = (schema: string, table: string, payload: Record<string, string>): Item => {
      const item = change(payload, 1);
      return { ...item, change: { ...item.change, schema, table } };
    };
    const found = await new UnrecordedColumns(perTable, 'slot_a').find('a.b.c', [[of('a.b', 'c', { id: '1', v: 'x' })], [of('a', 'b.c', { id: '1', w: 'y' })]]);
    expect(found.size).toBe(0);
  });
});
