import { describe, expect, it } from 'vitest';
import { partitionKeyOf } from '../../src/core/change.js';
import { TABLE_HEADER, natsName, tableOfKey, tableSubjectOf } from '../../src/stream/nats/nats-names.js';
import { recordHeaders } from '../../src/stream/nats/record-headers.js';

/**
 * Red team (accept3): a table whose name holds a colon (`"ord:x"`) went out on NATS under
 * the subject and `Syncline-Table` header of the table `ord` (the key was cut at its first
 * colon), so a consumer following `<topic>.*.public.ord` also got `public.ord:x`'s changes.
 */
describe('the table of a stream key', () => {
  const cases: [schema: string, table: string, key: Record<string, string | null>][] = [
    ['public', 'orders', { id: '1' }],
    ['public', 'ord:x', { id: '1' }],
    ['public', 'ord', { id: 'a:[b' }],
    ['public', 'a:[1]', { id: '2' }],
    ['my:schema', 't', { id: '1' }],
    ['public', 'x:y', {}],
    ['public', 'ord:x', { a: ':["', b: null }],
  ];
  it.each(cases)('%s.%s with key %j', (schema, table, key) => {
    const k = partitionKeyOf({ schema, table, key });
    expect(tableOfKey(k)).toBe(`${schema}.${table}`);
    expect(tableSubjectOf(k)).toBe(`${natsName(schema)}.${natsName(table)}`);
    expect(recordHeaders(k, '0/1:1').get(TABLE_HEADER)).toBe(`${schema}.${table}`);
  });

  it('keeps keys without a row key part as before', () => {
    expect(tableOfKey('keyless')).toBeUndefined();
    expect(tableOfKey('public.t:x')).toBe('public.t');
  });
});
