/**
 * The contract every Sink implementation passes (postgres, mysql, sqlite, redis, webhook...).
 *
 * Usage, in a `*.test.ts` file:
 *
 *   describeSinkContract('mysql', async () => ({ sink, createTable, readRow, storesPositions: true, close }));
 *
 * The factory runs once per `describe` (beforeAll) and must return a sink that has NOT been
 * prepared yet: the suite calls `prepare()` itself (twice, to check it is idempotent). Every
 * test uses its own table names (`sc_<case>_<random>`) and its own consumer group, so the
 * tests of one run share the harness without interfering.
 *
 * The test table has a fixed shape: `(id text primary key, v text, n text)`. All values are
 * text in the change events (as PostgreSQL's text output would be); `createTable` maps them to
 * whatever the target uses (e.g. VARCHAR in MySQL, a hash in Redis) and `readRow` reads them
 * back as strings (SQL NULL as null). Events use schema `public` unless the harness says
 * otherwise (`schema`).
 */
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ChangeEvent, ChangeOp, Row } from '../core/change.js';
import { PrerequisiteError, StructuralError, SynclineError } from '../core/errors.js';
import { formatLsn, versionOf } from '../core/lsn.js';
import type { ApplyOutcome, Sink } from '../sink/sink.js';

/**
 * A change whose `v` column holds this value must make its whole batch fail (the table made by
 * `createTable` rejects it, e.g. with `CHECK (v <> '__reject__')`). Required when
 * `storesPositions` is true: the atomicity case uses it.
 */
export const REJECT_VALUE = '__reject__';

export interface SinkHarness {
  /** The sink under test, not yet prepared. */
  sink: Sink;
  /**
   * Creates the test table `table` with columns `(id text primary key, v text, n text)` mapped
   * to the target's types, rejecting `v = REJECT_VALUE` where the target can (see REJECT_VALUE).
   * Targets without tables (key-value stores, webhooks) may do nothing.
   */
  createTable(table: string): Promise<void>;
  /**
   * The stored row of `table` with primary key `key` (`{ id: '...' }`), or undefined when the
   * target holds no (live) row for it. Must contain at least `id`, `v` and `n` as strings or
   * null; other (bookkeeping) columns are ignored.
   */
  readRow(table: string, key: Record<string, string>): Promise<Record<string, string | null> | undefined>;
  /** Whether the sink stores stream positions atomically with rows (should equal sink.storesPositions). */
  storesPositions: boolean;
  /**
   * True for table-based targets: applying to a table that does not exist fails with a
   * non-retriable PrerequisiteError (the whole table is wrong, not one row). Default false.
   */
  missingTableIsPrerequisite?: boolean;
  /** Schema name put in the change events; default `public`. */
  schema?: string;
  /** Closes the sink and whatever the harness opened; drops test databases if it wants. */
  close(): Promise<void>;
}

/** A version of the test changes: commit LSN `0/<lsn hex>`, sequence `seq` (default 1). */
export interface Ver {
  lsn: number;
  seq?: number;
}

/** Builds ChangeEvents for the test table shape. */
export class ChangeFactory {
  constructor(
    private readonly schema = 'public',
    private readonly source = 'contract',
  ) {}

  event(op: ChangeOp, table: string, id: string, ver: Ver | number, payload: Row | null, unchanged?: string[]): ChangeEvent {
    const { lsn, seq = 1 } = typeof ver === 'number' ? { lsn: ver } : ver;
    const commitLsn = BigInt(lsn);
    const e: ChangeEvent = {
      source: this.source,
      schema: this.schema,
      table,
      op,
      lsn: formatLsn(commitLsn - 1n > 0n ? commitLsn - 1n : commitLsn),
      commit_lsn: formatLsn(commitLsn),
      xid: 1000 + lsn,
      seq,
      commit_ts: new Date(Date.UTC(2024, 0, 1, 0, 0, lsn)).toISOString().replace('Z', '000Z'),
      key: op === 'TRUNCATE' ? {} : { id },
      payload,
      _version: versionOf(commitLsn, seq).toString(),
      _schema_version: 1,
    };
    if (unchanged) e.unchanged = unchanged;
    return e;
  }

  insert(table: string, id: string, ver: Ver | number, v: string | null, n: string | null = null): ChangeEvent {
    return this.event('INSERT', table, id, ver, { id, v, n });
  }

  update(table: string, id: string, ver: Ver | number, v: string | null, n: string | null = null): ChangeEvent {
    return this.event('UPDATE', table, id, ver, { id, v, n });
  }

  /** An UPDATE whose `n` was an unchanged TOASTed value: not in the payload, listed in `unchanged`. */
  updateKeepingN(table: string, id: string, ver: Ver | number, v: string | null): ChangeEvent {
    return this.event('UPDATE', table, id, ver, { id, v }, ['n']);
  }

  delete(table: string, id: string, ver: Ver | number): ChangeEvent {
    return this.event('DELETE', table, id, ver, null);
  }

  truncate(table: string, ver: Ver | number): ChangeEvent {
    return this.event('TRUNCATE', table, '', ver, null);
  }
}

/**
 * ABSENT_DELETE: a delete counts as applied when it removed a row. A delete of a row the
 * target does not hold (never had, or a replay whose first run folded it into a later
 * re-insert) still records its tombstone, but whether it counts as applied or stale is up to
 * the sink; the suite accepts both. (The SQL sinks count it applied when it advanced the
 * tombstone, newer than the table's truncation, and stale when the gate refused it: see
 * SqlDialect.delete.)
 */
const NO_POSITIONS: ReadonlyMap<number, bigint> = new Map();

export function describeSinkContract(name: string, factory: () => Promise<SinkHarness>): void {
  describe(`Sink contract: ${name}`, () => {
    let h: SinkHarness;
    let f: ChangeFactory;
    const run = randomBytes(3).toString('hex');
    let n = 0;
    /** A fresh table name, created on the target. */
    const table = async (label: string): Promise<string> => {
      const t = `sc_${label}_${run}_${++n}`;
      await h.createTable(t);
      return t;
    };
    const group = (label: string): string => `contract-${label}-${run}`;
    const apply = (changes: ChangeEvent[], positions: ReadonlyMap<number, bigint> = NO_POSITIONS, g = group('default')): Promise<ApplyOutcome> =>
      h.sink.apply(changes, positions, g);
    /** The row's id, v, n as strings (undefined when absent). */
    const row = async (t: string, id: string): Promise<{ id: string | null; v: string | null; n: string | null } | undefined> => {
      const r = await h.readRow(t, { id });
      return r === undefined ? undefined : { id: r.id ?? null, v: r.v ?? null, n: r.n ?? null };
    };

    beforeAll(async () => {
      h = await factory();
      f = new ChangeFactory(h.schema ?? 'public');
      await h.sink.prepare();
      // prepare() is idempotent: a restart calls it again on existing bookkeeping.
      await h.sink.prepare();
    }, 120_000);

    afterAll(async () => {
      await h?.close();
    });

    it('declares storesPositions as the harness says', () => {
      expect(h.sink.storesPositions).toBe(h.storesPositions);
    });

    it('applies inserts, updates and deletes', async () => {
      const t = await table('iud');
      let out = await apply([f.insert(t, 'a', 1, 'a1', 'na'), f.insert(t, 'b', 2, 'b1'), f.insert(t, 'c', 3, 'c1', 'nc')]);
      expect(out).toMatchObject({ applied: 3, stale: 0, superseded: 0 });
      expect(await row(t, 'a')).toEqual({ id: 'a', v: 'a1', n: 'na' });
      expect(await row(t, 'b')).toEqual({ id: 'b', v: 'b1', n: null });
      out = await apply([f.update(t, 'a', 4, 'a2', null), f.delete(t, 'b', 5), f.update(t, 'c', 6, 'c2', 'nc2')]);
      expect(out).toMatchObject({ applied: 3, stale: 0, superseded: 0 });
      expect(await row(t, 'a')).toEqual({ id: 'a', v: 'a2', n: null });
      expect(await row(t, 'b')).toBeUndefined();
      expect(await row(t, 'c')).toEqual({ id: 'c', v: 'c2', n: 'nc2' });
      expect(out.byTable.get(`${h.schema ?? 'public'}.${t}`)).toEqual({ applied: 3, stale: 0 });
    });

    it('keeps the values as given: empty string vs NULL, quotes, unicode, long text', async () => {
      const t = await table('values');
      const long = 'x'.repeat(5000);
      await apply([
        f.insert(t, 'empty', 1, '', null),
        f.insert(t, "it's \"q\" `b` \\", 2, 'Grüße 🚀 日本', long),
      ]);
      expect(await row(t, 'empty')).toEqual({ id: 'empty', v: '', n: null });
      expect(await row(t, "it's \"q\" `b` \\")).toEqual({ id: "it's \"q\" `b` \\", v: 'Grüße 🚀 日本', n: long });
    });

    it('folds several changes to one key in a batch into the newest (superseded)', async () => {
      const t = await table('collapse');
      const out = await apply([f.insert(t, 'a', 1, 'a1'), f.update(t, 'a', 2, 'a2'), f.update(t, 'a', 3, 'a3', 'n3'), f.insert(t, 'b', 4, 'b1'), f.delete(t, 'b', 5)]);
      expect(out.applied + out.stale + out.superseded).toBe(5);
      expect(out.superseded).toBe(3);
      // 'b' never reached the target: its folded delete removes nothing (see ABSENT_DELETE).
      expect(out.applied).toBeGreaterThanOrEqual(1);
      expect(await row(t, 'a')).toEqual({ id: 'a', v: 'a3', n: 'n3' });
      expect(await row(t, 'b')).toBeUndefined();
    });

    it('is idempotent: replaying a batch changes nothing and reports every change stale', async () => {
      const t = await table('replay');
      const t2 = await table('replay2');
      const batch = [
        f.insert(t, 'a', 1, 'a1', 'na'),
        f.insert(t, 'b', 2, 'b1'),
        f.insert(t2, 'x', 3, 'x1'),
        f.update(t, 'a', { lsn: 4, seq: 1 }, 'a2', 'na2'),
        f.delete(t, 'c', { lsn: 4, seq: 2 }),
        f.insert(t2, 'y', 5, 'y1'),
      ];
      const first = await apply(batch);
      expect(first.applied + first.stale + first.superseded).toBe(batch.length);
      // Only the delete of 'c', a row the target never had, may count as stale (see ABSENT_DELETE).
      expect(first.stale).toBeLessThanOrEqual(1);
      const before = { a: await row(t, 'a'), b: await row(t, 'b'), c: await row(t, 'c'), x: await row(t2, 'x'), y: await row(t2, 'y') };
      expect(before).toEqual({ a: { id: 'a', v: 'a2', n: 'na2' }, b: { id: 'b', v: 'b1', n: null }, c: undefined, x: { id: 'x', v: 'x1', n: null }, y: { id: 'y', v: 'y1', n: null } });
      const second = await apply(batch);
      expect(second.applied).toBe(0);
      expect(second.stale).toBe(batch.length - second.superseded);
      expect(second.superseded).toBe(first.superseded);
      const after = { a: await row(t, 'a'), b: await row(t, 'b'), c: await row(t, 'c'), x: await row(t2, 'x'), y: await row(t2, 'y') };
      expect(after).toEqual(before);
      // Replayed one change at a time, too.
      for (const c of batch) {
        const o = await apply([c]);
        expect(o).toMatchObject({ applied: 0, stale: 1 });
      }
      expect({ a: await row(t, 'a'), b: await row(t, 'b'), c: await row(t, 'c'), x: await row(t2, 'x'), y: await row(t2, 'y') }).toEqual(before);
    });

    it('per-row order: the newer version wins whatever order two batches arrive in', async () => {
      const t = await table('order');
      const v1 = f.insert(t, 'a', 1, 'v1');
      const v2 = f.update(t, 'a', 2, 'v2');
      expect(await apply([v2])).toMatchObject({ applied: 1, stale: 0 });
      expect(await apply([v1])).toMatchObject({ applied: 0, stale: 1 });
      expect(await row(t, 'a')).toEqual({ id: 'a', v: 'v2', n: null });
      // Within one commit, the sequence orders the changes.
      expect(await apply([f.update(t, 'a', { lsn: 7, seq: 3 }, 's3')])).toMatchObject({ applied: 1 });
      expect(await apply([f.update(t, 'a', { lsn: 7, seq: 2 }, 's2')])).toMatchObject({ applied: 0, stale: 1 });
      expect(await row(t, 'a')).toEqual({ id: 'a', v: 's3', n: null });
      expect(await apply([f.update(t, 'a', { lsn: 7, seq: 4 }, 's4')])).toMatchObject({ applied: 1 });
      expect(await row(t, 'a')).toEqual({ id: 'a', v: 's4', n: null });
    });

    it('rejects stale changes: equal or older versions are skipped and counted', async () => {
      const t = await table('stale');
      await apply([f.insert(t, 'a', 0x20, 'new')]);
      expect(await apply([f.update(t, 'a', 0x20, 'same-version')])).toMatchObject({ applied: 0, stale: 1 });
      expect(await apply([f.update(t, 'a', 0x1f, 'older')])).toMatchObject({ applied: 0, stale: 1 });
      // An older delete leaves the row alone. (It may still record its tombstone, harmlessly
      // older than the row; the SQL sinks count that stale, the gate refused it; either count passes.)
      const oldDelete = await apply([f.delete(t, 'a', 0x10)]);
      expect(oldDelete.applied + oldDelete.stale).toBe(1);
      expect(await row(t, 'a')).toEqual({ id: 'a', v: 'new', n: null });
      // Versions above 2^32 (commit LSN high word > 0) and above 2^53 compare exactly.
      const big = 0x1_0000_0000;
      expect(await apply([f.update(t, 'a', big, 'big')])).toMatchObject({ applied: 1 });
      expect(await apply([f.update(t, 'a', big - 1, 'below-big')])).toMatchObject({ stale: 1 });
      expect(await row(t, 'a')).toEqual({ id: 'a', v: 'big', n: null });
      const huge = f.update(t, 'a', 1, 'huge');
      const hugeLsn = (0x7fff_ffffn << 32n) | 0xffff_fff0n;
      huge.commit_lsn = formatLsn(hugeLsn);
      huge._version = versionOf(hugeLsn, 1).toString();
      const hugeMinus = { ...huge, payload: { id: 'a', v: 'huge-1', n: null }, seq: 0, _version: versionOf(hugeLsn, 0).toString() };
      expect(await apply([huge])).toMatchObject({ applied: 1 });
      expect(await apply([hugeMinus])).toMatchObject({ applied: 0, stale: 1 });
      expect(await row(t, 'a')).toEqual({ id: 'a', v: 'huge', n: null });
    });

    it('counts a mixed batch exactly: new rows, newer updates and stale updates', async () => {
      const t = await table('mixed');
      await apply([f.insert(t, 'old', 10, 'o10'), f.insert(t, 'cur', 11, 'c11')]);
      const out = await apply([f.insert(t, 'new', 12, 'n12'), f.update(t, 'old', 13, 'o13'), f.update(t, 'cur', 9, 'c9'), f.insert(t, 'new2', 14, 'n14')]);
      expect(out).toMatchObject({ applied: 3, stale: 1, superseded: 0 });
      expect(await row(t, 'new')).toEqual({ id: 'new', v: 'n12', n: null });
      expect(await row(t, 'old')).toEqual({ id: 'old', v: 'o13', n: null });
      expect(await row(t, 'cur')).toEqual({ id: 'cur', v: 'c11', n: null });
    });

    it('applies a large batch (more rows than one statement holds) and replays it as stale', async () => {
      const t = await table('large');
      const batch = Array.from({ length: 1234 }, (_, i) => f.insert(t, `k${i}`, { lsn: 100 + Math.floor(i / 10), seq: (i % 10) + 1 }, `v${i}`, i % 3 === 0 ? null : `n${i}`));
      expect(await apply(batch)).toMatchObject({ applied: 1234, stale: 0 });
      expect(await row(t, 'k0')).toEqual({ id: 'k0', v: 'v0', n: null });
      expect(await row(t, 'k1232')).toEqual({ id: 'k1232', v: 'v1232', n: 'n1232' });
      const deletes = batch.filter((_, i) => i % 2 === 0).map((c, i) => f.delete(t, c.key.id as string, { lsn: 1000, seq: i + 1 }));
      expect(await apply([...batch, ...deletes])).toMatchObject({ applied: 617, stale: 617, superseded: 617 });
      expect(await row(t, 'k0')).toBeUndefined();
      expect(await row(t, 'k1')).toEqual({ id: 'k1', v: 'v1', n: 'n1' });
    });

    it('keeps a tombstone: a replayed older insert does not resurrect a deleted row', async () => {
      const t = await table('tomb');
      await apply([f.insert(t, 'a', 1, 'v1')]);
      expect(await apply([f.delete(t, 'a', 5)])).toMatchObject({ applied: 1, stale: 0 });
      expect(await row(t, 'a')).toBeUndefined();
      expect(await apply([f.insert(t, 'a', 3, 'v3')])).toMatchObject({ applied: 0, stale: 1 });
      expect(await apply([f.update(t, 'a', 4, 'v4')])).toMatchObject({ applied: 0, stale: 1 });
      expect(await apply([f.delete(t, 'a', 5)])).toMatchObject({ applied: 0, stale: 1 });
      expect(await row(t, 'a')).toBeUndefined();
      // A delete of a row the target never had still leaves a tombstone (counted either way, see ABSENT_DELETE).
      const ghost = await apply([f.delete(t, 'ghost', 9)]);
      expect(ghost.applied + ghost.stale).toBe(1);
      expect(await apply([f.insert(t, 'ghost', 8, 'g8')])).toMatchObject({ stale: 1 });
      expect(await row(t, 'ghost')).toBeUndefined();
    });

    it('re-inserts after a delete when the insert is newer', async () => {
      const t = await table('reinsert');
      await apply([f.insert(t, 'a', 1, 'v1', 'n1')]);
      await apply([f.delete(t, 'a', 2)]);
      expect(await apply([f.insert(t, 'a', 3, 'v3')])).toMatchObject({ applied: 1, stale: 0 });
      expect(await row(t, 'a')).toEqual({ id: 'a', v: 'v3', n: null });
      // The re-inserted row is version-gated as usual; the old tombstone does not block newer ones.
      expect(await apply([f.update(t, 'a', 4, 'v4')])).toMatchObject({ applied: 1 });
      expect(await apply([f.insert(t, 'a', 3, 'v3')])).toMatchObject({ stale: 1 });
      expect(await row(t, 'a')).toEqual({ id: 'a', v: 'v4', n: null });
      // Delete and newer re-insert in one batch.
      await apply([f.delete(t, 'a', 5), f.insert(t, 'a', 6, 'v6')]);
      expect(await row(t, 'a')).toEqual({ id: 'a', v: 'v6', n: null });
    });

    it('TRUNCATE is a watermark: older rows go, older changes stay out, newer ones apply', async () => {
      const t = await table('trunc');
      const other = await table('trunc_other');
      await apply([f.insert(t, 'a', 1, 'a1'), f.insert(t, 'b', 2, 'b2'), f.insert(t, 'late', 12, 'l12'), f.insert(other, 'o', 3, 'o3')]);
      expect(await apply([f.truncate(t, 10)])).toMatchObject({ applied: 1, stale: 0 });
      expect(await row(t, 'a')).toBeUndefined();
      expect(await row(t, 'b')).toBeUndefined();
      // A row written by a newer change (another partition got ahead) survives the truncation.
      expect(await row(t, 'late')).toEqual({ id: 'late', v: 'l12', n: null });
      // Other tables are untouched.
      expect(await row(other, 'o')).toEqual({ id: 'o', v: 'o3', n: null });
      expect(await apply([f.insert(t, 'c', 9, 'c9')])).toMatchObject({ applied: 0, stale: 1 });
      expect(await row(t, 'c')).toBeUndefined();
      expect(await apply([f.insert(t, 'd', 11, 'd11')])).toMatchObject({ applied: 1, stale: 0 });
      expect(await row(t, 'd')).toEqual({ id: 'd', v: 'd11', n: null });
      // Replayed truncation: stale, and it removes nothing newer.
      expect(await apply([f.truncate(t, 10)])).toMatchObject({ applied: 0, stale: 1 });
      expect(await row(t, 'd')).toEqual({ id: 'd', v: 'd11', n: null });
      // A truncation and newer inserts in one batch: the truncation happens first.
      await apply([f.insert(t, 'e', 21, 'e21'), f.truncate(t, 20)]);
      expect(await row(t, 'd')).toBeUndefined();
      expect(await row(t, 'e')).toEqual({ id: 'e', v: 'e21', n: null });
    });

    it('keeps the stored value of an unchanged TOAST column', async () => {
      const t = await table('toast');
      const big = 'T'.repeat(10_000);
      await apply([f.insert(t, 'a', 1, 'v1', big)]);
      expect(await apply([f.updateKeepingN(t, 'a', 2, 'v2')])).toMatchObject({ applied: 1 });
      expect(await row(t, 'a')).toEqual({ id: 'a', v: 'v2', n: big });
      // Folded with a preceding change in the same batch, the value comes from that change.
      await apply([f.update(t, 'a', 3, 'v3', 'fresh'), f.updateKeepingN(t, 'a', 4, 'v4')]);
      expect(await row(t, 'a')).toEqual({ id: 'a', v: 'v4', n: 'fresh' });
      // Mixed in one batch with a row that sends every column.
      await apply([f.updateKeepingN(t, 'a', 5, 'v5'), f.insert(t, 'b', 6, 'b6', 'nb')]);
      expect(await row(t, 'a')).toEqual({ id: 'a', v: 'v5', n: 'fresh' });
      expect(await row(t, 'b')).toEqual({ id: 'b', v: 'b6', n: 'nb' });
    });

    it('refuses an unchanged-TOAST update of a row the target lacks (UNCHANGED_VALUE_MISSING), never writes NULL; stale after a newer delete', async () => {
      const t = await table('toastgone');
      const err = await apply([f.updateKeepingN(t, 'x', 2, 'v2')]).then(() => undefined, (e: unknown) => e);
      expect(err).toBeInstanceOf(SynclineError);
      expect((err as SynclineError).code).toBe('UNCHANGED_VALUE_MISSING');
      expect((err as SynclineError).retriable).toBe(false);
      expect(await row(t, 'x')).toBeUndefined();
      // Deleted by a newer change: the old update is merely stale.
      await apply([f.insert(t, 'y', 1, 'v1', 'big'), f.delete(t, 'y', 3)]);
      expect(await apply([f.updateKeepingN(t, 'y', 2, 'v2')])).toMatchObject({ applied: 0, stale: 1 });
      expect(await row(t, 'y')).toBeUndefined();
      // Capture found the row gone from this key at the source (a later change of the key
      // decides it): absent at the target, the change is stale, not refused; present, it
      // applies and keeps the stored value.
      const gone = { ...f.updateKeepingN(t, 'z', 5, 'v5'), superseded_at_source: true as const };
      expect(await apply([gone, f.insert(t, 'w', 6, 'w6', 'nw')])).toMatchObject({ applied: 1, stale: 1 });
      expect(await row(t, 'z')).toBeUndefined();
      expect(await apply([{ ...f.updateKeepingN(t, 'w', 7, 'w7'), superseded_at_source: true as const }])).toMatchObject({ applied: 1, stale: 0 });
      expect(await row(t, 'w')).toEqual({ id: 'w', v: 'w7', n: 'nw' });
    });

    it('returns no positions for a group it never saw', async () => {
      expect(await h.sink.positions(group('never'))).toEqual(new Map());
    });

    it('stores positions with the rows (or, where it cannot, none); a failing batch stores neither rows nor positions', async () => {
      if (!h.storesPositions) {
        // A sink without transactions leaves positions to the stream's group offsets.
        expect(h.sink.storesPositions).toBe(false);
        await apply([], new Map([[0, 5n]]), group('no-positions'));
        expect(await h.sink.positions(group('no-positions'))).toEqual(new Map());
        return;
      }
      const t = await table('atomic');
      const g = group('atomic');
      const other = group('atomic-other');
      await apply([f.insert(t, 'a', 1, 'a1')], new Map([[0, 5n], [2, 7n]]), g);
      expect(await h.sink.positions(g)).toEqual(new Map([[0, 5n], [2, 7n]]));
      // Positions only, no changes (an all-filtered batch).
      await apply([], new Map([[1, 3n]]), g);
      expect(await h.sink.positions(g)).toEqual(new Map([[0, 5n], [1, 3n], [2, 7n]]));
      // Groups are independent; offsets past 2^53 are exact.
      const huge = (1n << 62n) + 1n;
      await apply([], new Map([[0, huge]]), other);
      expect(await h.sink.positions(other)).toEqual(new Map([[0, huge]]));
      expect(await h.sink.positions(g)).toEqual(new Map([[0, 5n], [1, 3n], [2, 7n]]));

      const failing = [f.update(t, 'a', 2, 'a2'), f.insert(t, 'b', 3, 'b3'), f.insert(t, 'bad', 4, REJECT_VALUE)];
      const err = await apply(failing, new Map([[0, 9n], [2, 9n]]), g).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(SynclineError);
      expect((err as SynclineError).retriable).toBe(false);
      expect(await h.sink.positions(g)).toEqual(new Map([[0, 5n], [1, 3n], [2, 7n]]));
      expect(await row(t, 'a')).toEqual({ id: 'a', v: 'a1', n: null });
      expect(await row(t, 'b')).toBeUndefined();
      expect(await row(t, 'bad')).toBeUndefined();
      // A failing batch with a delete and a truncation rolls those back too (tombstone and watermark included).
      const err2 = await apply([f.delete(t, 'a', 5), f.truncate(t, 6), f.insert(t, 'bad', 7, REJECT_VALUE)], new Map([[0, 10n]]), g).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(err2).toBeInstanceOf(SynclineError);
      expect(await row(t, 'a')).toEqual({ id: 'a', v: 'a1', n: null });
      expect(await h.sink.positions(g)).toEqual(new Map([[0, 5n], [1, 3n], [2, 7n]]));
      // Neither the tombstone (v5) nor the watermark (v6) survived: a v4 insert of another row still applies.
      expect(await apply([f.update(t, 'a', 4, 'a4'), f.insert(t, 'c', { lsn: 4, seq: 2 }, 'c4')], new Map([[0, 11n]]), g)).toMatchObject({ applied: 2 });
      expect(await row(t, 'a')).toEqual({ id: 'a', v: 'a4', n: null });
      expect(await row(t, 'c')).toEqual({ id: 'c', v: 'c4', n: null });
      // The same kind of batch without the bad row then succeeds, positions and all.
      await apply([f.delete(t, 'a', 8), f.insert(t, 'b', 9, 'b9')], new Map([[0, 12n], [2, 12n]]), g);
      expect(await h.sink.positions(g)).toEqual(new Map([[0, 12n], [1, 3n], [2, 12n]]));
      expect(await row(t, 'a')).toBeUndefined();
      expect(await row(t, 'b')).toEqual({ id: 'b', v: 'b9', n: null });
    });

    it('a table missing on the target is a non-retriable prerequisite error (key-value sinks have no tables to miss)', async () => {
      if (!h.missingTableIsPrerequisite) {
        // Nothing to create first: the change simply lands.
        const t = `sc_missing_${run}`;
        await apply([f.insert(t, 'a', 1, 'x')]);
        expect(await row(t, 'a')).toEqual({ id: 'a', v: 'x', n: null });
        return;
      }
      const err = await apply([f.insert(`sc_missing_${run}`, 'a', 1, 'x')]).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(PrerequisiteError);
      expect((err as SynclineError).retriable).toBe(false);
      // It names the table (as the change does), so apply holds that table alone.
      expect(err).toBeInstanceOf(StructuralError);
      expect((err as StructuralError).table).toBe(`${h.schema ?? 'public'}.sc_missing_${run}`);
      // A table missing in the same batch as a good one is still named.
      const mixed = await apply([f.insert(await table('beside_missing'), 'a', 1, 'x'), f.insert(`sc_missing2_${run}`, 'a', 2, 'x')]).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect((mixed as StructuralError).table).toBe(`${h.schema ?? 'public'}.sc_missing2_${run}`);
      // The sink keeps working for other tables afterwards.
      const t = await table('after_missing');
      expect(await apply([f.insert(t, 'a', 1, 'x')])).toMatchObject({ applied: 1 });
    });
  });
}

/** A harness whose sink runs with `delete_mode: soft`. Its `readRow` returns live rows only. */
export interface SoftDeleteHarness extends SinkHarness {
  /**
   * The stored row of `table` with key `key` whatever its `_deleted_at`, or undefined when
   * the target holds no row at all. `deletedAt` is the row's `_deleted_at` as UTC text
   * `YYYY-MM-DD HH:MM:SS[.ffffff]`, null for a live row.
   */
  readStored(table: string, key: Record<string, string>): Promise<{ id: string; v: string | null; n: string | null; deletedAt: string | null } | undefined>;
}

/** `commit_ts` of a test change at `lsn`, as the UTC text readStored compares (to the second). */
function commitSecond(change: ChangeEvent): string {
  return change.commit_ts.slice(0, 19).replace('T', ' ');
}

/**
 * `sink.delete_mode: soft`, the postgres sink's semantics every SQL sink shares: a delete keeps
 * the row with `_deleted_at` set to the delete's commit time and takes the delete's version
 * (and leaves a tombstone), so replays are stale and cannot resurrect or double a row; a
 * newer insert or update clears `_deleted_at`. Run it next to `describeSinkContract` with the
 * same soft harness (whose readRow hides deleted rows), which covers the rest.
 */
export function describeSoftDeleteContract(name: string, factory: () => Promise<SoftDeleteHarness>): void {
  describe(`Sink contract, delete_mode: soft: ${name}`, () => {
    let h: SoftDeleteHarness;
    let f: ChangeFactory;
    const run = randomBytes(3).toString('hex');
    let n = 0;
    const table = async (label: string): Promise<string> => {
      const t = `sd_${label}_${run}_${++n}`;
      await h.createTable(t);
      return t;
    };
    const apply = (changes: ChangeEvent[], positions: ReadonlyMap<number, bigint> = NO_POSITIONS): Promise<ApplyOutcome> => h.sink.apply(changes, positions, `soft-${run}`);
    const stored = async (t: string, id: string): Promise<{ id: string; v: string | null; n: string | null; deletedAt: string | null } | undefined> => {
      const r = await h.readStored(t, { id });
      // Compared to the second: targets differ in how many fractional digits they keep.
      return r === undefined ? undefined : { ...r, deletedAt: r.deletedAt === null ? null : r.deletedAt.slice(0, 19) };
    };
    const live = async (t: string, id: string): Promise<{ id: string | null; v: string | null; n: string | null } | undefined> => {
      const r = await h.readRow(t, { id });
      return r === undefined ? undefined : { id: r.id ?? null, v: r.v ?? null, n: r.n ?? null };
    };

    beforeAll(async () => {
      h = await factory();
      f = new ChangeFactory(h.schema ?? 'public');
      await h.sink.prepare();
    }, 120_000);

    afterAll(async () => {
      await h?.close();
    });

    it('a delete keeps the row, with _deleted_at = the commit time; readers of live rows no longer see it', async () => {
      const t = await table('keep');
      await apply([f.insert(t, 'a', 1, 'v1', 'n1'), f.insert(t, 'b', 2, 'b2')]);
      expect(await stored(t, 'a')).toEqual({ id: 'a', v: 'v1', n: 'n1', deletedAt: null });
      const del = f.delete(t, 'a', 5);
      expect(await apply([del])).toMatchObject({ applied: 1, stale: 0 });
      expect(await live(t, 'a')).toBeUndefined();
      expect(await stored(t, 'a')).toEqual({ id: 'a', v: 'v1', n: 'n1', deletedAt: commitSecond(del) });
      expect(await stored(t, 'b')).toEqual({ id: 'b', v: 'b2', n: null, deletedAt: null });
    });

    it('replays cannot resurrect or double a soft-deleted row', async () => {
      const t = await table('replay');
      const history = [f.insert(t, 'a', 1, 'v1'), f.update(t, 'a', 3, 'v3'), f.update(t, 'a', 4, 'v4')];
      const del = f.delete(t, 'a', 5);
      await apply(history);
      await apply([del]);
      const before = await stored(t, 'a');
      expect(before).toEqual({ id: 'a', v: 'v4', n: null, deletedAt: commitSecond(del) });
      // The delete again, every older change, one at a time and as one batch: all stale.
      expect(await apply([del])).toMatchObject({ applied: 0, stale: 1 });
      for (const c of history) expect(await apply([c])).toMatchObject({ applied: 0, stale: 1 });
      const all = await apply([...history, del]);
      expect(all.applied).toBe(0);
      expect(await stored(t, 'a')).toEqual(before);
      expect(await live(t, 'a')).toBeUndefined();
    });

    it('a newer insert or update clears _deleted_at; the old delete replayed afterwards stays stale', async () => {
      const t = await table('revive');
      await apply([f.insert(t, 'a', 1, 'v1', 'n1')]);
      const del = f.delete(t, 'a', 2);
      await apply([del]);
      expect(await apply([f.insert(t, 'a', 3, 'v3')])).toMatchObject({ applied: 1, stale: 0 });
      expect(await stored(t, 'a')).toEqual({ id: 'a', v: 'v3', n: null, deletedAt: null });
      expect(await apply([del])).toMatchObject({ applied: 0, stale: 1 });
      expect(await live(t, 'a')).toEqual({ id: 'a', v: 'v3', n: null });
      // An update (not only an insert) revives, too.
      const del2 = f.delete(t, 'a', 5);
      await apply([del2]);
      expect(await stored(t, 'a')).toMatchObject({ deletedAt: commitSecond(del2) });
      expect(await apply([f.update(t, 'a', 6, 'v6')])).toMatchObject({ applied: 1 });
      expect(await stored(t, 'a')).toEqual({ id: 'a', v: 'v6', n: null, deletedAt: null });
      // Delete and newer re-insert folded into one batch: the row ends up live.
      await apply([f.delete(t, 'a', 7), f.insert(t, 'a', 8, 'v8')]);
      expect(await stored(t, 'a')).toEqual({ id: 'a', v: 'v8', n: null, deletedAt: null });
      // Insert and newer delete of a new key in one batch: the delete wins, no live row.
      await apply([f.insert(t, 'b', 9, 'b9'), f.delete(t, 'b', 10)]);
      expect(await live(t, 'b')).toBeUndefined();
    });

    it('an older delete leaves a newer row alone; a delete of an absent row creates no row but keeps older inserts out', async () => {
      const t = await table('gate');
      await apply([f.insert(t, 'a', 10, 'v10')]);
      const old = await apply([f.delete(t, 'a', 5)]);
      expect(old.applied + old.stale).toBe(1);
      expect(await stored(t, 'a')).toEqual({ id: 'a', v: 'v10', n: null, deletedAt: null });
      const ghost = await apply([f.delete(t, 'ghost', 9)]);
      expect(ghost.applied + ghost.stale).toBe(1);
      expect(await stored(t, 'ghost')).toBeUndefined();
      expect(await apply([f.insert(t, 'ghost', 8, 'g8')])).toMatchObject({ applied: 0, stale: 1 });
      expect(await stored(t, 'ghost')).toBeUndefined();
      expect(await apply([f.insert(t, 'ghost', 11, 'g11')])).toMatchObject({ applied: 1 });
      expect(await stored(t, 'ghost')).toEqual({ id: 'ghost', v: 'g11', n: null, deletedAt: null });
    });

    it('replaying a mixed batch leaves every stored row, deleted or live, exactly as it was', async () => {
      const t = await table('mixed');
      const batch = Array.from({ length: 40 }, (_, i) => f.insert(t, `k${i}`, { lsn: 20, seq: i + 1 }, `v${i}`));
      const later = [
        ...Array.from({ length: 20 }, (_, i) => f.delete(t, `k${i * 2}`, { lsn: 30, seq: i + 1 })),
        f.update(t, 'k1', { lsn: 31, seq: 1 }, 'u1'),
        f.delete(t, 'k3', { lsn: 31, seq: 2 }),
        f.insert(t, 'k3', { lsn: 31, seq: 3 }, 'again'),
      ];
      await apply(batch);
      await apply(later);
      const ids = batch.map((c) => c.key.id as string);
      const snapshot = async (): Promise<unknown[]> => {
        const out = [];
        for (const id of ids) out.push(await stored(t, id));
        return out;
      };
      const before = await snapshot();
      expect(before.filter((r) => (r as { deletedAt: string | null }).deletedAt !== null)).toHaveLength(20);
      expect(await stored(t, 'k3')).toEqual({ id: 'k3', v: 'again', n: null, deletedAt: null });
      const again = await apply([...batch, ...later]);
      expect(again.applied).toBe(0);
      expect(await snapshot()).toEqual(before);
    });

    it('TRUNCATE removes the older rows, soft-deleted or not', async () => {
      const t = await table('trunc');
      await apply([f.insert(t, 'a', 1, 'a1'), f.insert(t, 'b', 2, 'b2'), f.delete(t, 'b', 3), f.insert(t, 'late', 12, 'l12')]);
      await apply([f.truncate(t, 10)]);
      expect(await stored(t, 'a')).toBeUndefined();
      expect(await stored(t, 'b')).toBeUndefined();
      expect(await stored(t, 'late')).toEqual({ id: 'late', v: 'l12', n: null, deletedAt: null });
    });

    it('a failing batch rolls its soft deletes back', async () => {
      if (!h.storesPositions) return;
      const t = await table('atomic');
      await apply([f.insert(t, 'a', 1, 'a1')]);
      const err = await apply([f.delete(t, 'a', 2), f.insert(t, 'bad', 3, REJECT_VALUE)]).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(SynclineError);
      expect(await stored(t, 'a')).toEqual({ id: 'a', v: 'a1', n: null, deletedAt: null });
      // Nothing of it survived, tombstone included: the same delete now applies.
      expect(await apply([f.delete(t, 'a', 2)])).toMatchObject({ applied: 1 });
    });
  });
}

/**
 * A harness for keyless tables (REPLICA IDENTITY FULL without a primary key: a multiset of
 * whole rows). `createTable` makes the keyed test table as for `describeSinkContract`.
 */
export interface KeylessSinkHarness extends SinkHarness {
  /**
   * Creates `table` with columns `(id text, v text, n text)` and no primary key or unique
   * constraint, rejecting `v = REJECT_VALUE` where the target can. Text columns compare
   * case-sensitively at the source; the target's default collation may not (MySQL).
   */
  createKeylessTable(table: string): Promise<void>;
  /** Every row of `table` (`id`, `v`, `n` as strings or null; bookkeeping columns left out), any order. */
  readRows(table: string): Promise<KeylessRow[]>;
}

export interface KeylessRow {
  id: string | null;
  v: string | null;
  n: string | null;
}

/** Builds ChangeEvents of a keyless table (`key` {}, whole row images). */
export class KeylessChangeFactory {
  constructor(
    private readonly schema = 'public',
    private readonly source = 'contract',
  ) {}

  event(op: ChangeOp, table: string, ver: Ver | number, payload: KeylessRow | null, before?: KeylessRow): ChangeEvent {
    const { lsn, seq = 1 } = typeof ver === 'number' ? { lsn: ver } : ver;
    const commitLsn = BigInt(lsn);
    const e: ChangeEvent = {
      source: this.source,
      schema: this.schema,
      table,
      op,
      lsn: formatLsn(commitLsn - 1n > 0n ? commitLsn - 1n : commitLsn),
      commit_lsn: formatLsn(commitLsn),
      xid: 1000 + lsn,
      seq,
      commit_ts: new Date(Date.UTC(2024, 0, 1, 0, 0, lsn)).toISOString().replace('Z', '000Z'),
      key: {},
      payload: payload && { ...payload },
      _version: versionOf(commitLsn, seq).toString(),
      _schema_version: 1,
    };
    if (before) e.before = { ...before };
    return e;
  }

  insert(table: string, ver: Ver | number, row: KeylessRow): ChangeEvent {
    return this.event('INSERT', table, ver, row);
  }

  read(table: string, ver: Ver | number, row: KeylessRow): ChangeEvent {
    return this.event('READ', table, ver, row);
  }

  update(table: string, ver: Ver | number, before: KeylessRow, after: KeylessRow): ChangeEvent {
    return this.event('UPDATE', table, ver, after, before);
  }

  delete(table: string, ver: Ver | number, before: KeylessRow): ChangeEvent {
    return this.event('DELETE', table, ver, null, before);
  }

  truncate(table: string, ver: Ver | number): ChangeEvent {
    return this.event('TRUNCATE', table, ver, null);
  }

  /** The start of the table's snapshot: a TRUNCATE with `snapshot_reset`; READ rows follow. */
  reset(table: string, ver: Ver | number): ChangeEvent {
    const e = this.truncate(table, ver);
    e.snapshot_reset = true;
    return e;
  }
}

/** Rows in a canonical order, for comparing multisets. */
export function sortedRows(rows: readonly KeylessRow[]): KeylessRow[] {
  const text = (r: KeylessRow): string => JSON.stringify([r.id, r.v, r.n]);
  return rows.map((r) => ({ id: r.id, v: r.v, n: r.n })).sort((a, b) => (text(a) < text(b) ? -1 : text(a) > text(b) ? 1 : 0));
}

/**
 * Keyless tables (a multiset of whole rows; README "The change event", `key` {}): INSERT/READ
 * add a row, duplicates too; DELETE removes exactly one row equal to `before` (every column,
 * NULL-safe, exact values); UPDATE removes one and adds the new one; a per-table high-water
 * version makes replays no-ops; TRUNCATE and a snapshot reset go through the truncation
 * watermark; a missing row to remove is stale before the table's first snapshot reset and
 * MULTISET_ROW_MISSING (non-retriable: dead-lettered) after it; `unchanged` on a keyless
 * change is UNCHANGED_VALUE_MISSING.
 */
export function describeKeylessSinkContract(name: string, factory: () => Promise<KeylessSinkHarness>): void {
  describe(`Sink contract, keyless tables: ${name}`, () => {
    let h: KeylessSinkHarness;
    let f: KeylessChangeFactory;
    let kf: ChangeFactory;
    const run = randomBytes(3).toString('hex');
    let n = 0;
    const table = async (label: string): Promise<string> => {
      const t = `kl_${label}_${run}_${++n}`;
      await h.createKeylessTable(t);
      return t;
    };
    const group = (label: string): string => `keyless-${label}-${run}`;
    const apply = (changes: ChangeEvent[], positions: ReadonlyMap<number, bigint> = NO_POSITIONS, g = group('default')): Promise<ApplyOutcome> =>
      h.sink.apply(changes, positions, g);
    const rows = async (t: string): Promise<KeylessRow[]> => sortedRows(await h.readRows(t));
    const r = (id: string | null, v: string | null = null, nn: string | null = null): KeylessRow => ({ id, v, n: nn });
    const failure = (p: Promise<unknown>): Promise<unknown> =>
      p.then(
        () => undefined,
        (e: unknown) => e,
      );

    beforeAll(async () => {
      h = await factory();
      f = new KeylessChangeFactory(h.schema ?? 'public');
      kf = new ChangeFactory(h.schema ?? 'public');
      await h.sink.prepare();
      await h.sink.prepare();
    }, 120_000);

    afterAll(async () => {
      await h?.close();
    });

    it('keyless: inserts add rows (duplicates too), a delete removes exactly one equal row, an update replaces one', async () => {
      const t = await table('iud');
      let out = await apply([f.insert(t, 1, r('a', '1')), f.insert(t, 2, r('a', '1')), f.insert(t, 3, r('b', '2', 'x')), f.insert(t, 4, r('a', '1'))]);
      expect(out).toMatchObject({ applied: 4, stale: 0, superseded: 0 });
      expect(await rows(t)).toEqual(sortedRows([r('a', '1'), r('a', '1'), r('a', '1'), r('b', '2', 'x')]));
      out = await apply([f.delete(t, 5, r('a', '1')), f.update(t, 6, r('a', '1'), r('a', '9')), f.update(t, 7, r('b', '2', 'x'), r('b', '2', 'y'))]);
      expect(out).toMatchObject({ applied: 3, stale: 0 });
      expect(out.byTable.get(`${h.schema ?? 'public'}.${t}`)).toEqual({ applied: 3, stale: 0 });
      expect(await rows(t)).toEqual(sortedRows([r('a', '1'), r('a', '9'), r('b', '2', 'y')]));
    });

    it('keyless: rows match NULL-safely and exactly (case, trailing spaces, empty string vs NULL, quotes, unicode)', async () => {
      const t = await table('exact');
      const all = [r('a', null, null), r('a', null, ''), r('A', null, null), r('a ', null, null), r("it's \"q\" `b` \\", 'Grüße 🚀', null), r(null, null, null)];
      await apply(all.map((row, i) => f.insert(t, 1 + i, row)));
      expect(await rows(t)).toEqual(sortedRows(all));
      await apply([f.delete(t, 10, r('a', null, null))]);
      expect(await rows(t)).toEqual(sortedRows(all.filter((_, i) => i !== 0)));
      await apply([f.delete(t, 11, r('a', null, '')), f.delete(t, 12, r(null, null, null)), f.update(t, 13, r("it's \"q\" `b` \\", 'Grüße 🚀', null), r('q', 'grüße 🚀', null))]);
      expect(await rows(t)).toEqual(sortedRows([r('A', null, null), r('a ', null, null), r('q', 'grüße 🚀', null)]));
    });

    it('keyless: a row added earlier in the same batch can be removed by a later change of it', async () => {
      const t = await table('in_batch');
      const out = await apply([f.insert(t, 1, r('a')), f.update(t, 2, r('a'), r('b')), f.insert(t, 3, r('c')), f.delete(t, 4, r('b')), f.insert(t, 5, r('a'))]);
      expect(out).toMatchObject({ superseded: 0 });
      expect(await rows(t)).toEqual(sortedRows([r('a'), r('c')]));
    });

    it('keyless: replaying a batch, or an overlapping range, changes nothing and counts it stale', async () => {
      const t = await table('replay');
      const first = [f.insert(t, 1, r('a')), f.insert(t, 2, r('a')), f.update(t, 3, r('a'), r('b'))];
      const second = [f.delete(t, 4, r('b')), f.insert(t, 5, r('c')), f.insert(t, { lsn: 5, seq: 2 }, r('c'))];
      await apply(first);
      await apply(second);
      const expected = sortedRows([r('a'), r('c'), r('c')]);
      expect(await rows(t)).toEqual(expected);
      expect(await apply(first)).toMatchObject({ applied: 0, stale: 3 });
      expect(await apply([...first.slice(1), ...second])).toMatchObject({ applied: 0, stale: 5 });
      // A batch carrying a duplicate of a change it also carries (at-least-once within a batch).
      expect(await apply([...second, ...second])).toMatchObject({ applied: 0, stale: 6 });
      expect(await rows(t)).toEqual(expected);
      // An overlapping range with new changes at its end: only the new ones apply.
      expect(await apply([...second, f.delete(t, 6, r('c')), f.delete(t, 6, r('c'))])).toMatchObject({ applied: 1, stale: 4 });
      expect(await rows(t)).toEqual(sortedRows([r('a'), r('c')]));
    });

    it('keyless: TRUNCATE is a watermark: older rows go, older changes stay out, newer ones apply', async () => {
      const t = await table('trunc');
      await apply([f.insert(t, 1, r('a')), f.insert(t, 2, r('b'))]);
      let out = await apply([f.insert(t, 3, r('c')), f.truncate(t, 4), f.insert(t, 5, r('d')), f.insert(t, 6, r('d'))]);
      expect(await rows(t)).toEqual(sortedRows([r('d'), r('d')]));
      expect(out.applied).toBe(3);
      // A replay of everything before and including the truncation is stale.
      out = await apply([f.insert(t, 1, r('a')), f.insert(t, 2, r('b')), f.insert(t, 3, r('c')), f.truncate(t, 4)]);
      expect(out).toMatchObject({ applied: 0, stale: 4 });
      expect(await rows(t)).toEqual(sortedRows([r('d'), r('d')]));
    });

    it('keyless: a snapshot reset then READ rows replace the content; the snapshot replayed is stale', async () => {
      const t = await table('snapshot');
      await apply([f.insert(t, 1, r('old')), f.insert(t, 2, r('x'))]);
      const snapshot = [f.reset(t, { lsn: 3, seq: 1 }), f.read(t, { lsn: 3, seq: 2 }, r('x')), f.read(t, { lsn: 3, seq: 3 }, r('y')), f.read(t, { lsn: 3, seq: 4 }, r('y'))];
      await apply(snapshot.slice(0, 2));
      await apply(snapshot.slice(2));
      expect(await rows(t)).toEqual(sortedRows([r('x'), r('y'), r('y')]));
      expect(await apply(snapshot)).toMatchObject({ applied: 0, stale: 4 });
      await apply([f.delete(t, 4, r('y'))]);
      expect(await rows(t)).toEqual(sortedRows([r('x'), r('y')]));
    });

    it('keyless: a row to remove that is missing is stale before the first snapshot reset, MULTISET_ROW_MISSING after it', async () => {
      const t = await table('missing');
      // Before any snapshot: the row may only come with the table's initial snapshot.
      const out = await apply([f.delete(t, 1, r('ghost')), f.update(t, 2, r('ghost'), r('new')), f.insert(t, 3, r('a'))]);
      expect(out).toMatchObject({ applied: 2, stale: 1 }); // the update adds its new row, counted once
      expect(await rows(t)).toEqual(sortedRows([r('new'), r('a')]));
      await apply([f.reset(t, { lsn: 4, seq: 1 }), f.read(t, { lsn: 4, seq: 2 }, r('a'))]);
      expect(await rows(t)).toEqual(sortedRows([r('a')]));
      const g = group('missing');
      await apply([f.insert(t, 5, r('b'))], new Map([[0, 3n]]), g);
      // After it, a missing row is drift: the whole batch fails, nothing of it stays.
      for (const bad of [f.delete(t, 7, r('ghost')), f.update(t, 7, r('ghost'), r('z'))]) {
        const err = await failure(apply([f.insert(t, 6, r('c')), bad], new Map([[0, 9n]]), g));
        expect(err).toBeInstanceOf(SynclineError);
        expect(err).toMatchObject({ code: 'MULTISET_ROW_MISSING', retriable: false });
        expect(await rows(t)).toEqual(sortedRows([r('a'), r('b')]));
        expect(await h.sink.positions(g)).toEqual(new Map([[0, 3n]]));
      }
      // Without the bad change the batch applies: the high water did not move.
      expect(await apply([f.insert(t, 6, r('c'))])).toMatchObject({ applied: 1, stale: 0 });
      expect(await rows(t)).toEqual(sortedRows([r('a'), r('b'), r('c')]));
    });

    it('keyless: a change with unchanged (TOAST) columns is UNCHANGED_VALUE_MISSING', async () => {
      const t = await table('unchanged');
      await apply([f.insert(t, 1, r('a', 'v', 'big'))]);
      const upd = f.event('UPDATE', t, 2, { id: 'a', v: 'w' } as KeylessRow, r('a', 'v', 'big'));
      upd.unchanged = ['n'];
      const err = await failure(apply([upd]));
      expect(err).toMatchObject({ code: 'UNCHANGED_VALUE_MISSING', retriable: false });
      expect(await rows(t)).toEqual(sortedRows([r('a', 'v', 'big')]));
    });

    it('keyless: keyed and keyless tables in one batch; a failing batch stores neither rows, high water nor positions', async () => {
      const t = await table('atomic');
      const k = `kl_keyed_${run}_${++n}`;
      await h.createTable(k);
      const g = group('atomic');
      await apply([f.insert(t, 1, r('a')), kf.insert(k, 'x', 1, 'x1')], new Map([[0, 2n]]), g);
      const batch = [f.insert(t, 2, r('b')), f.delete(t, 3, r('a')), kf.update(k, 'x', 3, 'x3'), f.insert(t, 4, r('bad', REJECT_VALUE))];
      const err = await failure(apply(batch, new Map([[0, 6n]]), g));
      expect(err).toBeInstanceOf(SynclineError);
      expect((err as SynclineError).retriable).toBe(false);
      expect(await rows(t)).toEqual(sortedRows([r('a')]));
      expect(await h.readRow(k, { id: 'x' })).toMatchObject({ id: 'x', v: 'x1' });
      expect(await h.sink.positions(g)).toEqual(new Map([[0, 2n]]));
      const out = await apply(batch.slice(0, 3), new Map([[0, 5n]]), g);
      expect(out).toMatchObject({ applied: 3, stale: 0 });
      expect(await rows(t)).toEqual(sortedRows([r('b')]));
      expect(await h.readRow(k, { id: 'x' })).toMatchObject({ id: 'x', v: 'x3' });
      expect(await h.sink.positions(g)).toEqual(new Map([[0, 5n]]));
    });
  });
}
