import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { parseConfig } from '../../src/config/load.js';
import type { ChangeEvent, Row } from '../../src/core/change.js';
import { ConfigError, PrerequisiteError } from '../../src/core/errors.js';
import { TableMapping, parseTableRoutes } from '../../src/core/table-mapping.js';
import { MappedSink } from '../../src/sink/mapped-sink.js';
import type { ApplyOutcome, Sink } from '../../src/sink/sink.js';

function change(over: Partial<ChangeEvent>): ChangeEvent {
  return {
    source: 's',
    schema: 'public',
    table: 'orders',
    op: 'UPDATE',
    lsn: '0/10',
    commit_lsn: '0/20',
    xid: 7,
    seq: 3,
    commit_ts: '2024-01-01T00:00:00.000000Z',
    key: { id: '1' },
    payload: { id: '1', total: '9.50', internal_note: 'x', status: 'open' },
    _version: '137438953475',
    _schema_version: 1,
    ...over,
  };
}

const ORDERS = TableMapping.fromConfig({
  'public.orders': { target: 'reporting.orders_v2', columns: { total: 'total_amount', id: 'order_id' }, exclude_columns: ['internal_note'] },
});

describe('TableMapping.map', () => {
  it('routes the table and renames and drops columns in key, payload, before and unchanged', () => {
    const c = change({ before: { id: '1', total: '9.00', internal_note: 'y', status: 'new' }, unchanged: ['internal_note', 'total'] });
    const m = ORDERS.map(c);
    expect(m).toEqual({
      ...c,
      schema: 'reporting',
      table: 'orders_v2',
      key: { order_id: '1' },
      payload: { order_id: '1', total_amount: '9.50', status: 'open' },
      before: { order_id: '1', total_amount: '9.00', status: 'new' },
      unchanged: ['total_amount'],
    });
    // The original is untouched: the stream and the dead-letter queue keep it.
    expect(c.table).toBe('orders');
    expect(c.payload).toHaveProperty('internal_note', 'x');
  });

  it('passes unrouted tables through as the same object; DELETE and TRUNCATE are routed too', () => {
    const other = change({ table: 'customers' });
    expect(ORDERS.map(other)).toBe(other);
    const del = ORDERS.map(change({ op: 'DELETE', payload: null }));
    expect(del).toMatchObject({ schema: 'reporting', table: 'orders_v2', key: { order_id: '1' }, payload: null });
    expect(ORDERS.map(change({ op: 'TRUNCATE', key: {}, payload: null }))).toMatchObject({ schema: 'reporting', table: 'orders_v2', key: {} });
  });

  it('a target without schema stays in the source schema; a route may only rename', () => {
    const m = TableMapping.fromConfig({ 'sales.orders': { target: 'orders_v2' }, lines: { columns: { qty: 'quantity' } } });
    expect(m.map(change({ schema: 'sales' }))).toMatchObject({ schema: 'sales', table: 'orders_v2' });
    expect(m.map(change({ table: 'lines', payload: { id: '1', qty: '2' } }))).toMatchObject({ schema: 'public', table: 'lines', payload: { id: '1', quantity: '2' } });
  });

  it('swapping two column names works', () => {
    const m = TableMapping.fromConfig({ orders: { columns: { a: 'b', b: 'a' } } });
    expect(m.map(change({ payload: { id: '1', a: 'A', b: 'B' } })).payload).toEqual({ id: '1', b: 'A', a: 'B' });
  });

  it('an excluded key column, or a rename onto a kept column, stops apply with the fix', () => {
    const m = TableMapping.fromConfig({ 'public.orders': { exclude_columns: ['id'] } });
    expect(() => m.map(change({}))).toThrow(PrerequisiteError);
    expect(() => m.map(change({}))).toThrow(/sink\.tables\.public\.orders\.exclude_columns lists id, a key column of public\.orders/);
    const clash = TableMapping.fromConfig({ orders: { columns: { total: 'status' } } });
    expect(() => clash.map(change({}))).toThrow(/two columns of public\.orders map to target column status/);
  });

  it('an unrouted table that is another route\'s target stops apply', () => {
    const m = TableMapping.fromConfig({ orders: { target: 'customers' } });
    expect(() => m.map(change({ table: 'customers' }))).toThrow(/public\.customers is replicated to itself and is also the target of sink\.tables\.orders/);
  });

  it('property: values survive under their target names, nothing else changes, the input is not mutated', () => {
    const name = fc.stringMatching(/^[a-z][a-z0-9]{0,5}$/);
    const value = fc.option(fc.string({ maxLength: 6 }), { nil: null });
    const scenario = fc
      .uniqueArray(name, { minLength: 1, maxLength: 8 })
      .chain((cols) =>
        fc.record({
          cols: fc.constant(cols),
          keyCount: fc.integer({ min: 1, max: cols.length }),
          renamed: fc.subarray(cols),
          excluded: fc.subarray(cols),
          values: fc.array(value, { minLength: cols.length, maxLength: cols.length }),
          beforeValues: fc.option(fc.array(value, { minLength: cols.length, maxLength: cols.length }), { nil: undefined }),
          unchanged: fc.subarray(cols),
          op: fc.constantFrom('INSERT' as const, 'UPDATE' as const, 'READ' as const),
          target: fc.option(fc.tuple(name, name), { nil: undefined }),
        }),
      );
    fc.assert(
      fc.property(scenario, (s) => {
        const key = s.cols.slice(0, s.keyCount);
        // Renamed names are new (`_` never occurs in generated names), excluded ones never key columns.
        const renames = Object.fromEntries(s.renamed.map((c) => [c, `${c}_t`]));
        const excluded = s.excluded.filter((c) => !key.includes(c) && !(c in renames));
        const mapping = TableMapping.fromConfig({ 'src.tbl': { target: s.target ? `${s.target[0]}.${s.target[1]}` : undefined, columns: renames, exclude_columns: excluded } });
        const row = (vals: (string | null)[], cols: string[]): Row => Object.fromEntries(cols.map((c) => [c, vals[s.cols.indexOf(c)] ?? null]));
        const input = change({
          schema: 'src',
          table: 'tbl',
          op: s.op,
          key: row(s.values, key),
          payload: row(s.values, s.cols),
          ...(s.beforeValues ? { before: row(s.beforeValues, s.cols) } : {}),
          unchanged: s.unchanged,
        });
        const copy = structuredClone(input);
        const out = mapping.map(input);
        expect(input).toEqual(copy);
        const to = (c: string): string => renames[c] ?? c;
        const kept = s.cols.filter((c) => !excluded.includes(c));
        expect(out.schema).toBe(s.target ? s.target[0] : 'src');
        expect(out.table).toBe(s.target ? s.target[1] : 'tbl');
        expect(out.key).toEqual(Object.fromEntries(key.map((c) => [to(c), input.key[c]])));
        expect(out.payload).toEqual(Object.fromEntries(kept.map((c) => [to(c), input.payload?.[c]])));
        if (input.before) expect(out.before).toEqual(Object.fromEntries(kept.map((c) => [to(c), input.before?.[c]])));
        else expect(out.before).toBeUndefined();
        expect(out.unchanged).toEqual(s.unchanged.filter((c) => !excluded.includes(c)).map(to));
        const { schema: _s, table: _t, key: _k, payload: _p, before: _b, unchanged: _u, ...rest } = out;
        const { schema: _s2, table: _t2, key: _k2, payload: _p2, before: _b2, unchanged: _u2, ...restIn } = input;
        expect(rest).toEqual(restIn);
      }),
      { numRuns: 300 },
    );
  });
});

describe('sink.tables in the config', () => {
  const base = (tables: string, slotTables = "['orders', 'customers', 'sales.lines']"): string => `source:
  slots: [{ name: s, publication: p, tables: ${slotTables} }]
sink:
  tables:
${tables}
`;
  const issues = (text: string): readonly string[] => {
    try {
      parseConfig(text, {});
    } catch (err) {
      if (err instanceof ConfigError) return err.issues;
      throw err;
    }
    return [];
  };

  it('loads the documented shape', () => {
    const config = parseConfig(
      base(`    public.orders:
      target: reporting.orders_v2
      columns:
        total: total_amount
      exclude_columns: [internal_note]`),
      {},
    );
    expect(config.sink.tables).toEqual({ 'public.orders': { target: 'reporting.orders_v2', columns: { total: 'total_amount' }, exclude_columns: ['internal_note'] } });
    expect(parseConfig(base('    {}'), {}).sink.tables).toEqual({});
  });

  it('reports every problem with its path', () => {
    const found = issues(
      base(`    a.b.c: { target: x }
    orders: { target: 'reporting.', colums: {} }
    customers: { columns: { a: z, b: z, c: _syncline_lsn }, exclude_columns: [a] }
    sales.lines: { target: public.customers_copy }
    sales.missing: { target: elsewhere }
    public.customers: {}`),
    );
    expect(found).toEqual(
      expect.arrayContaining([
        expect.stringMatching(/^sink\.tables\.a\.b\.c: not a table name: "a\.b\.c" \(expected table or schema\.table\)/),
        'sink.tables.orders.colums: unknown key',
        'sink.tables.customers.columns.b: columns a and b are both renamed to z',
        'sink.tables.customers.columns.a: column a is both renamed and in exclude_columns',
        'sink.tables.customers.columns.c: _syncline_lsn is a column syncline writes itself; pick another name',
        'sink.tables.public.customers: public.customers is already mapped by sink.tables.customers',
      ]),
    );
    // Cross-checks against source.slots[0].tables run once the sections themselves are valid.
    const cross = issues(
      base(`    sales.missing: { target: elsewhere }
    sales.lines: { target: public.customers }`),
    );
    expect(cross).toEqual([
      'sink.tables.sales.missing: sales.missing is not replicated: add it to source.slots[0].tables or remove this entry',
      'sink.tables.sales.lines.target: public.customers is also replicated to itself: route it elsewhere or pick another target',
    ]);
    expect(issues(base(`    orders: { target: reporting.x }
    customers: { target: reporting.x }`))).toEqual([
      'sink.tables.customers.target: reporting.x is already the target of sink.tables.orders: one target table per source table (their keys, versions and tombstones would mix)',
    ]);
  });

  it('parseTableRoutes folds unquoted names like PostgreSQL and keeps quoted ones', () => {
    const { routes, issues: found } = parseTableRoutes({ '"Sales"."Order Lines"': { target: 'Reporting.Lines' } });
    expect(found).toEqual([]);
    expect(routes[0]).toMatchObject({ source: { schema: 'Sales', table: 'Order Lines' }, target: { schema: 'reporting', table: 'lines' } });
  });
});

/** A Sink that records what it was given: enough to check the decorator's own behaviour. */
class RecordingSink implements Sink {
  readonly storesPositions = true;
  applied: ChangeEvent[] = [];
  prepared = 0;
  async prepare(): Promise<void> {
    this.prepared++;
  }
  async apply(changes: readonly ChangeEvent[]): Promise<ApplyOutcome> {
    this.applied.push(...changes);
    const byTable = new Map<string, { applied: number; stale: number }>();
    for (const c of changes) {
      const t = byTable.get(`${c.schema}.${c.table}`) ?? { applied: 0, stale: 0 };
      t.applied++;
      byTable.set(`${c.schema}.${c.table}`, t);
    }
    return { applied: changes.length, stale: 0, superseded: 0, byTable };
  }
  async positions(): Promise<Map<number, bigint>> {
    return new Map();
  }
  async close(): Promise<void> {}
}

describe('MappedSink', () => {
  it('hands the inner sink mapped changes and reports per source table', async () => {
    const inner = new RecordingSink();
    const sink = new MappedSink(inner, ORDERS);
    const original = change({});
    const out = await sink.apply([original, change({ table: 'customers' })], new Map(), 'g');
    expect(inner.applied.map((c) => `${c.schema}.${c.table}`)).toEqual(['reporting.orders_v2', 'public.customers']);
    expect([...out.byTable.keys()]).toEqual(['public.orders', 'public.customers']);
    expect(original.table).toBe('orders');
  });

  it('prepare checks the routes against the source: excluded key, unknown columns, missing table', async () => {
    const mapping = TableMapping.fromConfig({
      orders: { columns: { totl: 'total_amount', total: 'status' }, exclude_columns: ['id', 'nope'] },
      ghosts: { target: 'g2' },
    });
    const inner = new RecordingSink();
    const sink = new MappedSink(inner, mapping, {
      sourceTables: async (tables) => tables.map((t) => (t.table === 'orders' ? { columns: ['id', 'total', 'status'], primaryKey: ['id'] } : undefined)),
    });
    const err = await sink.prepare().then(() => undefined, (e: unknown) => e);
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as ConfigError).issues).toEqual([
      'sink.tables.orders.columns.totl: public.orders has no column totl',
      'sink.tables.orders.exclude_columns: id is a key column of public.orders; key columns may be renamed but not excluded',
      'sink.tables.orders.exclude_columns: public.orders has no column nope',
      'sink.tables.orders.columns.total: status is also a column of public.orders; exclude or rename that one too',
      'sink.tables.ghosts: source table public.ghosts does not exist',
    ]);
    expect(inner.prepared).toBe(0);
    // An unreachable source does not block prepare (the per-change check remains).
    const offline = new MappedSink(inner, mapping, { sourceTables: () => Promise.reject(new Error('ECONNREFUSED')) });
    await offline.prepare();
    expect(inner.prepared).toBe(1);
  });
});
