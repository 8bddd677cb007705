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
import { freshDatabase, machinePg15, PG15_URL } from '../helpers/postgres.js';

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
