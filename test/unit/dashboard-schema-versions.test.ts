import { describe, expect, it } from 'vitest';
import { SchemaVersionsView } from '../../src/dashboard/schema-versions.js';
import type { RecordedColumn } from '../../src/core/schema-evolution.js';
import type { SchemaVersionReport } from '../../src/ops/schemas.js';

const col = (name: string, attnum: number, type: string): RecordedColumn => ({ name, attnum, type, type_oid: 23, typmod: -1, not_null: false, key: attnum === 1 });

const V1: SchemaVersionReport = { table: 'public.t', version: 1, firstLsn: '0/10', recordedAt: '2026-12-05T00:00:00.000Z', columns: [col('id', 1, 'integer')], diff: null };
const V2: SchemaVersionReport = {
  ...V1, version: 2, firstLsn: '0/20', recordedAt: '2026-12-05T00:01:00.000Z', columns: [col('id', 1, 'integer'), col('extra', 2, 'text')],
  diff: { added: [col('extra', 2, 'text')], dropped: [], renamed: [], retyped: [] },
};

describe('the dashboard view of recorded table definitions', () => {
  it('lists them newest first with their LSN and column diff, reads at most once per interval, keeps the last list when the source fails', async () => {
    let now = 0;
    let reads = 0;
    let fail = false;
    const view = new SchemaVersionsView(async () => {
      reads++;
      if (fail) throw new Error('connect ECONNREFUSED postgres://u:secret@h/db');
      return [V1, V2];
    }, 5000, () => now);
    const first = await view.current();
    expect(first.versions).toEqual([
      { table: 'public.t', version: 2, first_lsn: '0/20', recorded_at: V2.recordedAt, changes: ['+ extra text'] },
      { table: 'public.t', version: 1, first_lsn: '0/10', recorded_at: V1.recordedAt, changes: [] },
    ]);
    expect(first.note).toBeUndefined();
    now = 4999;
    await view.current();
    expect(reads).toBe(1);
    fail = true;
    now = 10_000;
    const failed = await view.current();
    expect(reads).toBe(2);
    expect(failed.versions).toHaveLength(2);
    expect(failed.note).toMatch(/^source not readable: /);
    expect(failed.note).not.toContain('secret');
  });
});
