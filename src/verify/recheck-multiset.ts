import type pg from 'pg';
import type { KeylessSide, MultisetDifference } from './checksum.js';
import { currentLsn, type ApplyBarrier } from './recheck.js';
import type { SideSql } from './shape.js';

export interface SettledMultiset {
  /** Rows whose counts still differ while their source side stood still (or as read, without a barrier). */
  drift: MultisetDifference[];
  /** Rows whose source side changed in every round: neither confirmed nor cleared. */
  unsettled: MultisetDifference[];
  /** Every round's barrier was reached (false: no pipeline to wait for, or it timed out). */
  lagChecked: boolean;
}

/** One digest group at the source: its row count and a fingerprint of its rows' xmins. */
type SourceGroup = { n: number; x: string };

/**
 * The source's rows with these digests, grouped: count and md5 of their sorted xmins. The
 * xmin multiset of a group changes exactly when a row of it is inserted or deleted (an
 * update is both): a row's xmin is the transaction that inserted it, and all of one
 * transaction's rows become visible at once, so none can leave while another with the same
 * xmin arrives. One scan of the table; the aggregate stays in the server.
 */
async function readSourceGroups(client: pg.ClientBase, sql: SideSql, digests: readonly string[]): Promise<Map<string, SourceGroup>> {
  const { rows } = await client.query<{ h: string; n: number; x: string }>(
    `SELECT h, count(*)::int AS n, md5(string_agg(x, ',' ORDER BY x)) AS x
       FROM (SELECT ${sql.digest()} AS h, ${sql.from}.xmin::text AS x FROM ${sql.from}) d
      WHERE h = ANY($1::text[]) GROUP BY h`,
    [digests],
  );
  return new Map(rows.map((r) => [r.h, { n: r.n, x: r.x }]));
}

const countOf = (g: SourceGroup | undefined): number => g?.n ?? 0;
const unchanged = (a: SourceGroup | undefined, b: SourceGroup | undefined): boolean => (a === undefined ? b === undefined : b !== undefined && a.n === b.n && a.x === b.x);

/**
 * Tells drift from lag for a keyless table (a multiset), the way settle() does for keys,
 * with digest groups (all copies of one row) in place of keys. Each round reads the source
 * groups of the differing rows (count and xmin fingerprint), takes the source's WAL
 * position, waits until apply has passed it (`barrier`), counts the target's rows of those
 * digests, then reads the source groups again. A group whose counts are equal at either
 * source read is no drift. One whose source side did not change between the reads and
 * still differs after apply passed every change committed before the first read is drift,
 * reported with the counts of the second read. One that changed is checked again in the
 * next round; after `rounds` it is `unsettled`. No lock round as for keys: FOR SHARE would
 * not stop another copy of the row being inserted. Without a barrier (or when it is not
 * reached), one round reports the counts as read. Every read is one scan of the table
 * (no index finds a row by its digest), each followed by `afterScan` (verify's rate limit);
 * memory holds the differing groups only.
 */
export async function settleMultiset(
  source: pg.ClientBase,
  sql: SideSql,
  target: KeylessSide,
  differences: readonly MultisetDifference[],
  barrier?: ApplyBarrier,
  afterScan: () => Promise<void> = async () => undefined,
  rounds = 4,
): Promise<SettledMultiset> {
  const out: SettledMultiset = { drift: [], unsettled: [], lagChecked: barrier !== undefined };
  let pending = [...differences];
  for (let round = 0; round < rounds && pending.length > 0; round++) {
    const digests = pending.map((d) => d.h);
    const s1 = await readSourceGroups(source, sql, digests);
    await afterScan();
    const reached = barrier ? await barrier(await currentLsn(source)) : 'unavailable';
    const t = await target.counts(digests);
    await afterScan();
    const s2 = await readSourceGroups(source, sql, digests);
    await afterScan();
    const next: MultisetDifference[] = [];
    for (const d of pending) {
      const a = s1.get(d.h);
      const b = s2.get(d.h);
      const n = t.get(d.h) ?? 0;
      if (countOf(a) === n || countOf(b) === n) continue;
      if (reached !== 'reached' || unchanged(a, b)) out.drift.push({ ...d, sourceCount: countOf(b), targetCount: n });
      else next.push(d);
    }
    pending = next;
    if (reached !== 'reached') {
      out.lagChecked = false;
      break;
    }
  }
  out.unsettled.push(...pending);
  return out;
}
