import type pg from 'pg';
import { SideSql, type VerifyShape } from './shape.js';

/** One source and one target connection: ranges are compared on several pairs at once. */
export interface ConnectionPair {
  source: pg.ClientBase;
  target: pg.ClientBase;
}

export interface ScanOptions {
  /** Rows per top-level range, planned on the source's key index (default 50,000). */
  rangeRows?: number;
  /** A differing range of at most this many rows (the larger side) is compared row by row (default 1,000). */
  leafRows?: number;
  /** Sub-ranges a differing range is split into (default 16). */
  fanout?: number;
  /** Candidate keys kept for the re-check; beyond, only counted (default 200,000). */
  maxCandidates?: number;
  /** Called with the source rows of each finished top-level range. */
  onRows?: (rows: number) => void;
  /** Awaited after each top-level range with its rows, and after each re-read with the rows it scanned: a rate limit hook. */
  throttle?: (rows: number) => Promise<void>;
}

/** A key whose row differed (or was on one side only) when its range was read. */
export interface Candidate {
  /** JSON array of the key's text values (index order). */
  key: string;
  /** The key's text values, in index order. */
  values: string[];
}

export interface KeyedScan {
  sourceRows: number;
  targetRows: number;
  candidates: Map<string, Candidate>;
  /** Differing rows found beyond `maxCandidates` (not kept, not re-checked). */
  overflow: number;
}

/** A row (JSON array of its values) present a different number of times on each side. */
export interface MultisetDifference {
  key: string;
  /** The row's digest (md5 hex): what both sides are asked for again in the re-check. */
  h: string;
  sourceCount: number;
  targetCount: number;
}

export interface KeylessScan {
  sourceRows: number;
  targetRows: number;
  differences: MultisetDifference[];
  overflow: number;
}

/** Keys `(after, upper]` in index order; null: unbounded. */
export type Range = { after: string[] | null; upper: string[] | null };
type Sum = { n: number; s: string };

/** The key `step` rows after `range.after` (not past `range.upper`) on one side; null when fewer are left. */
export async function boundary(client: pg.ClientBase, sql: SideSql, range: Range, step: number): Promise<string[] | null> {
  const params: unknown[] = [];
  const { where, order } = sql.keyRange(range.after, range.upper, params);
  params.push(step - 1);
  const { rows } = await client.query({
    text: `SELECT ${sql.keyTexts()} FROM ${sql.from} WHERE ${where} ORDER BY ${order} OFFSET $${params.length} LIMIT 1`,
    values: params,
    rowMode: 'array',
  });
  return (rows[0] as string[] | undefined) ?? null;
}

/**
 * Hands out the source's consecutive key ranges of about `rows` rows, planned one after
 * another on `client` as workers ask for them; undefined once the table is covered.
 */
export function rangePlanner(client: pg.ClientBase, sql: SideSql, rows: number): () => Promise<Range | undefined> {
  let cursor: string[] | null = null;
  let planned = false;
  let planning: Promise<Range | undefined> = Promise.resolve(undefined);
  return () => {
    planning = planning.then(async () => {
      if (planned) return undefined;
      const upper = await boundary(client, sql, { after: cursor, upper: null }, rows);
      const range = { after: cursor, upper };
      if (upper === null) planned = true;
      cursor = upper;
      return range;
    });
    return planning;
  };
}

/**
 * Compares a keyed table by checksums computed in each server: consecutive key ranges of
 * the source's primary-key index (about `rangeRows` rows each) are summarised on both sides
 * as (row count, sum of a 60-bit md5 digest of each row's text) — order-independent, so
 * the two servers never need to agree on an order beyond the range bounds. Equal ranges are
 * done; a differing one is split along the keys of its larger side and the parts compared
 * again, down to ranges of at most `leafRows` rows whose digests are fetched and matched by
 * key. Memory holds one leaf per connection pair plus the candidates: constant in the
 * table's size. Ranges are taken by several connection pairs at once.
 */
export async function scanKeyed(shape: VerifyShape, pairs: readonly ConnectionPair[], options: ScanOptions = {}): Promise<KeyedScan> {
  const rangeRows = options.rangeRows ?? 50_000;
  const leafRows = options.leafRows ?? 1000;
  const fanout = options.fanout ?? 16;
  const maxCandidates = options.maxCandidates ?? 200_000;
  const src = new SideSql(shape, 'source');
  const dst = new SideSql(shape, 'target');
  const result: KeyedScan = { sourceRows: 0, targetRows: 0, candidates: new Map(), overflow: 0 };
  const planner = pairs[0];
  if (!planner) throw new Error('no connections');

  const sum = async (client: pg.ClientBase, sql: SideSql, range: Range): Promise<Sum> => {
    const params: unknown[] = [];
    const where = sql.range(range.after, range.upper, params);
    const { rows } = await client.query<{ n: string; s: string }>(
      `SELECT count(*)::text AS n, coalesce(sum(${sql.rowHash()}), 0)::text AS s FROM ${sql.from} WHERE ${where}`,
      params,
    );
    const r = rows[0] as { n: string; s: string };
    return { n: Number(r.n), s: r.s };
  };
  const digests = async (client: pg.ClientBase, sql: SideSql, range: Range): Promise<Map<string, { h: string; values: string[] }>> => {
    const params: unknown[] = [];
    const where = sql.range(range.after, range.upper, params);
    const { rows } = await client.query({
      text: `SELECT ${sql.keyJson()}, ${sql.digest()}, ${sql.keyTexts()} FROM ${sql.from} WHERE ${where}`,
      values: params,
      rowMode: 'array',
    });
    const out = new Map<string, { h: string; values: string[] }>();
    for (const r of rows as string[][]) out.set(r[0] as string, { h: r[1] as string, values: r.slice(2) });
    return out;
  };
  const note = (key: string, values: string[]): void => {
    if (result.candidates.size < maxCandidates) result.candidates.set(key, { key, values });
    else result.overflow++;
  };
  /** Compares `range` (bisecting it where it differs); resolves to its source rows. */
  const check = async (pair: ConnectionPair, range: Range, top: boolean): Promise<number> => {
    const [a, b] = await Promise.all([sum(pair.source, src, range), sum(pair.target, dst, range)]);
    if (top) {
      result.sourceRows += a.n;
      result.targetRows += b.n;
    }
    if (a.n === b.n && a.s === b.s) return a.n;
    const n = Math.max(a.n, b.n);
    if (n <= leafRows) {
      const [x, y] = await Promise.all([digests(pair.source, src, range), digests(pair.target, dst, range)]);
      for (const [k, v] of x) if (y.get(k)?.h !== v.h) note(k, v.values);
      for (const [k, v] of y) if (!x.has(k)) note(k, v.values);
      return a.n;
    }
    const [client, sql] = a.n >= b.n ? [pair.source, src] : [pair.target, dst];
    const step = Math.ceil(n / fanout);
    let after = range.after;
    for (;;) {
      const upper = await boundary(client, sql, { after, upper: range.upper }, step);
      await check(pair, { after, upper: upper ?? range.upper }, false);
      if (upper === null) return a.n;
      after = upper;
    }
  };

  const next = rangePlanner(planner.source, src, rangeRows);
  await Promise.all(
    pairs.map(async (pair) => {
      for (;;) {
        const range = await next();
        if (!range) return;
        // The range's own rows: result.sourceRows also grows by the ranges other pairs finish meanwhile.
        const rows = await check(pair, range, true);
        options.onRows?.(rows);
        await options.throttle?.(rows);
      }
    }),
  );
  return result;
}

/** One side of a keyless comparison. */
export interface KeylessSide {
  /** Bucket (first 3 hex digits of the row digest) → `count:sum of 60-bit digests`, in one scan. */
  buckets(): Promise<Map<string, string>>;
  /** The rows of these buckets grouped by digest: count and a key (the row's JSON). */
  rowsOf(buckets: string[]): Promise<Map<string, { n: number; k: string }>>;
  /** Buckets asked at once (every rowsOf is a scan of the table). */
  readonly bucketsPerScan: number;
  /** How many live rows have each of these digests (absent: none), in one scan. */
  counts(digests: readonly string[]): Promise<Map<string, number>>;
}

/** A keyless side computed by a PostgreSQL server. */
export function sqlKeylessSide(client: pg.ClientBase, sql: SideSql): KeylessSide {
  return {
    bucketsPerScan: 64,
    buckets: async () => {
      const { rows } = await client.query<{ b: string; n: string; s: string }>(
        `SELECT left(h, 3) AS b, count(*)::text AS n, sum(('x' || left(h, 15))::bit(60)::bigint)::text AS s
           FROM (SELECT ${sql.digest()} AS h FROM ${sql.from} WHERE ${sql.live}) d GROUP BY 1`,
      );
      return new Map(rows.map((r) => [r.b, `${r.n}:${r.s}`]));
    },
    rowsOf: async (set) => {
      const { rows } = await client.query<{ h: string; n: number; k: string }>(
        `SELECT h, count(*)::int AS n, min(k) AS k FROM (SELECT ${sql.digest()} AS h, ${sql.keyJson()} AS k FROM ${sql.from} WHERE ${sql.live}) d
          WHERE left(h, 3) = ANY($1::text[]) GROUP BY h`,
        [set],
      );
      return new Map(rows.map((r) => [r.h, { n: r.n, k: r.k }]));
    },
    counts: async (digests) => {
      const { rows } = await client.query<{ h: string; n: number }>(
        `SELECT h, count(*)::int AS n FROM (SELECT ${sql.digest()} AS h FROM ${sql.from} WHERE ${sql.live}) d WHERE h = ANY($1::text[]) GROUP BY h`,
        [digests],
      );
      return new Map(rows.map((r) => [r.h, r.n]));
    },
  };
}

/**
 * Compares a keyless table (a multiset) by buckets of the row digest: each side reports
 * (count, digest sum) per 4,096 buckets in one scan; only rows of differing buckets are then
 * read, grouped by digest, and their counts compared. Memory holds the differing buckets'
 * distinct rows, not the table.
 */
export async function scanKeyless(source: KeylessSide, target: KeylessSide, options: ScanOptions = {}): Promise<KeylessScan> {
  const maxCandidates = options.maxCandidates ?? 200_000;
  const [a, b] = await Promise.all([source.buckets(), target.buckets()]);
  const count = (m: Map<string, string>): number => [...m.values()].reduce((n, v) => n + Number(v.split(':')[0]), 0);
  const result: KeylessScan = { sourceRows: count(a), targetRows: count(b), differences: [], overflow: 0 };
  const tableRows = Math.max(result.sourceRows, result.targetRows);
  options.onRows?.(tableRows);
  await options.throttle?.(tableRows);
  const differing = [...new Set([...a.keys(), ...b.keys()])].filter((k) => a.get(k) !== b.get(k));
  // A side that reads rows in Node (a row target) takes every differing bucket in its one scan.
  const step = Math.max(source.bucketsPerScan, target.bucketsPerScan);
  for (let i = 0; i < differing.length; i += step) {
    const set = differing.slice(i, i + step);
    const [x, y] = await Promise.all([source.rowsOf(set), target.rowsOf(set)]);
    await options.throttle?.(tableRows); // each side scanned its table again
    for (const h of new Set([...x.keys(), ...y.keys()])) {
      const s = x.get(h);
      const t = y.get(h);
      if ((s?.n ?? 0) === (t?.n ?? 0)) continue;
      if (result.differences.length >= maxCandidates) {
        result.overflow += Math.abs((s?.n ?? 0) - (t?.n ?? 0));
        continue;
      }
      result.differences.push({ key: (s ?? t)?.k ?? '', h, sourceCount: s?.n ?? 0, targetCount: t?.n ?? 0 });
    }
  }
  return result;
}
