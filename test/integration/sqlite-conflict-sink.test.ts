import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import Database from 'better-sqlite3';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import type { Row } from '../../src/core/change.js';
import { parseLsn } from '../../src/core/lsn.js';
import type { DefinitionLookup, TableDefinition } from '../../src/core/schema-evolution.js';
import type { ConflictResolver } from '../../src/sink/conflicts/resolve.js';
import { builtInResolver, withDeltas } from '../../src/sink/conflicts/resolve.js';
import type { ConflictOptions } from '../../src/sink/sql/sql-sink.js';
import { SqliteSink, quoteSqliteIdent } from '../../src/sink/sqlite/sqlite-sink.js';
import { REJECT_VALUE, describeSinkContract } from '../contract/sink-contract.js';
import { conflictChange as change, keylessScenario, priorityTracking, tracking, truncationScenario } from '../helpers/conflict-fixtures.js';
import { col } from '../helpers/evolution-fixtures.js';

// A conflict-tracking SQLite sink keeps every promise of a sink with one source.
describeSinkContract('sqlite with conflict tracking', async () => {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'syncline-sinkc-sqlite-cf-'));
  const file = path.join(dir, 'target.db');
  const sink = new SqliteSink({ url: file, stateSchema: 'syncline', versionGate: true, conflicts: tracking() });
  let db: Database.Database | undefined;
  const conn = (): Database.Database => (db ??= new Database(file));
  return {
    sink,
    storesPositions: true,
    missingTableIsPrerequisite: true,
    async createTable(table) {
      conn().exec(`CREATE TABLE ${quoteSqliteIdent(table)} (id TEXT PRIMARY KEY, v TEXT CHECK (v IS NULL OR v <> '${REJECT_VALUE}'), n TEXT)`);
    },
    async readRow(table, key) {
      return conn().prepare(`SELECT id, v, n FROM ${quoteSqliteIdent(table)} WHERE id = ?`).get(key.id) as { id: string; v: string | null; n: string | null } | undefined;
    },
    async close() {
      await sink.close();
      db?.close();
      await rm(dir, { recursive: true, force: true });
    },
  };
});

describe('sqlite sink conflict tracking', () => {
  let dir: string;
  let file: string;
  let db: Database.Database;
  const sinks: SqliteSink[] = [];

  beforeAll(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'syncline-sqlite-cf-'));
  });

  beforeEach(() => {
    // Each test its own file: the sinks' bookkeeping starts empty.
    file = path.join(dir, `t${sinks.length}-${Date.now()}.db`);
    db = new Database(file);
    db.exec('CREATE TABLE acc (id TEXT PRIMARY KEY, v TEXT, n INTEGER)');
  });

  afterAll(async () => {
    for (const s of sinks) await s.close();
    db?.close();
    await rm(dir, { recursive: true, force: true });
  });

  function open(conflicts: ConflictOptions, deleteMode: 'hard' | 'soft' = 'hard', definitions?: DefinitionLookup): SqliteSink {
    const evolution = definitions ? { evolution: { mode: 'full' as const, dropColumns: 'drop' as const, definitions } } : {};
    const sink = new SqliteSink({ url: file, stateSchema: 'syncline', versionGate: true, deleteMode, conflicts, ...evolution });
    sinks.push(sink);
    return sink;
  }

  function rows(): Row[] {
    // Live rows (soft-deleted ones keep their data).
    return db.prepare(`SELECT id, v, CAST(n AS TEXT) AS n FROM acc WHERE ${hasColumn('_deleted_at') ? '_deleted_at IS NULL' : 'true'} ORDER BY id`).all() as Row[];
  }

  function hasColumn(name: string): boolean {
    return db.prepare('SELECT 1 FROM pragma_table_info(?) WHERE name = ?').get('acc', name) !== undefined;
  }

  function conflicts<K extends string>(...columns: K[]): Record<K, unknown>[] {
    return db.prepare(`SELECT ${columns.map(quoteSqliteIdent).join(', ')} FROM syncline_conflicts ORDER BY id`).all() as Record<K, unknown>[];
  }

  it('gates versions per source, decides other writers and rows the target wrote by the strategy, records each conflict once, merges counters, and a soft delete stays syncline’s', async () => {
    const sink = open(tracking(builtInResolver('last_write_wins'), [['public.acc', ['n']]]), 'soft');
    await sink.prepare();
    const a1 = change('a', 'INSERT', '1', { id: '1', v: 'a1', n: '10' }, '2026-01-01T00:00:01Z');
    const b1 = change('b', 'UPDATE', '1', { id: '1', v: 'b-old', n: '11' }, '2026-01-01T00:00:00Z', { id: '1', v: 'x', n: '10' });
    let o = await sink.apply([a1], new Map(), 'g');
    expect(o.applied).toBe(1);
    expect(db.prepare('SELECT _syncline_source AS s, _syncline_ts AS ts FROM acc').get()).toEqual({ s: 'a', ts: '2026-01-01 00:00:01.000000' });
    // b's write is older by clock although its LSN is larger: a's version stays, the counter moves.
    o = await sink.apply([b1], new Map(), 'g');
    expect(o.conflicts).toEqual([{ table: 'public.acc', strategy: 'last_write_wins', count: 1 }]);
    expect(o.stale).toBe(1);
    expect(rows()).toEqual([{ id: '1', v: 'a1', n: '11' }]);
    expect(db.prepare('SELECT _syncline_source AS s FROM acc').get()).toEqual({ s: 'a' });
    // A replay records nothing again and changes nothing.
    o = await sink.apply([a1, b1], new Map(), 'g');
    expect(o.conflicts).toBeUndefined();
    expect(o.applied).toBe(0);
    expect(rows()).toEqual([{ id: '1', v: 'a1', n: '11' }]);
    expect(conflicts('winner')).toEqual([{ winner: 'stored' }]);
    // a's next version goes through its own gate (no conflict), its counter difference added.
    const a2 = change('a', 'UPDATE', '1', { id: '1', v: 'a2', n: '12' }, '2026-01-01T00:00:02Z', { id: '1', v: 'a1', n: '10' });
    o = await sink.apply([a2], new Map(), 'g');
    expect(o.conflicts).toBeUndefined();
    expect(rows()).toEqual([{ id: '1', v: 'a2', n: '13' }]);
    // a's older version replayed after it: stale by a's own version gate.
    o = await sink.apply([a1], new Map(), 'g');
    expect({ applied: o.applied, stale: o.stale, conflicts: o.conflicts }).toEqual({ applied: 0, stale: 1, conflicts: undefined });
    // A row the target wrote itself (syncline never did) is the `local` writer's: a change to it
    // is a conflict; its time is unknown, so last_write_wins lets the incoming write win.
    db.prepare(`INSERT INTO acc (id, v, n) VALUES ('2', 'mine', 5)`).run();
    o = await sink.apply([change('a', 'INSERT', '2', { id: '2', v: 'a', n: '1' }, '2026-01-01T00:00:03Z')], new Map(), 'g');
    expect(o.conflicts?.[0]?.count).toBe(1);
    expect(rows()).toEqual([{ id: '1', v: 'a2', n: '13' }, { id: '2', v: 'a', n: '6' }]);
    // A row syncline wrote and the target changed since is the `local` writer's too (its values
    // no longer give the digest syncline stored).
    o = await sink.apply([change('a', 'UPDATE', '2', { id: '2', v: 'a-next', n: '1' }, '2026-01-01T00:00:03.5Z', { id: '2', v: 'a', n: '1' })], new Map(), 'g');
    expect(o.conflicts).toBeUndefined();
    db.prepare(`UPDATE acc SET v = 'mine again' WHERE id = '2'`).run();
    o = await sink.apply([change('a', 'UPDATE', '2', { id: '2', v: 'a-after', n: '1' }, '2026-01-01T00:00:03.7Z', { id: '2', v: 'a-next', n: '1' })], new Map(), 'g');
    expect(o.conflicts?.[0]?.count).toBe(1);
    expect(rows()).toEqual([{ id: '1', v: 'a2', n: '13' }, { id: '2', v: 'a-after', n: '6' }]);
    expect(conflicts('stored_source', 'winner', 'incoming_source', 'stored_lsn', 'incoming_commit_ts')).toEqual([
      { stored_source: 'a', winner: 'stored', incoming_source: 'b', stored_lsn: Number(parseLsn(a1.commit_lsn)), incoming_commit_ts: '2026-01-01 00:00:00.000000' },
      { stored_source: 'local', winner: 'incoming', incoming_source: 'a', stored_lsn: null, incoming_commit_ts: '2026-01-01 00:00:03.000000' },
      { stored_source: 'local', winner: 'incoming', incoming_source: 'a', stored_lsn: null, incoming_commit_ts: '2026-01-01 00:00:03.700000' },
    ]);
    // A soft delete of the owner keeps the row syncline's: the owner's next insert is no conflict.
    await sink.apply([change('a', 'DELETE', '1', null, '2026-01-01T00:00:04Z')], new Map(), 'g');
    expect(rows()).toEqual([{ id: '2', v: 'a-after', n: '6' }]);
    o = await sink.apply([change('a', 'INSERT', '1', { id: '1', v: 'back', n: '1' }, '2026-01-01T00:00:05Z')], new Map(), 'g');
    expect(o.conflicts).toBeUndefined();
    expect(rows()).toEqual([{ id: '1', v: 'back', n: '1' }, { id: '2', v: 'a-after', n: '6' }]);
  });

  it('a target change the strategy keeps stays the target’s when counters merge into it; syncline’s DDL leaves its rows its own', async () => {
    // The target (`local`) comes first: its changes win, but a's counter increments still count.
    const localFirst: ConflictOptions = { strategy: 'source_priority', resolver: withDeltas(builtInResolver('source_priority', ['local', 'a'])), deltaColumns: new Map([['public.acc', ['n']]]), localSource: 'local' };
    const history: TableDefinition[] = [
      { version: 1, columns: [col('id', 1, 'text', 25, true), col('v', 2, 'text', 25), col('n', 3, 'bigint', 20)] },
      { version: 2, columns: [col('id', 1, 'text', 25, true), col('w', 2, 'text', 25), col('n', 3, 'bigint', 20)] }, // RENAME v TO w
    ];
    const sink = open(localFirst, 'hard', { history: async (_s, _t, version) => history.filter((d) => d.version <= version) });
    await sink.prepare();
    const v1 = (c: ReturnType<typeof change>): ReturnType<typeof change> => ({ ...c, _schema_version: 1 });
    await sink.apply([v1(change('a', 'INSERT', '1', { id: '1', v: 'a', n: '1' }, '2026-01-01T00:00:01Z')), v1(change('a', 'INSERT', '2', { id: '2', v: 'a', n: '1' }, '2026-01-01T00:00:01Z'))], new Map(), 'g');
    db.prepare(`UPDATE acc SET v = 'mine' WHERE id = '1'`).run();
    let o = await sink.apply([v1(change('a', 'UPDATE', '1', { id: '1', v: 'a2', n: '5' }, '2026-01-01T00:00:02Z', { id: '1', v: 'a', n: '1' }))], new Map(), 'g');
    expect(o.conflicts?.[0]?.count).toBe(1);
    expect(rows()).toEqual([{ id: '1', v: 'mine', n: '5' }, { id: '2', v: 'a', n: '1' }]);
    // Still the target's after the merge: a's next change is decided against it again.
    o = await sink.apply([v1(change('a', 'UPDATE', '1', { id: '1', v: 'a3', n: '6' }, '2026-01-01T00:00:03Z', { id: '1', v: 'a2', n: '5' }))], new Map(), 'g');
    expect(o.conflicts?.[0]?.count).toBe(1);
    expect(rows()).toEqual([{ id: '1', v: 'mine', n: '6' }, { id: '2', v: 'a', n: '1' }]);
    // The source renames v to w: syncline renames the target column in the batch, and row 2
    // (syncline's, unchanged at the target) stays a's: no conflict. Row 1 stays the target's.
    const v2 = (c: ReturnType<typeof change>): ReturnType<typeof change> => ({ ...c, _schema_version: 2 });
    o = await sink.apply([v2(change('a', 'UPDATE', '2', { id: '2', w: 'a-w', n: '2' }, '2026-01-01T00:00:04Z', { id: '2', w: 'a', n: '1' }))], new Map(), 'g');
    expect({ applied: o.applied, conflicts: o.conflicts }).toEqual({ applied: 1, conflicts: undefined });
    o = await sink.apply([v2(change('a', 'UPDATE', '1', { id: '1', w: 'a4', n: '7' }, '2026-01-01T00:00:05Z', { id: '1', w: 'a3', n: '6' }))], new Map(), 'g');
    expect(o.conflicts?.[0]?.count).toBe(1);
    expect(db.prepare('SELECT id, w, CAST(n AS TEXT) AS n FROM acc ORDER BY id').all()).toEqual([{ id: '1', w: 'mine', n: '7' }, { id: '2', w: 'a-w', n: '2' }]);
  });

  it('a custom resolver decides and is recorded as custom, with what it wrote', async () => {
    const seen: string[] = [];
    const resolver: ConflictResolver = (c) => {
      seen.push(`${c.incoming.source} vs ${c.stored.writer}`);
      return { winner: 'incoming', row: { ...c.incoming.payload, v: `${c.stored.row.v}+${c.incoming.payload?.v}` } };
    };
    const sink = open({ ...tracking(resolver), strategy: 'custom' });
    await sink.prepare();
    await sink.apply([change('a', 'INSERT', '1', { id: '1', v: 'A', n: '1' }, '2026-01-01T00:00:01Z')], new Map(), 'g');
    await sink.apply([change('b', 'UPDATE', '1', { id: '1', v: 'B', n: '1' }, '2026-01-01T00:00:00Z')], new Map(), 'g');
    expect(seen).toEqual(['b vs a']);
    expect(rows()).toEqual([{ id: '1', v: 'A+B', n: '1' }]);
    const recorded = conflicts('strategy', 'written', 'stored_version', 'incoming_version');
    expect(recorded.map((r) => ({ strategy: r.strategy, written: JSON.parse(r.written as string) as unknown, stored: JSON.parse(r.stored_version as string) as unknown, incoming: JSON.parse(r.incoming_version as string) as unknown }))).toEqual([
      { strategy: 'custom', written: { id: '1', v: 'A+B', n: '1' }, stored: { id: '1', v: 'A', n: '1' }, incoming: { id: '1', v: 'B', n: '1' } },
    ]);
    expect(db.prepare('SELECT _syncline_source AS s FROM acc').get()).toEqual({ s: 'b' });
  });

  it('source_priority between two sinks on one file (each its own connection, as two apply processes), deletes included: the first-listed writer keeps the row', async () => {
    const sinkA = open(priorityTracking(['a', 'b']));
    const sinkB = open(priorityTracking(['a', 'b']));
    await sinkA.prepare();
    await sinkB.prepare();
    // Key 1: a first, then b (refused). Key 2: b first, then a (takes it over).
    await sinkA.apply([change('a', 'INSERT', '1', { id: '1', v: 'a', n: '1' }, '2026-01-01T00:00:01Z')], new Map(), 'ga');
    await sinkB.apply([change('b', 'INSERT', '2', { id: '2', v: 'b', n: '2' }, '2026-01-01T00:00:01Z')], new Map(), 'gb');
    let o = await sinkB.apply([change('b', 'UPDATE', '1', { id: '1', v: 'b', n: '9' }, '2026-01-01T00:00:09Z')], new Map(), 'gb');
    expect({ applied: o.applied, stale: o.stale }).toEqual({ applied: 0, stale: 1 });
    o = await sinkA.apply([change('a', 'UPDATE', '2', { id: '2', v: 'a', n: '3' }, '2026-01-01T00:00:00Z')], new Map(), 'ga');
    expect(o.applied).toBe(1);
    expect(rows()).toEqual([{ id: '1', v: 'a', n: '1' }, { id: '2', v: 'a', n: '3' }]);
    // A delete is a write too: b may not delete a's row.
    o = await sinkB.apply([change('b', 'DELETE', '1', null, '2026-01-01T00:00:10Z')], new Map(), 'gb');
    expect(o.applied).toBe(0);
    expect(rows()).toEqual([{ id: '1', v: 'a', n: '1' }, { id: '2', v: 'a', n: '3' }]);
    expect(conflicts('row_key', 'winner', 'incoming_source', 'stored_source', 'incoming_version')).toEqual([
      { row_key: '["1"]', winner: 'stored', incoming_source: 'b', stored_source: 'a', incoming_version: JSON.stringify({ id: '1', v: 'b', n: '9' }) },
      { row_key: '["2"]', winner: 'incoming', incoming_source: 'a', stored_source: 'b', incoming_version: JSON.stringify({ id: '2', v: 'a', n: '3' }) },
      { row_key: '["1"]', winner: 'stored', incoming_source: 'b', stored_source: 'a', incoming_version: 'null' },
    ]);
    // Each sink's positions are its own group's.
    expect(await sinkA.positions('ga')).toEqual(new Map());
  });

  it('a republished change of a version another writer replaced or deleted does not bring it back', async () => {
    const sink = open(tracking());
    await sink.prepare();
    // Key 1: a inserts, b deletes later (last_write_wins: the delete wins); key 2: a inserts,
    // b updates later, then b deletes. Then a's capture restarts and republishes its inserts.
    const a1 = change('a', 'INSERT', '1', { id: '1', v: 'a', n: '1' }, '2026-01-01T00:00:01Z');
    const a2 = change('a', 'INSERT', '2', { id: '2', v: 'a', n: '1' }, '2026-01-01T00:00:01Z');
    await sink.apply([a1, a2], new Map(), 'ga');
    await sink.apply([change('b', 'DELETE', '1', null, '2026-01-01T00:00:05Z', { id: '1', v: 'a', n: '1' })], new Map(), 'gb');
    await sink.apply([change('b', 'UPDATE', '2', { id: '2', v: 'b', n: '2' }, '2026-01-01T00:00:05Z')], new Map(), 'gb');
    await sink.apply([change('b', 'DELETE', '2', null, '2026-01-01T00:00:06Z', { id: '2', v: 'b', n: '2' })], new Map(), 'gb');
    expect(rows()).toEqual([]);
    expect(db.prepare('SELECT row_key, source FROM syncline_source_tombstones ORDER BY row_key').all()).toEqual([{ row_key: '["1"]', source: 'b' }, { row_key: '["2"]', source: 'b' }]);
    const replay = await sink.apply([a1, a2], new Map(), 'ga');
    expect(replay.applied).toBe(0);
    expect(rows()).toEqual([]);
    // A newer change of a still counts as a new write (decided against the tombstone's absence: inserted).
    await sink.apply([change('a', 'UPDATE', '1', { id: '1', v: 'a-new', n: '3' }, '2026-01-01T00:00:09Z')], new Map(), 'ga');
    expect(rows()).toEqual([{ id: '1', v: 'a-new', n: '3' }]);
  });

  it('a truncation is its source’s: another source with lower LSNs still writes after it; rows written after it (by clock) stay', async () => {
    const sink = open(tracking());
    await sink.prepare();
    await truncationScenario(sink, async () => (db.prepare('SELECT id FROM acc ORDER BY id').all() as { id: string }[]).map((r) => r.id));
  });

  it('a keyless table takes each source’s changes against that source’s versions; a row both sides deleted is no drift', async () => {
    db.exec('CREATE TABLE bag (v TEXT, n INTEGER)');
    const sink = open(tracking());
    await sink.prepare();
    await keylessScenario(
      sink,
      async () => (db.prepare(`SELECT v || ':' || n AS r FROM bag ORDER BY 1`).all() as { r: string }[]).map((r) => r.r),
      async () => void db.prepare(`UPDATE syncline_source_multiset_versions SET reset = 1 WHERE table_name = 'public.bag'`).run(),
    );
  });
});
