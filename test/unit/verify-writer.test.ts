import { describe, expect, it } from 'vitest';
import { verifyWriterOf } from '../../src/config/conflict-options.js';
import { parseConfig } from '../../src/config/load.js';
import { SideSql, type VerifyShape } from '../../src/verify/shape.js';
import { rowTargetLive } from '../../src/verify/targets/target.js';

/** Whose target rows verify compares when several writers share the target (VerifyWriter). */
describe('verify writer', () => {
  const config = (sink: string): string => `source:
  name: a
  url: postgres://x/a
  slots: [{ name: s, publication: p, tables: [t] }]
sink: { url: postgres://x/t${sink} }
`;

  it('is set only with conflict tracking on, local when local_source names the source', () => {
    expect(verifyWriterOf(parseConfig(config('')))).toBeUndefined();
    expect(verifyWriterOf(parseConfig(config(', conflict_strategy: last_write_wins')))).toEqual({ source: 'a', local: false, stateSchema: 'syncline' });
    expect(verifyWriterOf(parseConfig(config(', conflict_strategy: source_priority, source_priority: [a], local_source: a')))).toEqual({ source: 'a', local: true, stateSchema: 'syncline' });
  });

  const shape = (writer?: VerifyShape['writer']): VerifyShape => ({
    source: { schema: 'public', table: 't' },
    target: { schema: 'public', table: 't' },
    label: 'public.t',
    columns: [],
    key: [],
    softDeletes: true,
    estimatedRows: 0,
    digest: 'record',
    ...(writer ? { writer } : {}),
  });

  it("restricts a postgres target to the writer's rows not changed there since (quoted)", () => {
    expect(new SideSql(shape(), 'target').live).toBe('"_deleted_at" IS NULL');
    const live = new SideSql(shape({ source: "o'b", local: false, stateSchema: 's' }), 'target').live;
    expect(live).toBe(`"_deleted_at" IS NULL AND ("public"."t"."_syncline_source" = 'o''b' AND "public"."t"."_syncline_xid" = "public"."t".xmin::text::bigint)`);
    expect(new SideSql(shape({ source: 'a', local: true, stateSchema: 's' }), 'target').live).toContain(`OR "public"."t"."_syncline_xid" IS NULL OR`);
    // The source side is never filtered.
    expect(new SideSql(shape({ source: 'a', local: false, stateSchema: 's' }), 'source').live).toBe('true');
  });

  it('restricts a mysql or sqlite target by _syncline_source', () => {
    const q = (n: string): string => `"${n}"`;
    const lit = (v: string): string => `'${v.replace(/'/g, "''")}'`;
    expect(rowTargetLive({ ...shape(), softDeletes: false }, q, lit)).toBe('1 = 1');
    expect(rowTargetLive(shape({ source: 'a', local: false, stateSchema: 's' }), q, lit)).toBe(`"_deleted_at" IS NULL AND "_syncline_source" = 'a'`);
    expect(rowTargetLive({ ...shape({ source: 'a', local: true, stateSchema: 's' }), softDeletes: false }, q, lit)).toBe(`("_syncline_source" = 'a' OR "_syncline_source" IS NULL)`);
  });
});
