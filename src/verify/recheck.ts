import type pg from 'pg';
import { quoteIdent } from '../core/sql.js';
import type { Candidate } from './checksum.js';
import { SideSql, type VerifyShape } from './shape.js';

/**
 * Waits until the target reflects every source change committed at or before `lsn`.
 * `reached`: it does; `timeout`: not within the time allowed; `unavailable`: nothing
 * streams the slot, so the wait could not end (differences are then reported as read).
 */
export type ApplyBarrier = (lsn: string) => Promise<'reached' | 'timeout' | 'unavailable'>;

export interface Settled {
  missing: Candidate[];
  extra: Candidate[];
  different: Candidate[];
  /** Keys changed at the source during every re-check (hot rows): neither confirmed nor cleared. */
  unsettled: Candidate[];
}

export type Digest = { h: string; x?: string };

/** The target's digests of the live rows of `keys` (VerifyTarget.readKeys). */
export type TargetReader = (keys: readonly Candidate[]) => Promise<Map<string, string>>;

const BATCH = 5000;

/**
 * `JOIN unnest($1::text[], ...) ON <key> = <value cast to the key's bound type>`: the rows of
 * `keys` (key text as compared), compared as ranges compare them, with its parameters.
 */
export function joinKeys(sql: SideSql, keys: readonly Candidate[]): { join: string; values: unknown[] } {
  const key = sql.shape.key;
  const u = key.map((_, j) => `"__k${j}"`).join(', ');
  const on = key.map((c, j) => `${sql.keyCol(c)} = u."__k${j}"::${c.form.boundType}`).join(' AND ');
  return {
    join: `JOIN unnest(${key.map((_, j) => `$${j + 1}::text[]`).join(', ')}) AS u(${u}) ON ${on}`,
    values: key.map((_, j) => keys.map((c) => c.values[j] ?? null)),
  };
}

/** SQLSTATE class 22, data exception: a value its type's input rejects (out of range, malformed). */
export function isDataException(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'string' && code.startsWith('22');
}

const INTEGER_LIMITS: Record<string, bigint> = { smallint: 1n << 15n, integer: 1n << 31n, bigint: 1n << 63n };

/**
 * Whether `text` is not an integer of `type` as PostgreSQL prints one (undefined: `type` is
 * not an integer type). A key text in any other form cannot match a source key, whose text
 * is the printed form, so rejecting more than int4in does loses nothing.
 */
function notInteger(type: string, text: string | undefined): boolean | undefined {
  const limit = INTEGER_LIMITS[type];
  if (limit === undefined) return undefined;
  if (text === undefined || !/^-?(0|[1-9]\d*)$/.test(text)) return true;
  const n = BigInt(text);
  return n >= limit || n < -limit;
}

/**
 * `keys` split into those whose every value the source's key types accept (the cast of its
 * text to the key's bound type succeeds, sent in the server's encoding) and those they
 * reject (on `client` of either side: `sql.side`'s server decides): a target key the source's
 * type cannot hold (5000000000 for an integer key) cannot be a source row, and asking for it
 * would fail the whole query. Integers are checked here; keys of other types by a probe
 * that casts them, halved where it fails down to the rejected keys (a few round trips each).
 */
export async function sourceHoldable(client: pg.ClientBase, sql: SideSql, keys: readonly Candidate[]): Promise<{ held: Candidate[]; rejected: Candidate[] }> {
  const out = { held: [] as Candidate[], rejected: [] as Candidate[] };
  const key = sql.shape.key;
  const probed: Candidate[] = [];
  for (const c of keys) {
    const checks = key.map((k, j) => notInteger(k.form.boundType, c.values[j]));
    if (checks.some((x) => x === true)) out.rejected.push(c);
    else if (checks.every((x) => x === false)) out.held.push(c);
    else probed.push(c);
  }
  const u = key.map((_, j) => `"__k${j}"`).join(', ');
  const probe = `SELECT count(*) FROM unnest(${key.map((_, j) => `$${j + 1}::text[]`).join(', ')}) AS u(${u})
                  WHERE num_nonnulls(${key.map((c, j) => `u."__k${j}"::${c.form.boundType}`).join(', ')}) >= 0`;
  const split = async (list: readonly Candidate[]): Promise<void> => {
    if (list.length === 0) return;
    try {
      await client.query(probe, key.map((_, j) => list.map((c) => c.values[j] ?? null)));
      out.held.push(...list);
    } catch (err) {
      if (!isDataException(err)) throw err;
      if (list.length === 1) out.rejected.push(...list);
      else {
        const half = Math.ceil(list.length / 2);
        await split(list.slice(0, half));
        await split(list.slice(half));
      }
    }
  };
  for (let i = 0; i < probed.length; i += BATCH) await split(probed.slice(i, i + BATCH));
  return out;
}

/** Digests (and, at the source, xmin) of the rows of `keys` present on one side (a PostgreSQL database). */
export async function readKeys(client: pg.ClientBase, sql: SideSql, keys: readonly Candidate[], lock = false): Promise<Map<string, Digest>> {
  const out = new Map<string, Digest>();
  const xmin = sql.side === 'source' ? `, ${sql.from}.xmin::text` : '';
  for (let i = 0; i < keys.length; i += BATCH) {
    const { join, values } = joinKeys(sql, keys.slice(i, i + BATCH));
    const { rows } = await client.query({
      text: `SELECT ${sql.keyJson()}, ${sql.digest()}${xmin} FROM ${sql.from} ${join}
              WHERE ${sql.live}${lock ? ` FOR SHARE OF ${quoteIdent(sql.shape.source.table)}` : ''}`,
      values,
      rowMode: 'array',
    });
    for (const r of rows as string[][]) out.set(r[0] as string, { h: r[1] as string, ...(r[2] !== undefined ? { x: r[2] } : {}) });
  }
  return out;
}

const same = (a: Digest | undefined, b: Digest | undefined): boolean => (a === undefined ? b === undefined : b !== undefined && a.h === b.h);
const unchanged = (a: Digest | undefined, b: Digest | undefined): boolean => (a === undefined ? b === undefined : b !== undefined && a.h === b.h && a.x === b.x);

/** The source's WAL insert position: every change committed before it is at or below it. */
export async function currentLsn(source: pg.ClientBase): Promise<string> {
  const { rows } = await source.query<{ lsn: string }>('SELECT pg_current_wal_insert_lsn()::text AS lsn');
  return (rows[0] as { lsn: string }).lsn;
}

/**
 * Tells drift from lag for keys whose rows differed when their range was read. Each round
 * reads the source rows (digest and xmin), takes the source's WAL position, waits until
 * apply has passed it (`barrier`), reads the target rows, then the source rows again.
 * A key equal on both sides at either source read is no drift. A key whose source row did
 * not change between the two reads (same xmin) and whose target row still differs after
 * apply passed every change committed before the first read is drift. A key that changed
 * in between is checked in the next round. Keys that change in every round (hot rows) get
 * one last round holding FOR SHARE locks on their source rows (bounded by lock_timeout):
 * no change can commit to them while apply catches up, so the comparison is exact.
 * Without a barrier (no pipeline to wait for), one round compares the rows as they are.
 */
export async function settle(shape: VerifyShape, source: pg.ClientBase, target: TargetReader, keys: readonly Candidate[], barrier?: ApplyBarrier, rounds = 4): Promise<Settled> {
  const src = new SideSql(shape, 'source');
  // Keys the source's types cannot hold are absent there whatever happens: not asked for.
  const rejected = new Set(keys.length > 0 ? (await sourceHoldable(source, src, keys)).rejected.map((c) => c.key) : []);
  const readSource = (list: readonly Candidate[], lock = false): Promise<Map<string, Digest>> => readKeys(source, src, list.filter((c) => !rejected.has(c.key)), lock);
  const readTarget = async (list: readonly Candidate[]): Promise<Map<string, Digest>> => new Map([...(await target(list))].map(([k, h]) => [k, { h }]));
  const out: Settled = { missing: [], extra: [], different: [], unsettled: [] };
  const classify = (c: Candidate, s: Digest | undefined, t: Digest | undefined): void => {
    if (s === undefined) out.extra.push(c);
    else if (t === undefined) out.missing.push(c);
    else out.different.push(c);
  };
  let pending = [...keys];
  for (let round = 0; round < rounds && pending.length > 0; round++) {
    const s1 = await readSource(pending);
    const lsn = await currentLsn(source);
    const reached = barrier ? await barrier(lsn) : 'unavailable';
    const t = await readTarget(pending);
    const s2 = await readSource(pending);
    const next: Candidate[] = [];
    for (const c of pending) {
      const a = s1.get(c.key);
      const b = s2.get(c.key);
      const d = t.get(c.key);
      if (same(a, d) || same(b, d)) continue;
      if (reached !== 'reached') classify(c, b, d);
      else if (unchanged(a, b)) classify(c, b, d);
      else next.push(c);
    }
    pending = next;
    if (reached !== 'reached') break;
  }
  if (pending.length > 0 && barrier) {
    // Hot rows: hold their source rows still while apply catches up.
    await source.query("BEGIN; SET LOCAL lock_timeout = '2s'");
    try {
      const s1 = await readSource(pending, true);
      const reached = await barrier(await currentLsn(source));
      const t = await readTarget(pending);
      await source.query('COMMIT');
      const s2 = await readSource(pending);
      for (const c of pending) {
        const a = s1.get(c.key);
        const d = t.get(c.key);
        if (same(a, d) || same(s2.get(c.key), d)) continue;
        // A locked row cannot have changed; an absent one must still be absent.
        if (reached === 'reached' && (a !== undefined || s2.get(c.key) === undefined)) classify(c, a, d);
        else out.unsettled.push(c);
      }
    } catch {
      await source.query('ROLLBACK').catch(() => undefined);
      out.unsettled.push(...pending);
    }
  } else out.unsettled.push(...pending);
  return out;
}
