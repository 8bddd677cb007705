import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import Database from 'better-sqlite3';
import pg from 'pg';
import { afterAll, describe, expect, it } from 'vitest';
import type { ChangeEvent, Row } from '../../src/core/change.js';
import { builtInResolver } from '../../src/sink/conflicts/resolve.js';
import { MysqlSink } from '../../src/sink/mysql/mysql-sink.js';
import { PostgresSink } from '../../src/sink/postgres/postgres-sink.js';
import type { Sink } from '../../src/sink/sink.js';
import type { ConflictOptions } from '../../src/sink/sql/sql-sink.js';
import { SqliteSink } from '../../src/sink/sqlite/sqlite-sink.js';
import { changeAt, priorityTracking, tracking } from '../helpers/conflict-fixtures.js';
import { dropDatabases } from '../helpers/many-writers.js';
import { freshMysqlDatabase, mysqlRows } from '../helpers/mysql.js';
import { freshDatabase, machinePg15, PG15_URL, waitFor, type PgServer } from '../helpers/postgres.js';

/**
 * Red-team cases of conflict tracking (README "Many writers") on the three SQL sinks. Each
 * case runs on a fresh target: `acc` (id, v, n) keyed by id, `bag` (v, n) keyless.
 */
interface Target {
  sink: Sink;
  /** Live rows of acc as text, by id. */
  rows(): Promise<Row[]>;
  /** bag's rows as `v:n`, sorted. */
  bag(): Promise<string[]>;
  /** Entries of the conflicts table. */
  conflictCount(): Promise<number>;
  close(): Promise<void>;
}

type Open = (conflicts: ConflictOptions) => Promise<Target>;

let serial = 0;

const openMysql: Open = async (conflicts) => {
  const db = await freshMysqlDatabase(`red_cf_my_${serial++}`);
  await db.admin.query('CREATE TABLE acc (id VARCHAR(64) PRIMARY KEY, v TEXT, n BIGINT)');
  await db.admin.query('CREATE TABLE bag (v TEXT, n INT)');
  const sink = new MysqlSink({ url: db.url, stateSchema: 'syncline', versionGate: true, conflicts });
  await sink.prepare();
  return {
    sink,
    rows: () => mysqlRows<Row>(db.admin, 'SELECT id, v, CAST(n AS CHAR) AS n FROM acc ORDER BY id'),
    bag: async () => (await mysqlRows<{ r: string }>(db.admin, `SELECT CONCAT(v, ':', n) AS r FROM bag ORDER BY 1`)).map((r) => r.r),
    conflictCount: async () => Number((await mysqlRows<{ n: string | number }>(db.admin, 'SELECT COUNT(*) AS n FROM syncline_conflicts'))[0]?.n ?? 0),
    async close() {
      await sink.close();
      await db.drop();
    },
  };
};

let sqliteDir: string | undefined;

const openSqlite: Open = async (conflicts) => {
  sqliteDir ??= await mkdtemp(path.join(os.tmpdir(), 'syncline-redcf-'));
  const file = path.join(sqliteDir, `t${serial++}.db`);
  const db = new Database(file);
  db.exec('CREATE TABLE acc (id TEXT PRIMARY KEY, v TEXT, n INTEGER); CREATE TABLE bag (v TEXT, n INTEGER)');
  const sink = new SqliteSink({ url: file, stateSchema: 'syncline', versionGate: true, conflicts });
  await sink.prepare();
  return {
    sink,
    rows: async () => db.prepare('SELECT id, v, CAST(n AS TEXT) AS n FROM acc ORDER BY id').all() as Row[],
    bag: async () => (db.prepare(`SELECT v || ':' || n AS r FROM bag ORDER BY 1`).all() as { r: string }[]).map((r) => r.r),
    conflictCount: async () => Number((db.prepare('SELECT COUNT(*) AS n FROM syncline_conflicts').get() as { n: number | bigint }).n),
    async close() {
      await sink.close();
      db.close();
    },
  };
};

const pgDatabases: string[] = [];

const openPostgres: Open = async (conflicts) => {
  const url = await freshDatabase(await machinePg15(), `red_cf_pg_${serial++}`);
  pgDatabases.push(new URL(url).pathname.slice(1));
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  await client.query('CREATE TABLE acc (id text PRIMARY KEY, v text, n bigint); CREATE TABLE bag (v text, n int)');
  const sink = new PostgresSink({ url, stateSchema: 'syncline', deleteMode: 'hard', versionGate: true, conflicts });
  await sink.prepare();
  return {
    sink,
    rows: async () => (await client.query<Row>('SELECT id, v, n::text AS n FROM acc ORDER BY id')).rows,
    bag: async () => (await client.query<{ r: string }>(`SELECT v || ':' || n AS r FROM bag ORDER BY 1`)).rows.map((r) => r.r),
    conflictCount: async () => Number((await client.query<{ n: string }>('SELECT count(*) AS n FROM syncline.conflicts')).rows[0]?.n ?? 0),
    async close() {
      await sink.close();
      await client.end();
    },
  };
};

const TARGETS: [string, Open][] = [
  ['mysql (MariaDB)', openMysql],
  ['sqlite', openSqlite],
  ['postgres (PostgreSQL 15)', openPostgres],
];

const ts = (s: string): string => `2026-01-01T00:00:${s}Z`;
const acc = (source: string, lsn: number, at: string, op: ChangeEvent['op'], id: string, payload: Row | null, before?: Row): ChangeEvent =>
  changeAt(source, lsn, ts(at), op, 'acc', { id }, payload, before);
/** Source a's server is far ahead in LSNs; b's far behind. */
const A = 0x9000000;
const B = 0x100;
/** A third server's, in between. */
const C = 0x5000;

async function within(open: Open, conflicts: ConflictOptions, fn: (t: Target) => Promise<void>): Promise<void> {
  const t = await open(conflicts);
  try {
    await fn(t);
  } finally {
    await t.close();
  }
}

afterAll(async () => {
  if (sqliteDir) await rm(sqliteDir, { recursive: true, force: true });
  if (pgDatabases.length > 0) await dropDatabases(PG15_URL, pgDatabases);
});

describe.each(TARGETS)('red team: conflict tracking on %s', (_name, open) => {

  it('a delta counter increment is counted once when its change is republished after another writer took the row', async () => {
    await within(open, tracking(builtInResolver('last_write_wins'), [['public.acc', ['n']]]), async (t) => {
      const b1 = acc('b', B, '01', 'INSERT', '1', { id: '1', v: 'b', n: '10' });
      const b2 = acc('b', B + 0x10, '02', 'UPDATE', '1', { id: '1', v: 'b2', n: '11' }, { id: '1', v: 'b', n: '10' });
      const a1 = acc('a', A, '03', 'UPDATE', '1', { id: '1', v: 'a', n: '15' }, { id: '1', v: 'b2', n: '11' });
      await t.sink.apply([b1], new Map(), 'gb');
      await t.sink.apply([b2], new Map(), 'gb');
      // a (later by clock) takes b's row: one conflict, its increment (+4) counted.
      expect((await t.sink.apply([a1], new Map(), 'ga')).conflicts?.[0]?.count).toBe(1);
      expect(await t.rows()).toEqual([{ id: '1', v: 'a', n: '15' }]);
      const before = await t.conflictCount();
      // b's capture restarts and republishes b2, already applied: it must change nothing.
      const o = await t.sink.apply([b2], new Map(), 'gb');
      expect(await t.rows()).toEqual([{ id: '1', v: 'a', n: '15' }]);
      expect(o.applied).toBe(0);
      expect(o.conflicts).toBeUndefined();
      expect(await t.conflictCount()).toBe(before);
    });
  });

  it('a republished delete does not remove the row another source inserted after it', async () => {
    // last_write_wins: b's insert (03) is later than a's delete (02), so it takes the key.
    await within(open, tracking(), async (t) => {
      const a1 = acc('a', A, '01', 'INSERT', 'k', { id: 'k', v: 'a', n: '1' });
      const a2 = acc('a', A + 0x10, '02', 'DELETE', 'k', null);
      await t.sink.apply([a1], new Map(), 'ga');
      await t.sink.apply([a2], new Map(), 'ga');
      // b inserts the key after a deleted it: a conflict with a's delete, which b's later write wins.
      await t.sink.apply([acc('b', B, '03', 'INSERT', 'k', { id: 'k', v: 'b', n: '2' })], new Map(), 'gb');
      expect(await t.rows()).toEqual([{ id: 'k', v: 'b', n: '2' }]);
      // a's capture restarts and republishes its delete, applied before: no effect again.
      const o = await t.sink.apply([a2], new Map(), 'ga');
      expect(await t.rows()).toEqual([{ id: 'k', v: 'b', n: '2' }]);
      expect(o.applied).toBe(0);
    });
  });

  it('a truncation does not remove keyless rows another source wrote after it (as it keeps keyed ones)', async () => {
    await within(open, tracking(), async (t) => {
      await t.sink.apply([changeAt('a', A, ts('01'), 'INSERT', 'bag', {}, { v: 'x', n: '1' })], new Map(), 'ga');
      await t.sink.apply([changeAt('b', B, ts('09'), 'INSERT', 'bag', {}, { v: 'y', n: '2' })], new Map(), 'gb');
      // a truncates at 05: x goes, b's y (written at 09, after it) stays, as b-after in truncationScenario.
      await t.sink.apply([changeAt('a', A + 0x10, ts('05'), 'TRUNCATE', 'bag', {}, null)], new Map(), 'ga');
      expect(await t.bag()).toEqual(['y:2']);
    });
  });

  it('a row a truncation of another source removed is not brought back by its republished insert', async () => {
    await within(open, tracking(), async (t) => {
      const b1 = acc('b', B, '02', 'INSERT', 'b-before', { id: 'b-before', v: 'b', n: '1' });
      await t.sink.apply([b1], new Map(), 'gb');
      await t.sink.apply([changeAt('a', A, ts('05'), 'TRUNCATE', 'acc', {}, null)], new Map(), 'ga');
      expect(await t.rows()).toEqual([]);
      // b's capture restarts and republishes b1, applied (and truncated away) before.
      const o = await t.sink.apply([b1], new Map(), 'gb');
      expect(await t.rows()).toEqual([]);
      expect(o.applied).toBe(0);
    });
  });
  it('a delete that won a conflict is not undone by a lower-priority write arriving after it (the outcome does not depend on arrival order)', async () => {
    await within(open, priorityTracking(['b', 'a']), async (t) => {
      await t.sink.apply([acc('a', A, '01', 'INSERT', 'k', { id: 'k', v: 'a', n: '1' })], new Map(), 'ga');
      // b outranks a: its delete wins a's row.
      await t.sink.apply([acc('b', B, '02', 'DELETE', 'k', null)], new Map(), 'gb');
      expect(await t.rows()).toEqual([]);
      // a's update, concurrent with b's delete, arrives after it. Had it arrived first, b's
      // delete would have won over it (source_priority): the row must stay deleted either way.
      await t.sink.apply([acc('a', A + 0x10, '03', 'UPDATE', 'k', { id: 'k', v: 'a2', n: '2' }, { id: 'k', v: 'a', n: '1' })], new Map(), 'ga');
      expect(await t.rows()).toEqual([]);
    });
  });

  it('last_write_wins: an update older by clock than another source’s delete, arriving after it, is stale (also when it left TOASTed values unchanged)', async () => {
    await within(open, tracking(), async (t) => {
      await t.sink.apply([acc('a', A, '01', 'INSERT', 'k', { id: 'k', v: 'a', n: '1' }), acc('a', A, '01', 'INSERT', 'm', { id: 'm', v: 'a', n: '1' })], new Map(), 'ga');
      await t.sink.apply([acc('b', B, '05', 'DELETE', 'k', null), acc('b', B, '05', 'DELETE', 'm', null)], new Map(), 'gb');
      expect(await t.rows()).toEqual([]);
      // a's updates at 03 (before b's deletes at 05) arrive late: b's deletes are the last writes.
      await t.sink.apply([acc('a', A + 0x10, '03', 'UPDATE', 'k', { id: 'k', v: 'a2', n: '2' }, { id: 'k', v: 'a', n: '1' })], new Map(), 'ga');
      expect(await t.rows()).toEqual([]);
      const toast = { ...acc('a', A + 0x20, '03', 'UPDATE', 'm', { id: 'm', n: '2' }, { id: 'm', n: '1' }), unchanged: ['v'] };
      await t.sink.apply([toast], new Map(), 'ga');
      expect(await t.rows()).toEqual([]);
    });
  });

  it('an older delete of another source (of a key already deleted) does not replace the newer tombstone: a republished insert of the deleting source stays out', async () => {
    await within(open, tracking(), async (t) => {
      // a inserts k at 02 and deletes it at 05.
      const a1 = acc('a', A, '02', 'INSERT', 'k', { id: 'k', v: 'a', n: '1' });
      const a2 = acc('a', A + 0x10, '05', 'DELETE', 'k', null);
      await t.sink.apply([a1], new Map(), 'ga');
      await t.sink.apply([a2], new Map(), 'ga');
      // b inserted k at 00 and deleted it at 01 (one batch: the delete alone reaches the target).
      const b1 = acc('b', B, '00', 'INSERT', 'k', { id: 'k', v: 'b', n: '9' });
      const b2 = acc('b', B + 0x10, '01', 'DELETE', 'k', null);
      await t.sink.apply([b1, b2], new Map(), 'gb');
      expect(await t.rows()).toEqual([]);
      // a's capture restarts and republishes a1: both sources deleted k, it must stay deleted.
      const o = await t.sink.apply([a1], new Map(), 'ga');
      expect(await t.rows()).toEqual([]);
      expect(o.applied).toBe(0);
    });
  });

  it('last_write_wins with three sources: a write that is older than one delete and newer than an older one stays out whatever the order the deletes arrive in', async () => {
    // a deletes k at 05, b at 01; c writes k at 03: a's delete is the last write.
    const seed = acc('c', C, '00', 'INSERT', 'k', { id: 'k', v: 'c0', n: '0' });
    const aDel = acc('a', A, '05', 'DELETE', 'k', null);
    const bDel = acc('b', B, '01', 'DELETE', 'k', null);
    const cUpd = acc('c', C + 0x10, '03', 'UPDATE', 'k', { id: 'k', v: 'c', n: '3' }, { id: 'k', v: 'c0', n: '0' });
    const outcomes: Row[][] = [];
    for (const order of [[aDel, cUpd, bDel], [aDel, bDel, cUpd]]) {
      await within(open, tracking(), async (t) => {
        await t.sink.apply([seed], new Map(), 'gc');
        for (const ch of order) await t.sink.apply([ch], new Map(), `g${ch.source}`);
        outcomes.push(await t.rows());
      });
    }
    expect(outcomes).toEqual([[], []]);
  });

  it('delta counters: an increment older than another source’s delete does not land on the row that source inserted anew', async () => {
    await within(open, tracking(builtInResolver('last_write_wins'), [['public.acc', ['n']]]), async (t) => {
      const seed = { id: 'k', v: 'a', n: '5' };
      await t.sink.apply([acc('a', A, '00', 'INSERT', 'k', seed)], new Map(), 'ga');
      await t.sink.apply([acc('a', A + 0x10, '02', 'DELETE', 'k', null, seed)], new Map(), 'ga');
      await t.sink.apply([acc('a', A + 0x20, '03', 'INSERT', 'k', { id: 'k', v: 'a-new', n: '0' })], new Map(), 'ga');
      // b counted k up at 01, before a deleted it: the increment died with that row.
      await t.sink.apply([acc('b', B, '01', 'UPDATE', 'k', { id: 'k', v: 'b', n: '6' }, seed)], new Map(), 'gb');
      expect(await t.rows()).toEqual([{ id: 'k', v: 'a-new', n: '0' }]);
    });
  });

  it('a write of another source older by clock than a truncation, arriving after it, is removed as it would have been had it arrived first', async () => {
    const trunc = changeAt('a', A, ts('05'), 'TRUNCATE', 'acc', {}, null);
    const bIns = acc('b', B, '03', 'INSERT', 'k', { id: 'k', v: 'b', n: '1' });
    const bLater = acc('b', B + 0x10, '07', 'INSERT', 'm', { id: 'm', v: 'b', n: '2' });
    const outcomes: Row[][] = [];
    for (const order of [[bIns, trunc, bLater], [trunc, bIns, bLater]]) {
      // source_priority with the truncating source first: a truncation still removes only what was written before it.
      await within(open, priorityTracking(['a', 'b']), async (t) => {
        for (const ch of order) await t.sink.apply([ch], new Map(), `g${ch.source}`);
        outcomes.push(await t.rows());
      });
    }
    expect(outcomes).toEqual([[{ id: 'm', v: 'b', n: '2' }], [{ id: 'm', v: 'b', n: '2' }]]);
  });
});

/**
 * A bidirectional pair seen from its two sinks (postgres, PostgreSQL 15 without
 * track_commit_timestamp: a delete made at a target has the time of the delete as its clock).
 * Each side is a database whose application writes `acc`, with a sink that applies the other
 * side's changes (as captured, with their old values) under last_write_wins on `updated_at`.
 */
interface Side {
  sink: PostgresSink;
  client: pg.Client;
  url: string;
}

const server = (): Promise<PgServer> => machinePg15();

async function side(local: string, deltas: [string, string[]][] = [], seed = `INSERT INTO acc VALUES ('k', 'seed', 5, '2026-01-01T00:00:00Z')`): Promise<Side> {
  const url = await freshDatabase(await server(), `red_mw_bi_${local}_${serial++}`);
  pgDatabases.push(new URL(url).pathname.slice(1));
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  await client.query(`CREATE TABLE acc (id text PRIMARY KEY, v text, n bigint, updated_at timestamptz NOT NULL); ${seed}`);
  const sink = new PostgresSink({ url, stateSchema: 'syncline', deleteMode: 'hard', versionGate: true, conflicts: pairTracking(local, deltas), trackedTables: [{ schema: 'public', table: 'acc' }] });
  await sink.prepare();
  return { sink, client, url };
}

function pairTracking(local: string, deltas: [string, string[]][] = []): ConflictOptions {
  return { ...tracking(undefined, deltas), lwwColumn: 'updated_at', localSource: local };
}

async function closeSides(...sides: Side[]): Promise<void> {
  for (const s of sides) {
    await s.sink.close();
    await s.client.end();
  }
}

const accRows = async (c: pg.Client): Promise<Row[]> => (await c.query<Row>(`SELECT id, v, n::text AS n FROM acc ORDER BY id`)).rows;

/** The clock (as an ISO timestamp) of the tombstone the application's delete of `id` left at this side. */
async function localDeleteClock(s: Side, id: string): Promise<string> {
  const { rows } = await s.client.query<{ clock: Date }>(`SELECT clock FROM syncline.source_tombstones WHERE row_key = $1 AND xid IS NOT NULL`, [JSON.stringify([id])]);
  const clock = rows[0]?.clock;
  if (!clock) throw new Error(`no local tombstone of ${id}`);
  return clock.toISOString();
}

/** An ISO timestamp `ms` after now: later than a delete made at a target just before. */
const fromNow = (ms: number): string => new Date(Date.now() + ms).toISOString();

const SEED = { id: 'k', v: 'seed', n: '5', updated_at: '2026-01-01 00:00:00+00' };

describe('red team: bidirectional pair (two postgres sinks, last_write_wins on updated_at)', () => {
  it('delta counters: an increment at one side to a row the other side deleted later (and re-inserted) counts at neither side', async () => {
    const a = await side('a', [['public.acc', ['n']]]);
    const b = await side('b', [['public.acc', ['n']]]);
    try {
      // At B the application counts k up at 01; at A (not having seen it) it deletes k at 02 and inserts it anew at 03.
      await b.client.query(`UPDATE acc SET n = n + 1, v = 'b', updated_at = '2026-01-01T00:00:01Z' WHERE id = 'k'`);
      await a.client.query(`DELETE FROM acc WHERE id = 'k'`);
      await a.client.query(`INSERT INTO acc VALUES ('k', 'a-new', 0, '2026-01-01T00:00:03Z')`);
      const bUpdate = acc('b', B, '01', 'UPDATE', 'k', { id: 'k', v: 'b', n: '6', updated_at: '2026-01-01 00:00:01+00' }, SEED);
      const aDelete = acc('a', A, '02', 'DELETE', 'k', null, SEED);
      const aInsert = acc('a', A + 0x10, '03', 'INSERT', 'k', { id: 'k', v: 'a-new', n: '0', updated_at: '2026-01-01 00:00:03+00' });
      await b.sink.apply([aDelete], new Map(), 'ga');
      await b.sink.apply([aInsert], new Map(), 'ga');
      await a.sink.apply([bUpdate], new Map(), 'gb');
      // A's delete (02) won over B's update (01) at B: the increment went with the row there, and must not land on A's new row.
      expect(await accRows(b.client)).toEqual([{ id: 'k', v: 'a-new', n: '0' }]);
      expect(await accRows(a.client)).toEqual(await accRows(b.client));
    } finally {
      await closeSides(a, b);
    }
  });

  it('a delete at one side and an older concurrent update at the other: both sides end alike', async () => {
    const a = await side('a');
    const b = await side('b');
    try {
      // At A the application updates k at 03; at B (not having seen it) it deletes k at 05.
      await a.client.query(`UPDATE acc SET v = 'a', updated_at = '2026-01-01T00:00:03Z' WHERE id = 'k'`);
      await b.client.query(`DELETE FROM acc WHERE id = 'k'`);
      // Each side's change reaches the other (as captured: the update with its old values).
      const update = acc('a', A, '03', 'UPDATE', 'k', { id: 'k', v: 'a', updated_at: '2026-01-01 00:00:03+00' }, { id: 'k', v: 'seed', updated_at: '2026-01-01 00:00:00+00' });
      const del = acc('b', B, '05', 'DELETE', 'k', null, { id: 'k', v: 'seed', updated_at: '2026-01-01 00:00:00+00' });
      await b.sink.apply([update], new Map(), 'ga');
      await a.sink.apply([del], new Map(), 'gb');
      const rows = async (c: pg.Client): Promise<unknown[]> => (await c.query(`SELECT id, v FROM acc ORDER BY id`)).rows;
      // B's delete (05) is the last write: A applies it; B must not bring k back with A's older update.
      expect(await rows(a.client)).toEqual([]);
      expect(await rows(b.client)).toEqual(await rows(a.client));
    } finally {
      await closeSides(a, b);
    }
  });

  it('delta counters: increments of both sides around a delete count once at both sides when the other side’s later update revives the row', async () => {
    const a = await side('a', [['public.acc', ['n']]]);
    const b = await side('b', [['public.acc', ['n']]]);
    try {
      // B counts k up (5 → 6, at 01) and deletes it; A, having seen neither, counts it up
      // before B's delete (6, at 02) and after it (7, at a clock later than the delete).
      await b.client.query(`UPDATE acc SET n = n + 1, v = 'b', updated_at = '2026-01-01T00:00:01Z' WHERE id = 'k'`);
      await b.client.query(`DELETE FROM acc WHERE id = 'k'`);
      const later = fromNow(60_000);
      await a.client.query(`UPDATE acc SET n = n + 1, v = 'a1', updated_at = '2026-01-01T00:00:02Z' WHERE id = 'k'`);
      await a.client.query(`UPDATE acc SET n = n + 1, v = 'a2', updated_at = $1 WHERE id = 'k'`, [later]);
      const deletedAt = await localDeleteClock(b, 'k');
      const b1 = acc('b', B, '01', 'UPDATE', 'k', { id: 'k', v: 'b', n: '6', updated_at: '2026-01-01 00:00:01+00' }, SEED);
      const bDel = { ...acc('b', B + 0x10, '01', 'DELETE', 'k', null, { id: 'k', v: 'b', n: '6', updated_at: '2026-01-01 00:00:01+00' }), commit_ts: deletedAt };
      const a1 = acc('a', A, '02', 'UPDATE', 'k', { id: 'k', v: 'a1', n: '6', updated_at: '2026-01-01 00:00:02+00' }, SEED);
      const a2 = { ...acc('a', A + 0x10, '02', 'UPDATE', 'k', { id: 'k', v: 'a2', n: '7', updated_at: later }, { id: 'k', v: 'a1', n: '6', updated_at: '2026-01-01 00:00:02+00' }), commit_ts: later };
      // A's updates reach B one batch each: the first is older than B's delete (stale there), the second revives k.
      expect((await b.sink.apply([a1], new Map(), 'ga')).applied).toBe(0);
      expect(await accRows(b.client)).toEqual([]);
      await b.sink.apply([a2], new Map(), 'ga');
      // B's changes reach A: its increment merges into A's row, which is later than B's delete.
      await a.sink.apply([b1], new Map(), 'gb');
      await a.sink.apply([bDel], new Map(), 'gb');
      // Three increments (one of B's, two of A's), each counted once on both sides.
      expect(await accRows(a.client)).toEqual([{ id: 'k', v: 'a2', n: '8' }]);
      expect(await accRows(b.client)).toEqual(await accRows(a.client));
    } finally {
      await closeSides(a, b);
    }
  });

  it('delta counters: an increment made after a delete to the other side’s copy counts with the deleted row’s counters over the row inserted anew', async () => {
    const a = await side('a', [['public.acc', ['n']]]);
    const b = await side('b', [['public.acc', ['n']]]);
    try {
      // B deletes k and inserts it anew (n 0); A, having seen neither, counts k up at a clock between the two.
      await b.client.query(`DELETE FROM acc WHERE id = 'k'`);
      const [between, reinserted] = [fromNow(60_000), fromNow(120_000)];
      await b.client.query(`INSERT INTO acc VALUES ('k', 'b-new', 0, $1)`, [reinserted]);
      await a.client.query(`UPDATE acc SET n = n + 1, v = 'a', updated_at = $1 WHERE id = 'k'`, [between]);
      const deletedAt = await localDeleteClock(b, 'k');
      const bDel = { ...acc('b', B, '01', 'DELETE', 'k', null, SEED), commit_ts: deletedAt };
      const bIns = { ...acc('b', B + 0x10, '01', 'INSERT', 'k', { id: 'k', v: 'b-new', n: '0', updated_at: reinserted }), commit_ts: reinserted };
      const aUpd = { ...acc('a', A, '01', 'UPDATE', 'k', { id: 'k', v: 'a', n: '6', updated_at: between }, SEED), commit_ts: between };
      await b.sink.apply([aUpd], new Map(), 'ga');
      await a.sink.apply([bDel], new Map(), 'gb');
      await a.sink.apply([bIns], new Map(), 'gb');
      // At A the delete lost to A's later update and B's insert adds its value to the row A kept;
      // at B, A's update revives the deleted row's counters (5 + 1) into the new row.
      expect(await accRows(a.client)).toEqual([{ id: 'k', v: 'b-new', n: '6' }]);
      expect(await accRows(b.client)).toEqual(await accRows(a.client));
    } finally {
      await closeSides(a, b);
    }
  });
  it('delta counters: a reviving update whose key the application inserts anew while the sink applies it still brings the deleted row’s counters', async () => {
    const b = await side('b', [['public.acc', ['n']]]);
    const app = new pg.Client({ connectionString: b.url });
    await app.connect();
    try {
      // B deletes k (its counter 5 goes with the tombstone); A, not having seen it, counts k up later.
      await b.client.query(`DELETE FROM acc WHERE id = 'k'`);
      const [between, reinserted] = [fromNow(60_000), fromNow(120_000)];
      const aUpd = { ...acc('a', A, '01', 'UPDATE', 'k', { id: 'k', v: 'a', n: '6', updated_at: between }, SEED), commit_ts: between };
      // B's application inserts k anew in a transaction still open while the sink finds k absent:
      // the sink's insert waits for it and is refused, and the update goes through the rules again
      // against the new row (the race of a loaded machine, made deterministic).
      await app.query('BEGIN');
      await app.query(`INSERT INTO acc VALUES ('k', 'b-new', 0, $1)`, [reinserted]);
      const applying = b.sink.apply([aUpd], new Map(), 'ga');
      await waitFor('the sink waits for the application’s insert', async () => (await b.client.query(`SELECT 1 FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'`)).rows.length > 0, 10_000, 20);
      await app.query('COMMIT');
      await applying;
      // As when the insert came first: the deleted row's counters (5 + 1) come back into the new row, once.
      expect(await accRows(b.client)).toEqual([{ id: 'k', v: 'b-new', n: '6' }]);
      // A replay changes nothing.
      await b.sink.apply([aUpd], new Map(), 'ga');
      expect(await accRows(b.client)).toEqual([{ id: 'k', v: 'b-new', n: '6' }]);
    } finally {
      await app.end();
      await closeSides(b);
    }
  });
  it('delta counters: a batch that holds a row’s updates and delete, or its delete and insert anew, counts as its changes one by one', async () => {
    const seed = `INSERT INTO acc SELECT id, 'seed', 5, '2026-01-01T00:00:00Z' FROM unnest(ARRAY['k', 'm', 'q']) id`;
    const b = await side('b', [['public.acc', ['n']]], seed);
    try {
      // The application counts each row up: k after everything a did, m between a's delete and
      // its insert anew, q before a's delete.
      const later = fromNow(60_000);
      await b.client.query(`UPDATE acc SET n = n + 1, v = 'b', updated_at = $1 WHERE id = 'k'`, [later]);
      await b.client.query(`UPDATE acc SET n = n + 1, v = 'b', updated_at = '2026-01-01T00:00:02Z' WHERE id = 'm'`);
      await b.client.query(`UPDATE acc SET n = n + 1, v = 'b', updated_at = '2026-01-01T00:00:01Z' WHERE id = 'q'`);
      const row = (id: string, v: string, n: string, at: string): Row => ({ id, v, n, updated_at: `2026-01-01 00:00:${at}+00` });
      const batch = [
        // k: two increments, then a delete that loses to b's later update: the increments count.
        acc('a', A, '01', 'UPDATE', 'k', row('k', 'a', '6', '01'), row('k', 'seed', '5', '00')),
        acc('a', A + 0x10, '02', 'UPDATE', 'k', row('k', 'a', '7', '02'), row('k', 'a', '6', '01')),
        acc('a', A + 0x20, '03', 'DELETE', 'k', null, row('k', 'a', '7', '02')),
        // m: deleted at 01 (loses to b's update at 02) and inserted anew at 03 (wins): its value adds to b's row.
        acc('a', A + 0x30, '01', 'DELETE', 'm', null, row('m', 'seed', '5', '00')),
        acc('a', A + 0x40, '03', 'INSERT', 'm', row('m', 'a-new', '10', '03')),
        // q: deleted at 02 (wins over b's update at 01) and inserted anew at 03: the new row counts from its own value.
        acc('a', A + 0x50, '02', 'DELETE', 'q', null, row('q', 'seed', '5', '00')),
        acc('a', A + 0x60, '03', 'INSERT', 'q', row('q', 'a-new', '10', '03')),
      ];
      await b.sink.apply(batch, new Map(), 'ga');
      expect(await accRows(b.client)).toEqual([
        { id: 'k', v: 'b', n: '8' },
        { id: 'm', v: 'a-new', n: '16' },
        { id: 'q', v: 'a-new', n: '10' },
      ]);
    } finally {
      await closeSides(b);
    }
  });
});

describe('red team: deletes and truncations made at a postgres target (conflict tracking)', () => {
  it('the sink’s own deletes and truncations leave no tombstone of the local writer', async () => {
    const b = await side('b');
    try {
      await b.sink.apply([acc('a', A, '01', 'INSERT', 'm', { id: 'm', v: 'a', n: '1', updated_at: '2026-01-01 00:00:01+00' })], new Map(), 'ga');
      await b.sink.apply([acc('a', A + 0x10, '02', 'DELETE', 'k', null), acc('a', A + 0x10, '02', 'DELETE', 'm', null, undefined)], new Map(), 'ga');
      await b.sink.apply([changeAt('a', A + 0x20, ts('03'), 'TRUNCATE', 'acc', {}, null)], new Map(), 'ga');
      const tombstones = (await b.client.query(`SELECT row_key, source, xid FROM syncline.source_tombstones ORDER BY row_key`)).rows;
      expect(tombstones).toEqual([{ row_key: '["k"]', source: 'a', xid: null }, { row_key: '["m"]', source: 'a', xid: null }]);
      expect((await b.client.query(`SELECT source FROM syncline.source_truncations`)).rows).toEqual([{ source: 'a' }]);
    } finally {
      await closeSides(b);
    }
  });

  it('a delete made at the target wins over an older incoming update and loses to a newer one', async () => {
    const b = await side('b', [], `INSERT INTO acc VALUES ('k', 'seed', 5, '2026-01-01T00:00:00Z'), ('m', 'seed', 5, '2026-01-01T00:00:00Z')`);
    try {
      await b.client.query(`DELETE FROM acc WHERE id IN ('k', 'm')`);
      const old = acc('a', A, '03', 'UPDATE', 'k', { id: 'k', v: 'a', n: '6', updated_at: '2026-01-01 00:00:03+00' }, SEED);
      const later = fromNow(60_000);
      const newer = { ...acc('a', A + 0x10, '03', 'UPDATE', 'm', { id: 'm', v: 'a', n: '6', updated_at: later }, { ...SEED, id: 'm' }), commit_ts: later };
      const o = await b.sink.apply([old, newer], new Map(), 'ga');
      expect(o).toMatchObject({ applied: 1, stale: 1 });
      expect(await accRows(b.client)).toEqual([{ id: 'm', v: 'a', n: '6' }]);
      // Both decided as conflicts with the local writer's delete.
      const conflicts = (await b.client.query(`SELECT row_key, winner, stored_source FROM syncline.conflicts ORDER BY row_key`)).rows;
      expect(conflicts).toEqual([
        { row_key: '["k"]', winner: 'stored', stored_source: 'b' },
        { row_key: '["m"]', winner: 'incoming', stored_source: 'b' },
      ]);
    } finally {
      await closeSides(b);
    }
  });

  it('a key changed at the target counts as a delete of the old key; a TRUNCATE at the target as the local writer’s truncation', async () => {
    const b = await side('b', [], `INSERT INTO acc VALUES ('k', 'seed', 5, '2026-01-01T00:00:00Z'), ('m', 'seed', 5, '2026-01-01T00:00:00Z')`);
    try {
      await b.client.query(`UPDATE acc SET id = 'k2' WHERE id = 'k'`);
      await b.sink.apply([acc('a', A, '03', 'UPDATE', 'k', { id: 'k', v: 'a', n: '6', updated_at: '2026-01-01 00:00:03+00' }, SEED)], new Map(), 'ga');
      expect(await accRows(b.client)).toEqual([{ id: 'k2', v: 'seed', n: '5' }, { id: 'm', v: 'seed', n: '5' }]);
      await b.client.query(`TRUNCATE acc`);
      const later = fromNow(60_000);
      const o = await b.sink.apply([
        acc('a', A + 0x10, '04', 'INSERT', 'x', { id: 'x', v: 'a', n: '1', updated_at: '2026-01-01 00:00:04+00' }),
        { ...acc('a', A + 0x20, '04', 'INSERT', 'y', { id: 'y', v: 'a', n: '1', updated_at: later }), commit_ts: later },
      ], new Map(), 'ga');
      // The write older than the truncation would have been removed by it: stale; the later one stays.
      expect(o).toMatchObject({ applied: 1, stale: 1 });
      expect(await accRows(b.client)).toEqual([{ id: 'y', v: 'a', n: '1' }]);
    } finally {
      await closeSides(b);
    }
  });

  it('a change applied before the application deleted its row is settled when republished (its counter difference is in the deleted row already)', async () => {
    const b = await side('b', [['public.acc', ['n']]]);
    try {
      const row = (n: string, at: string): Row => ({ id: 'r', v: 'a', n, updated_at: at });
      const a1 = acc('a', A, '01', 'INSERT', 'r', row('1', '2026-01-01 00:00:01+00'));
      const a2 = acc('a', A + 0x10, '02', 'UPDATE', 'r', row('2', '2026-01-01 00:00:02+00'), row('1', '2026-01-01 00:00:01+00'));
      await b.sink.apply([a1], new Map(), 'ga');
      await b.sink.apply([a2], new Map(), 'ga');
      await b.client.query(`DELETE FROM acc WHERE id = 'r'`);
      // a's capture restarts and republishes both: applied before, they change nothing.
      expect(await b.sink.apply([a1, a2], new Map(), 'ga')).toMatchObject({ applied: 0 });
      // a, not having seen the delete, counts r up after it: the row comes back with its counter, counted once.
      const later = fromNow(60_000);
      await b.sink.apply([{ ...acc('a', A + 0x20, '03', 'UPDATE', 'r', row('3', later), row('2', '2026-01-01 00:00:02+00')), commit_ts: later }], new Map(), 'ga');
      expect(await accRows(b.client)).toEqual([{ id: 'k', v: 'seed', n: '5' }, { id: 'r', v: 'a', n: '3' }]);
    } finally {
      await closeSides(b);
    }
  });

  it('installs its triggers once: a restarted sink finds them and leaves them alone', async () => {
    const b = await side('b');
    try {
      const triggers = async (): Promise<unknown[]> => (await b.client.query(`SELECT oid::int, tgname FROM pg_trigger WHERE tgrelid = 'acc'::regclass ORDER BY tgname`)).rows;
      const first = await triggers();
      expect(first.map((t) => (t as { tgname: string }).tgname)).toEqual(['syncline_local_delete', 'syncline_local_key_change', 'syncline_local_key_mark', 'syncline_local_truncate']);
      await b.sink.apply([acc('a', A, '01', 'INSERT', 'x', { id: 'x', v: 'a', n: '1', updated_at: '2026-01-01 00:00:01+00' })], new Map(), 'ga');
      await b.sink.close();
      for (let i = 0; i < 2; i++) {
        const again = new PostgresSink({ url: b.url, stateSchema: 'syncline', deleteMode: 'hard', versionGate: true, conflicts: pairTracking('b'), trackedTables: [{ schema: 'public', table: 'acc' }] });
        await again.prepare();
        await again.apply([acc('a', A + 0x10 * (i + 1), '01', 'INSERT', `y${i}`, { id: `y${i}`, v: 'a', n: '1', updated_at: '2026-01-01 00:00:01+00' })], new Map(), 'ga');
        await again.close();
      }
      expect(await triggers()).toEqual(first);
      b.sink = new PostgresSink({ url: b.url, stateSchema: 'syncline', deleteMode: 'hard', versionGate: true, conflicts: pairTracking('b') });
      // The application's delete is recorded once.
      await b.client.query(`DELETE FROM acc WHERE id = 'x'`);
      expect((await b.client.query(`SELECT row_key, source FROM syncline.source_tombstones`)).rows).toEqual([{ row_key: '["x"]', source: 'b' }]);
    } finally {
      await closeSides(b);
    }
  });

  it('an update that left a TOASTed value unchanged, later than a delete made here (delta counters): refused, or stale when superseded at its source, and either way no conflict on record, the deleted row’s counters kept', async () => {
    const url = await freshDatabase(await server(), `red_mw_toast_${serial++}`);
    pgDatabases.push(new URL(url).pathname.slice(1));
    const client = new pg.Client({ connectionString: url });
    await client.connect();
    // The body is stored out of line (TOAST): an UPDATE that does not change it reaches capture
    // as pgoutput's unchanged-TOAST marker, and the change carries no value for it (`unchanged`).
    await client.query(`CREATE TABLE acc (id text PRIMARY KEY, v text, n bigint, updated_at timestamptz NOT NULL, body text); ALTER TABLE acc ALTER COLUMN body SET STORAGE EXTERNAL`);
    const sink = new PostgresSink({ url, stateSchema: 'syncline', deleteMode: 'hard', versionGate: true, conflicts: pairTracking('b', [['public.acc', ['n']]]), trackedTables: [{ schema: 'public', table: 'acc' }] });
    await sink.prepare();
    try {
      const body = Array.from({ length: 4000 }, (_, i) => (i * 7919).toString(36)).join('');
      const row = (n: string, at: string): Row => ({ id: 'k', v: 'a', n, updated_at: at });
      await sink.apply([acc('a', A, '01', 'INSERT', 'k', { ...row('5', '2026-01-01 00:00:01+00'), body })], new Map(), 'ga');
      expect((await client.query(`SELECT pg_column_size(body) > 2000 AS toasted FROM acc`)).rows).toEqual([{ toasted: true }]);
      // b's application deletes k: its tombstone keeps the row's counter (n = 5).
      await client.query(`DELETE FROM acc WHERE id = 'k'`);
      // a counts k up later (n 5 → 6), the body unchanged: it wins over b's delete, so k comes
      // back at b, but the change has no body to write. Refused (UNCHANGED_VALUE_MISSING, dead-
      // lettered for a repair), with nothing recorded. (Before: dropped without a trace of it in
      // the counts, a conflict on record as written, the deleted row's counters cleared.)
      const later = fromNow(60_000);
      const update: ChangeEvent = { ...acc('a', A + 0x10, '03', 'UPDATE', 'k', row('6', later), row('5', '2026-01-01 00:00:01+00')), commit_ts: later, unchanged: ['body'] };
      const conflicts = async (): Promise<unknown[]> => (await client.query(`SELECT row_key, winner FROM syncline.conflicts`)).rows;
      const counters = async (): Promise<unknown[]> => (await client.query(`SELECT counters FROM syncline.source_tombstones WHERE source = 'b'`)).rows;
      await expect(sink.apply([update], new Map(), 'ga')).rejects.toMatchObject({ code: 'UNCHANGED_VALUE_MISSING' });
      expect(await conflicts()).toEqual([]);
      expect(await counters()).toEqual([{ counters: { n: '5' } }]);
      // a deleted k after that update, and its capture, reading the body at a, found k gone: the
      // update is superseded (a's delete follows in the stream and decides k). Stale, nothing recorded.
      const o = await sink.apply([{ ...update, superseded_at_source: true }], new Map(), 'ga');
      expect(o).toMatchObject({ applied: 0, stale: 1 });
      expect(o.conflicts).toBeUndefined();
      expect(await accRows(client)).toEqual([]);
      expect(await conflicts()).toEqual([]);
      expect(await counters()).toEqual([{ counters: { n: '5' } }]);
    } finally {
      await sink.close();
      await client.end();
    }
  });

  it('a table and columns whose names need quoting', async () => {
    const url = await freshDatabase(await server(), `red_mw_quoted_${serial++}`);
    pgDatabases.push(new URL(url).pathname.slice(1));
    const client = new pg.Client({ connectionString: url });
    await client.connect();
    await client.query(`CREATE SCHEMA "Odd Schema"; CREATE TABLE "Odd Schema"."Acc ""Q"" 'x'" ("Id Col" text, "Nr" int, v text, "N" bigint, PRIMARY KEY ("Nr", "Id Col"));
                        INSERT INTO "Odd Schema"."Acc ""Q"" 'x'" VALUES ('k"1', 2, 'seed', 5)`);
    const label = `Odd Schema.Acc "Q" 'x'`;
    const sink = new PostgresSink({ url, stateSchema: 'Sync "State"', deleteMode: 'hard', versionGate: true, conflicts: { ...tracking(undefined, [[label, ['N']]]), localSource: `b's` } });
    await sink.prepare();
    try {
      const change = (lsn: number, at: string, op: ChangeEvent['op'], payload: Row | null, before?: Row): ChangeEvent =>
        ({ ...changeAt('a', lsn, ts(at), op, 'x', { 'Id Col': 'k"1', Nr: '2' }, payload, before), schema: 'Odd Schema', table: `Acc "Q" 'x'` });
      // The sink meets the table (and puts its triggers on it) with a change of another key.
      await sink.apply([{ ...change(A, '01', 'INSERT', { 'Id Col': 'other', Nr: '1', v: 'a', N: '1' }), key: { 'Id Col': 'other', Nr: '1' } }], new Map(), 'ga');
      await client.query(`DELETE FROM "Odd Schema"."Acc ""Q"" 'x'" WHERE "Id Col" = 'k"1'`);
      const { rows } = await client.query(`SELECT table_name, row_key, source, counters FROM "Sync ""State""".source_tombstones`);
      // The row key as the changes name it: the key columns in the table's order, as text.
      expect(rows).toEqual([{ table_name: label, row_key: JSON.stringify(['k"1', '2']), source: `b's`, counters: { N: '5' } }]);
      await sink.apply([change(A + 0x10, '03', 'UPDATE', { 'Id Col': 'k"1', Nr: '2', v: 'a', N: '6' }, { 'Id Col': 'k"1', Nr: '2', v: 'seed', N: '5' })], new Map(), 'ga');
      expect((await client.query(`SELECT "Id Col" FROM "Odd Schema"."Acc ""Q"" 'x'" ORDER BY 1`)).rows).toEqual([{ 'Id Col': 'other' }]);
    } finally {
      await sink.close();
      await client.end();
    }
  });

  it('a sink that may not create the triggers warns with the SQL to run and works on; run by the owner, the SQL makes the deletes recorded', async () => {
    const url = await freshDatabase(await server(), `red_mw_priv_${serial++}`);
    const database = new URL(url).pathname.slice(1);
    pgDatabases.push(database);
    const role = `${database}_sink`;
    const admin = new pg.Client({ connectionString: url });
    await admin.connect();
    await admin.query(`DROP ROLE IF EXISTS ${pg.escapeIdentifier(role)}; CREATE ROLE ${pg.escapeIdentifier(role)} LOGIN;
                       GRANT CREATE ON DATABASE ${pg.escapeIdentifier(database)} TO ${pg.escapeIdentifier(role)};
                       CREATE TABLE acc (id text PRIMARY KEY, v text, n bigint, updated_at timestamptz NOT NULL,
                                         _syncline_lsn pg_lsn, _syncline_seq integer, _syncline_source text, _syncline_ts timestamptz, _syncline_xid bigint);
                       INSERT INTO acc (id, v, n, updated_at) VALUES ('k', 'seed', 5, '2026-01-01T00:00:00Z'), ('m', 'seed', 5, '2026-01-01T00:00:00Z');
                       GRANT SELECT, INSERT, UPDATE, DELETE ON acc TO ${pg.escapeIdentifier(role)}`);
    const sinkUrl = new URL(url);
    sinkUrl.username = role;
    const warnings: { message: string; details: Record<string, unknown> }[] = [];
    const sink = new PostgresSink({ url: sinkUrl.toString(), stateSchema: 'syncline', deleteMode: 'hard', versionGate: true, conflicts: pairTracking('b'), warn: (message, details) => warnings.push({ message, details }) });
    try {
      await sink.prepare();
      const update = (lsn: number, id: string): ChangeEvent => acc('a', lsn, '03', 'UPDATE', id, { id, v: 'a', n: '6', updated_at: '2026-01-01 00:00:03+00' }, { ...SEED, id });
      await sink.apply([update(A, 'k')], new Map(), 'ga');
      expect(await accRows(admin)).toEqual([{ id: 'k', v: 'a', n: '6' }, { id: 'm', v: 'seed', n: '5' }]);
      expect(warnings).toHaveLength(1);
      expect(warnings[0]?.message).toMatch(/may not create the triggers .* public\.acc/);
      const fix = String(warnings[0]?.details.fix).replace(/^run as the table's owner or a superuser: /, '').replace("<the table's owner>", 'postgres');
      await admin.query(fix);
      await admin.query(`DELETE FROM acc WHERE id = 'm'`);
      await sink.apply([update(A + 0x10, 'm')], new Map(), 'ga');
      expect(await accRows(admin)).toEqual([{ id: 'k', v: 'a', n: '6' }]);
    } finally {
      await sink.close();
      await admin.query(`DROP OWNED BY ${pg.escapeIdentifier(role)}`).catch(() => undefined);
      await admin.end();
      await dropDatabases(PG15_URL, [database]);
      pgDatabases.splice(pgDatabases.indexOf(database), 1);
      const root = new pg.Client({ connectionString: PG15_URL });
      await root.connect();
      await root.query(`DROP ROLE IF EXISTS ${pg.escapeIdentifier(role)}`);
      await root.end();
    }
  });
});
