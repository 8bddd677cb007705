import type { ChangeEvent } from '../../src/core/change.js';
import { openEmbeddedStream } from '../../src/stream/embedded/embedded-stream.js';

/** Every record of an embedded stream, in partition order, decoded. */
export async function readEmbeddedStream(streamPath: string, partitions: number): Promise<{ partition: number; change: ChangeEvent }[]> {
  const stream = await openEmbeddedStream({ path: streamPath, partitions, retentionHours: 168 });
  try {
    const total = [...(await stream.endOffsets()).values()].reduce((a, b) => a + b, 0n);
    const consumer = await stream.consumer('keyless-reader', { startPositions: async (ps) => new Map(ps.map((p) => [p, 0n])) });
    const out: { partition: number; change: ChangeEvent }[] = [];
    while (BigInt(out.length) < total) {
      const batch = await consumer.poll(20_000, 500);
      if (batch.length === 0) break;
      for (const r of batch) out.push({ partition: r.partition, change: JSON.parse(r.value.toString()) as ChangeEvent });
    }
    await consumer.close();
    return out;
  } finally {
    await stream.close();
  }
}

/**
 * The multiset a keyless table's changes leave, each row as the JSON array of the text values
 * of `cols` (`, ` between them, as PostgreSQL's json_build_array prints), sorted. Applied as
 * the SQL sinks do: a change not newer than the last applied is stale; a reset empties; a row
 * to remove that is not there after a reset throws (the sinks dead-letter it as drift).
 */
export function applyAsMultiset(changes: ChangeEvent[], cols: readonly string[]): string[] {
  const rows = new Map<string, number>();
  const form = (r: Record<string, string | null>): string => JSON.stringify(cols.map((c) => r[c] ?? null)).replaceAll(',', ', ');
  let high = -1n;
  // Changes streamed before the table's first snapshot may touch rows only that snapshot
  // brings: until its reset the content is not known, so a missing row is no drift.
  let reset = false;
  for (const c of changes) {
    const v = BigInt(c._version);
    // A capture restart may publish changes again: versions only increase in one partition.
    if (v <= high) continue;
    high = v;
    const remove = (r: Record<string, string | null>): void => {
      const k = form(r);
      const n = rows.get(k) ?? 0;
      if (n === 0 && !reset) return;
      if (n === 0) throw new Error(`${c.op} at ${c.commit_lsn}/${c.seq} removes a row that is not there: ${k}`);
      rows.set(k, n - 1);
    };
    const add = (r: Record<string, string | null>): void => void rows.set(form(r), (rows.get(form(r)) ?? 0) + 1);
    if (c.op === 'TRUNCATE') {
      rows.clear();
      if (c.snapshot_reset) reset = true;
    } else if (c.op === 'INSERT' || c.op === 'READ') add(c.payload ?? {});
    else if (c.op === 'DELETE') remove(c.before ?? {});
    else if (c.op === 'UPDATE') {
      remove(c.before ?? {});
      add(c.payload ?? {});
    }
  }
  const out: string[] = [];
  for (const [k, n] of rows) for (let i = 0; i < n; i++) out.push(k);
  return out.sort();
}
