import type pg from 'pg';
import { rangePlanner, type Candidate, type KeyedScan, type KeylessSide, type ScanOptions } from './checksum.js';
import { isDataException, joinKeys, sourceHoldable } from './recheck.js';
import { SideSql, type VerifyShape } from './shape.js';
import { rowDigest, type RowTarget } from './targets/target.js';

/** A source connection and a mysql or sqlite target: ranges are compared on several at once. */
export interface RowPair {
  source: pg.ClientBase;
  target: RowTarget;
}

/** Source rows per range; a range's keys and digests are what a pair holds in memory. */
const RANGE_ROWS = 10_000;
/** Target keys per page of the target-only pass. */
const PAGE_ROWS = 10_000;

/**
 * Compares a keyed table with a mysql or sqlite target. Neither can print values as
 * PostgreSQL does, and their collations order text keys otherwise (case-insensitive,
 * PAD SPACE, emoji all equal under utf8mb4_general_ci, ...), so no checksum of a key range
 * can be computed on both sides; and a merge of both sides in key order would need one order
 * both agree on. Instead, in two passes of constant memory:
 *
 * 1. Source → target: the source's primary-key index is walked in ranges of about 10,000
 *    rows (planned as for postgres targets); per range the source computes each row's key
 *    and digest (md5 of the JSON array of its values' text, numerics in trim_scale form);
 *    the target rows of exactly those keys are fetched (`IN` lists of 2,000 keys on MySQL,
 *    a prepared point lookup on SQLite), turned back into source text (targets/source-text.ts)
 *    and digested in Node; keys missing at the target or digested differently are candidates.
 *    Keys are matched by their exact source text, so a collation that calls 'a' and 'A' equal
 *    cannot hide a difference.
 * 2. Target → source: the target's live keys are scanned once in its own order, 10,000 at a
 *    time, and looked up at the source (`JOIN unnest(...)` in the source's types); keys the
 *    source lacks are candidates.
 *
 * Each row crosses to Node once per pass (the target's whole row, the source's digest);
 * memory holds a range per pair and a page of keys. With two pairs or more (the default
 * `verify.parallelism` is 2), pass 2 runs on the last pair while pass 1 runs on the others.
 * Candidates are re-checked (recheck.ts).
 */
export async function scanKeyedRows(shape: VerifyShape, pairs: readonly RowPair[], options: ScanOptions = {}): Promise<KeyedScan> {
  const maxCandidates = options.maxCandidates ?? 200_000;
  const src = new SideSql(shape, 'source');
  const result: KeyedScan = { sourceRows: 0, targetRows: 0, candidates: new Map(), overflow: 0 };
  const first = pairs[0];
  if (!first) throw new Error('no connections');
  const note = (c: Candidate): void => {
    if (result.candidates.has(c.key)) return;
    if (result.candidates.size < maxCandidates) result.candidates.set(c.key, c);
    else result.overflow++;
  };
  // With two pairs or more, the target-only pass runs at once on the last pair, overlapping
  // the servers' work of both passes; with one, after the first pass.
  const rangePairs = pairs.length > 1 ? pairs.slice(0, -1) : pairs;
  const keysPair = pairs[pairs.length - 1] as RowPair;
  const next = rangePlanner(first.source, src, Math.min(options.rangeRows ?? RANGE_ROWS, RANGE_ROWS));
  const sourceToTarget = Promise.all(
    rangePairs.map(async (pair) => {
      for (;;) {
        const range = await next();
        if (!range) return;
        const params: unknown[] = [];
        const where = src.range(range.after, range.upper, params);
        const { rows } = await pair.source.query({
          text: `SELECT ${src.keyJson()}, ${src.digest()}, ${src.keyTexts()} FROM ${src.from} WHERE ${where}`,
          values: params,
          rowMode: 'array',
        });
        const keys = (rows as string[][]).map((r) => ({ key: r[0] as string, values: r.slice(2), h: r[1] as string }));
        const found = await pair.target.readKeys(shape, keys);
        for (const k of keys) if (found.get(k.key) !== k.h) note({ key: k.key, values: k.values });
        result.sourceRows += keys.length;
        options.onRows?.(keys.length);
        await options.throttle?.(keys.length);
      }
    }),
  );
  const targetToSource = async (): Promise<void> => {
    for await (const page of keysPair.target.keys(shape, PAGE_ROWS)) {
      result.targetRows += page.length;
      const present = await presentAtSource(keysPair.source, src, page);
      for (const c of page) if (!present.has(c.key)) note(c);
      options.onRows?.(page.length);
      await options.throttle?.(page.length);
    }
  };
  if (pairs.length > 1) await Promise.all([sourceToTarget, targetToSource()]);
  else {
    await sourceToTarget;
    await targetToSource();
  }
  return result;
}

/**
 * The keys of `page` (target keys in source text) that the source has, as key JSON. A key the
 * source's types cannot hold (a BIGINT target key past an integer source key's range) fails
 * the look-up: then only the keys it can hold are asked for, the others are absent.
 */
async function presentAtSource(source: pg.ClientBase, src: SideSql, page: readonly Candidate[]): Promise<Set<string>> {
  const ask = async (keys: readonly Candidate[]): Promise<Set<string>> => {
    if (keys.length === 0) return new Set();
    const { join, values } = joinKeys(src, keys);
    const { rows } = await source.query({ text: `SELECT ${src.keyJson()} FROM ${src.from} ${join}`, values, rowMode: 'array' });
    return new Set((rows as string[][]).map((r) => r[0] as string));
  };
  try {
    return await ask(page);
  } catch (err) {
    if (!isDataException(err)) throw err;
    return ask((await sourceHoldable(source, src, page)).held);
  }
}

/**
 * The keyless side of a mysql or sqlite target: its rows are read (one scan per call),
 * turned back into source text and digested in Node, bucketed as PostgreSQL buckets them
 * (sqlKeylessSide). rowsOf takes every differing bucket at once.
 */
export function rowKeylessSide(shape: VerifyShape, target: RowTarget): KeylessSide {
  const scan = async (each: (h: string, texts: (string | null)[]) => void): Promise<void> => {
    for await (const page of target.rows(shape, PAGE_ROWS)) for (const texts of page) each(rowDigest(texts), texts);
  };
  return {
    bucketsPerScan: Infinity,
    buckets: async () => {
      const sums = new Map<string, { n: number; s: bigint }>();
      await scan((h) => {
        const b = h.slice(0, 3);
        const v = sums.get(b) ?? { n: 0, s: 0n };
        v.n++;
        v.s += BigInt(`0x${h.slice(0, 15)}`);
        sums.set(b, v);
      });
      return new Map([...sums].map(([b, v]) => [b, `${v.n}:${v.s}`]));
    },
    rowsOf: async (set) => {
      const wanted = new Set(set);
      const out = new Map<string, { n: number; k: string }>();
      await scan((h, texts) => {
        if (!wanted.has(h.slice(0, 3))) return;
        const v = out.get(h);
        if (v) v.n++;
        else out.set(h, { n: 1, k: JSON.stringify(texts) });
      });
      return out;
    },
    counts: async (digests) => {
      const wanted = new Set(digests);
      const out = new Map<string, number>();
      await scan((h) => {
        if (wanted.has(h)) out.set(h, (out.get(h) ?? 0) + 1);
      });
      return out;
    },
  };
}
