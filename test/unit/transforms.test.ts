import { describe, expect, it } from 'vitest';
import { rowKeyOf, type ChangeEvent } from '../../src/core/change.js';
import { ConfigError } from '../../src/core/errors.js';
import { addColumn, dropColumns, dropOps, dropTables, filter, hashColumns, keepTables, maskColumns, renameColumns, routeTables } from '../../src/transforms/common.js';
import { runTransforms, TransformError, type Transform } from '../../src/transforms/transform.js';
import { TransformingSink } from '../../src/transforms/transforming-sink.js';
import { MemorySink } from '../../src/testing/memory-sink.js';
import { ChangeFactory } from '../../src/testing/sink-contract.js';

const f = new ChangeFactory();
const change = (over: Partial<ChangeEvent> = {}): ChangeEvent => ({
  ...f.event('UPDATE', 'users', '7', 3, { id: '7', email: 'a@b.c', name: 'Ann' }),
  key: { tenant: 't1', id: '7' },
  payload: { tenant: 't1', id: '7', email: 'a@b.c', name: 'Ann' },
  before: { tenant: 't1', id: '7', email: 'old@b.c', name: 'Ann' },
  ...over,
});

describe('transforms', () => {
  it('filter, keepTables, dropTables and dropOps keep or drop whole changes', async () => {
    const c = change();
    expect(await runTransforms(c, [filter((x) => x.payload?.name === 'Ann')])).toEqual([c]);
    expect(await runTransforms(c, [keepTables('public.orders')])).toEqual([]);
    expect(await runTransforms(c, [dropTables('users')])).toEqual([]);
    expect(await runTransforms(c, [dropOps('DELETE')])).toEqual([c]);
    expect(await runTransforms({ ...c, op: 'DELETE', payload: null }, [dropOps('DELETE')])).toEqual([]);
  });

  it('renames a key column in place, so the row key stays canonical (same values, same order)', async () => {
    const [out] = await runTransforms(change(), [renameColumns({ users: { tenant: 'tenant_id', email: 'mail' } })]);
    expect(Object.keys(out?.key ?? {})).toEqual(['tenant_id', 'id']);
    expect(rowKeyOf(out as ChangeEvent)).toBe(rowKeyOf(change()));
    expect(out?.payload).toEqual({ tenant_id: 't1', id: '7', mail: 'a@b.c', name: 'Ann' });
    expect(out?.before).toMatchObject({ mail: 'old@b.c' });
  });

  it('drops and masks non-key columns everywhere, keeps unchanged columns absent, and refuses key columns', async () => {
    const c = change({ unchanged: ['bio'] });
    const [dropped] = await runTransforms(c, [dropColumns({ users: ['email', 'bio'] })]);
    expect(dropped?.payload).toEqual({ tenant: 't1', id: '7', name: 'Ann' });
    expect(dropped?.before).toEqual({ tenant: 't1', id: '7', name: 'Ann' });
    expect(dropped?.unchanged).toEqual([]);
    const [masked] = await runTransforms(c, [maskColumns({ '*': ['email'] })]);
    expect(masked?.payload?.email).toBe('***');
    expect(masked?.before?.email).toBe('***');
    await expect(runTransforms(c, [dropColumns({ users: ['id'] })])).rejects.toBeInstanceOf(TransformError);
    await expect(runTransforms(c, [maskColumns({ users: ['tenant'] })])).rejects.toThrow(/key column/);
  });

  it('hashes key columns deterministically (HMAC with a secret)', async () => {
    const t = hashColumns({ users: ['id', 'email'] }, { secret: 's' });
    const [a] = await runTransforms(change(), [t]);
    const [b] = await runTransforms(change(), [t]);
    expect(a?.key.id).toMatch(/^[0-9a-f]{64}$/);
    expect(a?.key).toEqual(b?.key);
    expect(a?.payload?.email).not.toBe('a@b.c');
  });

  it('routes tables, refuses two sources on one target, and adds computed columns', async () => {
    const [routed] = await runTransforms(change(), [routeTables({ 'public.users': 'crm.contacts' })]);
    expect(routed).toMatchObject({ schema: 'crm', table: 'contacts' });
    expect(() => routeTables({ a: 'x', b: 'x' })).toThrow(ConfigError);
    const [added] = await runTransforms(change(), [addColumn('users', 'domain', (c) => c.payload?.email?.split('@')[1] ?? null)]);
    expect(added?.payload?.domain).toBe('b.c');
    await expect(runTransforms(change(), [addColumn('users', 'name', () => 'x')])).rejects.toThrow(/already has a column name/);
  });

  it('refuses a result that changes the identity or empties the key; async transforms and fan-out work', async () => {
    const bump: Transform = (c) => ({ ...c, _version: '1' });
    await expect(runTransforms(change(), [bump])).rejects.toThrow(/changed _version/);
    await expect(runTransforms(change(), [(c) => ({ ...c, key: {} })])).rejects.toThrow(/emptied the key/);
    const fan: Transform = async (c) => [c, { ...c, table: 'users_copy' }];
    expect((await runTransforms(change(), [fan])).map((c) => c.table)).toEqual(['users', 'users_copy']);
  });
});

describe('TransformingSink', () => {
  it('passes positions when every change is dropped, labels outcomes with the source table, and fails a batch on a throwing transform', async () => {
    const inner = new MemorySink();
    const sink = new TransformingSink(inner, [dropTables('audit'), routeTables({ users: 'people' }), (c) => { if (c.key.id === 'bad') throw new Error('no'); return c; }]);
    await sink.prepare();
    await sink.apply([f.insert('audit', 'a', 1, 'x')], new Map([[0, 4n]]), 'g');
    expect(await sink.positions('g')).toEqual(new Map([[0, 4n]]));
    const out = await sink.apply([f.insert('users', 'u', 2, 'x')], new Map([[0, 5n]]), 'g');
    expect(out.byTable).toEqual(new Map([['public.users', { applied: 1, stale: 0 }]]));
    expect(inner.row('people', { id: 'u' })).toMatchObject({ id: 'u', v: 'x' });
    const err = await sink.apply([f.insert('users', 'ok', 3, 'x'), f.insert('users', 'bad', 4, 'x')], new Map([[0, 7n]]), 'g').catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'TRANSFORM_FAILED', retriable: false });
    expect(inner.row('people', { id: 'ok' })).toBeUndefined();
    expect(await sink.positions('g')).toEqual(new Map([[0, 5n]]));
  });
});
