import { describe, expect, it } from 'vitest';
import { parseTableArg, resolveTableArg, tableArgLabels } from '../../src/core/table-arg.js';
import type { TableName } from '../../src/core/sql.js';

const t = (schema: string, table: string): TableName => ({ schema, table });

describe('table names on the command line (parseTableArg)', () => {
  it('reads a name as printed and as SQL, printed first', () => {
    expect(parseTableArg('My Schema.Order Items')).toEqual({ readings: [t('My Schema', 'Order Items'), t('my schema', 'order items')], fallback: t('My Schema', 'Order Items') });
    expect(parseTableArg('public.Orders')).toEqual({ readings: [t('public', 'Orders'), t('public', 'orders')], fallback: t('public', 'orders') });
    expect(parseTableArg('Orders')).toEqual({ readings: [t('public', 'Orders'), t('public', 'orders')], fallback: t('public', 'orders') });
  });

  it('has one reading when both agree, or when the name is quoted SQL', () => {
    expect(parseTableArg('orders')).toEqual({ readings: [t('public', 'orders')], fallback: t('public', 'orders') });
    expect(parseTableArg(' sales.orders ')).toEqual({ readings: [t('sales', 'orders')], fallback: t('sales', 'orders') });
    expect(parseTableArg('"My Schema"."Order Items"')).toEqual({ readings: [t('My Schema', 'Order Items')], fallback: t('My Schema', 'Order Items') });
    expect(parseTableArg('"Order Items"')).toEqual({ readings: [t('public', 'Order Items')], fallback: t('public', 'Order Items') });
    expect(parseTableArg('Sales."Orders"').readings).toEqual([t('sales', 'Orders')]);
  });

  it('takes a dotted printed name that is no SQL name, and refuses what is neither', () => {
    // Split at each dot, the first first: a schema may have a dot too.
    expect(parseTableArg('a.b.c')).toEqual({ readings: [t('a', 'b.c'), t('a.b', 'c')], fallback: t('a', 'b.c') });
    expect(() => parseTableArg('.orders')).toThrow(/not a table name/);
    expect(() => parseTableArg('"open')).toThrow(/unterminated/);
  });

  it('takes a printed name with double quotes or a dot in its schema, as syncline prints it (dlq list, verify)', () => {
    // Acceptance pass 4: `Odd.Schema ü.Mixed "Case".Tbl 😀`, copied from `dlq list`, was
    // refused ("not a table name": a double quote made it SQL), and `Odd.Schema ü.plain`
    // could only mean schema `Odd`.
    const label = 'Odd.Schema ü.Mixed "Case".Tbl 😀';
    expect(parseTableArg(label).readings).toContainEqual(t('Odd.Schema ü', 'Mixed "Case".Tbl 😀'));
    // The command's tables by schema and table apart (a label alone reads both ways).
    const has = (...tables: TableName[]) => (n: TableName) => tables.some((k) => k.schema === n.schema && k.table === n.table);
    expect(resolveTableArg(label, has(t('Odd.Schema ü', 'Mixed "Case".Tbl 😀')))).toEqual(t('Odd.Schema ü', 'Mixed "Case".Tbl 😀'));
    expect(resolveTableArg('Odd.Schema ü.plain', has(t('Odd.Schema ü', 'plain')))).toEqual(t('Odd.Schema ü', 'plain'));
    expect(tableArgLabels(label)).toContain(label);
  });

  it('resolves to the reading the command knows, else the fallback', () => {
    const known = (...labels: string[]) => (n: TableName) => labels.includes(`${n.schema}.${n.table}`);
    expect(resolveTableArg('public.Orders', known('public.Orders', 'public.orders'))).toEqual(t('public', 'Orders'));
    expect(resolveTableArg('Orders', known('public.orders'))).toEqual(t('public', 'orders'));
    expect(resolveTableArg('My Schema.Order Items', known())).toEqual(t('My Schema', 'Order Items'));
    expect(resolveTableArg('My Schema.Order Items', known('my schema.order items'))).toEqual(t('my schema', 'order items'));
    expect(tableArgLabels('My Schema.Order Items')).toEqual(['My Schema.Order Items', 'my schema.order items']);
  });
});
