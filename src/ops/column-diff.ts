import type { RecordedColumn } from '../core/schema-evolution.js';

/** What changed from one definition of a table to the next. */
export interface ColumnDiff {
  added: RecordedColumn[];
  dropped: RecordedColumn[];
  /** Same attnum, another name. */
  renamed: { from: string; to: string }[];
  retyped: { column: string; from: string; to: string }[];
}

/**
 * Columns added, dropped, renamed (same attnum, another name: PostgreSQL keeps the attnum of
 * a renamed column and never reuses a dropped one's) and retyped (same name, another type).
 */
export function diffColumns(before: readonly RecordedColumn[], after: readonly RecordedColumn[]): ColumnDiff {
  const diff: ColumnDiff = { added: [], dropped: [], renamed: [], retyped: [] };
  const byAttnum = (cols: readonly RecordedColumn[]): Map<number, RecordedColumn> => new Map(cols.flatMap((c) => (c.attnum === null ? [] : [[c.attnum, c] as const])));
  const beforeNum = byAttnum(before);
  const afterNum = byAttnum(after);
  const renamedFrom = new Set<string>();
  const renamedTo = new Set<string>();
  for (const [n, a] of afterNum) {
    const b = beforeNum.get(n);
    if (b && b.name !== a.name && !after.some((c) => c.name === b.name) && !before.some((c) => c.name === a.name)) {
      diff.renamed.push({ from: b.name, to: a.name });
      renamedFrom.add(b.name);
      renamedTo.add(a.name);
    }
  }
  for (const a of after) {
    const b = before.find((c) => c.name === a.name) ?? (renamedTo.has(a.name) ? before.find((c) => c.attnum === a.attnum) : undefined);
    if (!b) diff.added.push(a);
    else if (b.type !== a.type) diff.retyped.push({ column: a.name, from: b.type, to: a.type });
  }
  for (const b of before) if (!renamedFrom.has(b.name) && !after.some((c) => c.name === b.name)) diff.dropped.push(b);
  return diff;
}

/** One line per change of a diff, e.g. `+ extra numeric(10,2)`. */
export function describeDiff(d: ColumnDiff): string[] {
  return [
    ...d.added.map((c) => `+ ${c.name} ${c.type}${c.not_null ? ' NOT NULL' : ''}`),
    ...d.dropped.map((c) => `- ${c.name} ${c.type}`),
    ...d.renamed.map((r) => `~ ${r.from} renamed to ${r.to}`),
    ...d.retyped.map((r) => `~ ${r.column} ${r.from} -> ${r.to}`),
  ];
}
