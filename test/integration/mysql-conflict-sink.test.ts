import mysql from 'mysql2/promise';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Row } from '../../src/core/change.js';
import { parseLsn } from '../../src/core/lsn.js';
import { builtInResolver, type ConflictResolver } from '../../src/sink/conflicts/resolve.js';
import { MysqlSink } from '../../src/sink/mysql/mysql-sink.js';
import { REJECT_VALUE, describeSinkContract } from '../contract/sink-contract.js';
import { changeMaker, keylessScenario, priorityTracking, tracking, truncationScenario } from '../helpers/conflict-fixtures.js';
import { freshMysqlDatabase, mysqlAdmin, mysqlRows, type MysqlTestDatabase } from '../helpers/mysql.js';
import { waitFor } from '../helpers/postgres.js';
import { uniqueName } from '../helpers/unique.js';

// A conflict-tracking MySQL sink keeps every promise of a sink with one source.
describeSinkContract('mysql with conflict tracking (MariaDB)', async () => {
  const db = await freshMysqlDatabase(uniqueName('syncline_cfc'));
  const sink = new MysqlSink({ url: db.url, stateSchema: 'syncline', versionGate: true, conflicts: tracking() });
  return {
    sink,
    storesPositions: true,
    missingTableIsPrerequisite: true,
    async createTable(table) {
      await db.admin.query(`CREATE TABLE ${mysql.escapeId(table)} (id VARCHAR(255) PRIMARY KEY, v TEXT CHECK (v IS NULL OR v <> ${mysql.escape(REJECT_VALUE)}), n LONGTEXT)`);
    },
    async readRow(table, key) {
      const [r] = await mysqlRows<{ id: string; v: string | null; n: string | null }>(db.admin, `SELECT id, v, n FROM ${mysql.escapeId(table)} WHERE id = ?`, [key.id]);
      return r;
    },
    async close() {
      await sink.close();
      await db.drop();
    },
  };
});

const change = changeMaker();
/** Changes with LSNs below `change`'s: another server's. */
const early = changeMaker();

describe('mysql sink conflict tracking (MariaDB)', () => {
  let db: MysqlTestDatabase;

  beforeAll(async () => {
    db = await freshMysqlDatabase(uniqueName('syncline_cfs'));
  });

  afterAll(async () => {
    await db?.drop();
  });

  async function freshTable(): Promise<void> {
    await db.admin.query('DROP TABLE IF EXISTS acc');
    await db.admin.query('CREATE TABLE acc (id VARCHAR(64) PRIMARY KEY, v TEXT, n BIGINT)');
    for (const t of ['syncline_conflicts', 'syncline_tombstones', 'syncline_source_tombstones']) {
      const [exists] = await db.admin.query<mysql.RowDataPacket[]>('SELECT 1 FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ?', [t]);
      if (exists.length > 0) await db.admin.query(`TRUNCATE ${mysql.escapeId(t)}`);
    }
  }

  function rows(): Promise<Row[]> {
    return mysqlRows<Row>(db.admin, 'SELECT id, v, CAST(n AS CHAR) AS n FROM acc ORDER BY id');
  }

  function conflicts(columns: string): Promise<Record<string, unknown>[]> {
    return mysqlRows(db.admin, `SELECT ${columns} FROM syncline_conflicts ORDER BY id`);
  }

  it('gates versions per source, decides other writers and rows it never wrote by the strategy, records each conflict once, merges counters, and a soft delete stays syncline’s', async () => {
    await freshTable();
    const sink = new MysqlSink({ url: db.url, stateSchema: 'syncline', deleteMode: 'soft', versionGate: true, conflicts: tracking(builtInResolver('last_write_wins'), [['public.acc', ['n']]]) });
    await sink.prepare();
    try {
      const a1 = change('a', 'INSERT', '1', { id: '1', v: 'a1', n: '10' }, '2026-01-01T00:00:01Z');
      const b1 = change('b', 'UPDATE', '1', { id: '1', v: 'b-old', n: '11' }, '2026-01-01T00:00:00Z', { id: '1', v: 'x', n: '10' });
      let o = await sink.apply([a1], new Map(), 'g');
      expect(o.applied).toBe(1);
      // b's write is older by clock although its LSN is larger: a's version stays, the counter moves.
      o = await sink.apply([b1], new Map(), 'g');
      expect(o.conflicts).toEqual([{ table: 'public.acc', strategy: 'last_write_wins', count: 1 }]);
      expect(await rows()).toEqual([{ id: '1', v: 'a1', n: '11' }]);
      // A replay records nothing again and changes nothing.
      o = await sink.apply([a1, b1], new Map(), 'g');
      expect(o.conflicts).toBeUndefined();
      expect(o.applied).toBe(0);
      expect(await rows()).toEqual([{ id: '1', v: 'a1', n: '11' }]);
      // a's next version goes through its own gate (no conflict), its counter difference added.
      o = await sink.apply([change('a', 'UPDATE', '1', { id: '1', v: 'a2', n: '12' }, '2026-01-01T00:00:02Z', { id: '1', v: 'a1', n: '10' })], new Map(), 'g');
      expect(o.conflicts).toBeUndefined();
      expect(await rows()).toEqual([{ id: '1', v: 'a2', n: '13' }]);
      // b, later by clock, now wins over a's version; its source and clock are the row's.
      o = await sink.apply([change('b', 'UPDATE', '1', { id: '1', v: 'b2', n: '14' }, '2026-01-01T00:00:03Z', { id: '1', v: 'a2', n: '13' })], new Map(), 'g');
      expect(o.conflicts?.[0]?.count).toBe(1);
      expect(await rows()).toEqual([{ id: '1', v: 'b2', n: '14' }]);
      expect(await mysqlRows(db.admin, `SELECT _syncline_source AS s, DATE_FORMAT(_syncline_ts, '%Y-%m-%d %H:%i:%s') AS ts FROM acc`)).toEqual([{ s: 'b', ts: '2026-01-01 00:00:03' }]);
      // A row written at the target itself (syncline never wrote it) is the `local` writer's.
      await db.admin.query(`INSERT INTO acc (id, v, n) VALUES ('2', 'mine', 5)`);
      o = await sink.apply([change('a', 'INSERT', '2', { id: '2', v: 'a', n: '1' }, '2026-01-01T00:00:03Z')], new Map(), 'g');
      expect(o.conflicts?.[0]?.count).toBe(1);
      expect(await conflicts('stored_source, incoming_source, winner')).toEqual([
        { stored_source: 'a', incoming_source: 'b', winner: 'stored' },
        { stored_source: 'a', incoming_source: 'b', winner: 'incoming' },
        { stored_source: 'local', incoming_source: 'a', winner: 'incoming' },
      ]);
      // A soft delete of the owner keeps the row syncline's: the owner's next insert is no conflict.
      await sink.apply([change('a', 'DELETE', '2', null, '2026-01-01T00:00:04Z')], new Map(), 'g');
      expect(await mysqlRows(db.admin, `SELECT _deleted_at IS NOT NULL AS d, _syncline_source AS s FROM acc WHERE id = '2'`)).toEqual([{ d: 1, s: 'a' }]);
      o = await sink.apply([change('a', 'INSERT', '2', { id: '2', v: 'back', n: '1' }, '2026-01-01T00:00:05Z')], new Map(), 'g');
      expect(o.conflicts).toBeUndefined();
      expect(await rows()).toEqual([{ id: '1', v: 'b2', n: '14' }, { id: '2', v: 'back', n: '1' }]);
    } finally {
      await sink.close();
    }
  });

  it('source_priority: the listed-first source keeps a row, deletes of a lower one are refused, a higher one takes it', async () => {
    await freshTable();
    const sink = new MysqlSink({ url: db.url, stateSchema: 'syncline', versionGate: true, conflicts: priorityTracking(['b', 'a']) });
    await sink.prepare();
    try {
      await sink.apply([change('b', 'INSERT', '1', { id: '1', v: 'b', n: '1' }, '2026-01-01T00:00:00Z'), change('a', 'INSERT', '2', { id: '2', v: 'a', n: '1' }, '2026-01-01T00:00:00Z')], new Map(), 'g');
      // a's later writes and delete of b's row lose; b takes a's row and deletes it.
      let o = await sink.apply([change('a', 'UPDATE', '1', { id: '1', v: 'a', n: '2' }, '2026-01-01T00:00:09Z')], new Map(), 'g');
      expect(o.applied).toBe(0);
      o = await sink.apply([change('a', 'DELETE', '1', null, '2026-01-01T00:00:09Z')], new Map(), 'g');
      expect(o.applied).toBe(0);
      // b's LSNs are smaller than a's (another server): its winning write still takes the row
      // whole, version included (the ODKU's left-to-right assignments must not keep a's LSN).
      const takeOver = early('b', 'UPDATE', '2', { id: '2', v: 'b', n: '3' }, '2026-01-01T00:00:01Z');
      o = await sink.apply([takeOver], new Map(), 'g');
      expect(o.applied).toBe(1);
      expect(await mysqlRows(db.admin, `SELECT _syncline_source AS s, CAST(_syncline_lsn AS CHAR) AS lsn FROM acc WHERE id = '2'`)).toEqual([{ s: 'b', lsn: String(parseLsn(takeOver.commit_lsn)) }]);
      // ... and b's own next version passes its own gate.
      o = await sink.apply([early('b', 'UPDATE', '2', { id: '2', v: 'b', n: '3' }, '2026-01-01T00:00:01Z')], new Map(), 'g');
      expect([o.applied, o.conflicts]).toEqual([1, undefined]);
      expect(await rows()).toEqual([{ id: '1', v: 'b', n: '1' }, { id: '2', v: 'b', n: '3' }]);
      o = await sink.apply([change('b', 'DELETE', '1', null, '2026-01-01T00:00:02Z')], new Map(), 'g');
      expect(o.applied).toBe(1);
      expect(await rows()).toEqual([{ id: '2', v: 'b', n: '3' }]);
      // A delete of an absent key leaves its tombstone beside the other source's (each source
      // keeps its own, a smaller LSN of another source included).
      const tomb = early('a', 'DELETE', '1', null, '2026-01-01T00:00:03Z');
      await sink.apply([tomb], new Map(), 'g');
      expect(await mysqlRows(db.admin, `SELECT source, CAST(lsn AS CHAR) AS lsn FROM syncline_source_tombstones WHERE row_key = '["1"]' AND source = 'a'`)).toEqual([{ source: 'a', lsn: String(parseLsn(tomb.commit_lsn)) }]);
      expect(await mysqlRows(db.admin, `SELECT source FROM syncline_source_tombstones WHERE row_key = '["1"]' ORDER BY source`)).toEqual([{ source: 'a' }, { source: 'b' }]);
      expect(await conflicts(`winner, incoming_source, stored_source, incoming_version IS NULL OR incoming_version = 'null' AS is_delete`)).toEqual([
        { winner: 'stored', incoming_source: 'a', stored_source: 'b', is_delete: 0 },
        { winner: 'stored', incoming_source: 'a', stored_source: 'b', is_delete: 1 },
        { winner: 'incoming', incoming_source: 'b', stored_source: 'a', is_delete: 0 },
      ]);
    } finally {
      await sink.close();
    }
  });

  it('a custom resolver decides and is recorded as custom', async () => {
    await freshTable();
    const seen: string[] = [];
    const resolver: ConflictResolver = (c) => {
      seen.push(`${c.incoming.source} vs ${c.stored.writer}`);
      return { winner: 'incoming', row: { ...c.incoming.payload, v: `${c.stored.row.v}+${c.incoming.payload?.v}` } };
    };
    const sink = new MysqlSink({ url: db.url, stateSchema: 'syncline', versionGate: true, conflicts: { ...tracking(resolver), strategy: 'custom' } });
    await sink.prepare();
    try {
      await sink.apply([change('a', 'INSERT', '1', { id: '1', v: 'A', n: '1' }, '2026-01-01T00:00:01Z')], new Map(), 'g');
      await sink.apply([change('b', 'UPDATE', '1', { id: '1', v: 'B', n: '1' }, '2026-01-01T00:00:00Z')], new Map(), 'g');
      expect(seen).toEqual(['b vs a']);
      expect(await rows()).toEqual([{ id: '1', v: 'A+B', n: '1' }]);
      const r = await conflicts('strategy, written');
      expect(r.map((e) => ({ ...e, written: JSON.parse(e.written as string) as unknown }))).toEqual([{ strategy: 'custom', written: { id: '1', v: 'A+B', n: '1' } }]);
    } finally {
      await sink.close();
    }
  });

  it('a key another writer inserts while the batch runs is a conflict decided by the strategy, not overwritten (source_priority)', async () => {
    await freshTable();
    const sinkA = new MysqlSink({ url: db.url, stateSchema: 'syncline', versionGate: true, conflicts: priorityTracking(['a', 'b']) });
    const sinkB = new MysqlSink({ url: db.url, stateSchema: 'syncline', versionGate: true, conflicts: priorityTracking(['a', 'b']) });
    await sinkA.prepare();
    await sinkB.prepare();
    // Source a (first in priority) inserts key 1 in a transaction held open: b's batch must
    // wait for it, and must not write over a's row once a commits.
    const held = await mysqlAdmin();
    const watcher = await mysqlAdmin();
    try {
      await sinkA.apply([change('a', 'INSERT', '0', { id: '0', v: 'warm', n: '0' }, '2026-01-01T00:00:00Z')], new Map(), 'ga');
      await held.query(`USE ${mysql.escapeId(new URL(db.url).pathname.slice(1))}`);
      await held.query('START TRANSACTION');
      await held.query(`INSERT INTO acc (id, v, n, _syncline_source, _syncline_ts, _syncline_lsn, _syncline_seq) VALUES ('1', 'from a', 1, 'a', '2026-01-01 00:00:00', 1, 1)`);
      const applyingB = sinkB.apply([change('b', 'INSERT', '1', { id: '1', v: 'from b', n: '2' }, '2026-01-01T00:00:02Z')], new Map(), 'gb');
      // b's read of the key (FOR UPDATE) waits on a's uncommitted row (MariaDB shows it in the
      // process list, in state Statistics: the optimizer reads a primary key lookup up front).
      await waitFor('b waiting for a’s row lock', async () => (await mysqlRows(watcher, `SELECT 1 FROM information_schema.PROCESSLIST WHERE info LIKE '%FROM \`acc\` t WHERE%FOR UPDATE'`)).length === 1, 10_000, 20);
      await held.query('COMMIT');
      const outcome = await applyingB;
      expect(outcome.applied).toBe(0);
      expect(await rows()).toEqual([{ id: '0', v: 'warm', n: '0' }, { id: '1', v: 'from a', n: '1' }]);
      expect(await conflicts('winner, incoming_source, stored_source')).toEqual([{ winner: 'stored', incoming_source: 'b', stored_source: 'a' }]);
    } finally {
      await held.end();
      await watcher.end();
      await sinkA.close();
      await sinkB.close();
    }
  });

  it('an insert of an absent key that collides on another unique key fails as the error it is, never dropped silently', async () => {
    await freshTable();
    await db.admin.query('ALTER TABLE acc ADD UNIQUE KEY acc_v (v(32))');
    const sink = new MysqlSink({ url: db.url, stateSchema: 'syncline', versionGate: true, conflicts: tracking() });
    await sink.prepare();
    try {
      await sink.apply([change('a', 'INSERT', '1', { id: '1', v: 'same', n: '1' }, '2026-01-01T00:00:01Z')], new Map(), 'g');
      // Key 2 is absent, but its v collides with key 1's: the insert that never overwrites
      // must not take that duplicate for "another writer got there first".
      await expect(sink.apply([change('b', 'INSERT', '2', { id: '2', v: 'same', n: '2' }, '2026-01-01T00:00:02Z')], new Map(), 'g')).rejects.toThrow(/Duplicate entry/);
      expect(await rows()).toEqual([{ id: '1', v: 'same', n: '1' }]);
    } finally {
      await sink.close();
    }
  });

  it('a republished change of a version another writer replaced or deleted does not bring it back', async () => {
    await freshTable();
    const sink = new MysqlSink({ url: db.url, stateSchema: 'syncline', versionGate: true, conflicts: tracking() });
    await sink.prepare();
    try {
      // Key 1: a inserts, b deletes later (last_write_wins: the delete wins); key 2: a inserts,
      // b updates later, then b deletes. Then a's capture restarts and republishes its inserts.
      const a1 = change('a', 'INSERT', '1', { id: '1', v: 'a', n: '1' }, '2026-01-01T00:00:01Z');
      const a2 = change('a', 'INSERT', '2', { id: '2', v: 'a', n: '1' }, '2026-01-01T00:00:01Z');
      await sink.apply([a1, a2], new Map(), 'ga');
      await sink.apply([change('b', 'DELETE', '1', null, '2026-01-01T00:00:05Z', { id: '1', v: 'a', n: '1' })], new Map(), 'gb');
      await sink.apply([change('b', 'UPDATE', '2', { id: '2', v: 'b', n: '2' }, '2026-01-01T00:00:05Z')], new Map(), 'gb');
      await sink.apply([change('b', 'DELETE', '2', null, '2026-01-01T00:00:06Z', { id: '2', v: 'b', n: '2' })], new Map(), 'gb');
      expect(await rows()).toEqual([]);
      const replay = await sink.apply([a1, a2], new Map(), 'ga');
      expect(replay.applied).toBe(0);
      expect(await rows()).toEqual([]);
      // A newer change of a still counts as a new write (decided against the tombstone's absence: inserted).
      await sink.apply([change('a', 'UPDATE', '1', { id: '1', v: 'a-new', n: '3' }, '2026-01-01T00:00:09Z')], new Map(), 'ga');
      expect(await rows()).toEqual([{ id: '1', v: 'a-new', n: '3' }]);
    } finally {
      await sink.close();
    }
  });

  it('a truncation is its source’s: another source with lower LSNs still writes after it; rows written after it (by clock) stay', async () => {
    await freshTable();
    const sink = new MysqlSink({ url: db.url, stateSchema: 'syncline', versionGate: true, conflicts: tracking() });
    await sink.prepare();
    try {
      await truncationScenario(sink, async () => (await rows()).map((r) => String(r.id)));
    } finally {
      await sink.close();
    }
  });

  it('a keyless table takes each source’s changes against that source’s versions; a row both sides deleted is no drift', async () => {
    await db.admin.query('DROP TABLE IF EXISTS bag');
    await db.admin.query('CREATE TABLE bag (v TEXT, n INT)');
    const sink = new MysqlSink({ url: db.url, stateSchema: 'syncline', versionGate: true, conflicts: tracking() });
    await sink.prepare();
    try {
      await keylessScenario(
        sink,
        async () => (await mysqlRows<{ r: string }>(db.admin, `SELECT CONCAT(v, ':', n) AS r FROM bag ORDER BY 1`)).map((r) => r.r),
        async () => void (await db.admin.query(`UPDATE syncline_source_multiset_versions SET reset = 1 WHERE table_name = 'public.bag'`)),
      );
    } finally {
      await sink.close();
    }
  });
});
