import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Row } from '../../src/core/change.js';
import { builtInResolver, withDeltas, type ConflictResolver } from '../../src/sink/conflicts/resolve.js';
import { PostgresSink } from '../../src/sink/postgres/postgres-sink.js';
import type { ConflictOptions } from '../../src/sink/sql/sql-sink.js';
import { freshDatabase, machinePg15, PG15_URL, waitFor } from '../helpers/postgres.js';
import { dropDatabases } from '../helpers/many-writers.js';
import { REJECT_VALUE, describeSinkContract } from '../contract/sink-contract.js';
import { conflictChange as change, tracking } from '../helpers/conflict-fixtures.js';
import { keylessScenario, truncationScenario } from '../helpers/conflict-fixtures.js';

const PID = process.pid;

// A conflict-tracking sink keeps every promise of a sink with one source.
describeSinkContract('postgres with conflict tracking (PostgreSQL 15)', async () => {
  const server = await machinePg15();
  const url = await freshDatabase(server, `syncline_conflict_contract_${PID}`);
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  const sink = new PostgresSink({ url, stateSchema: 'syncline', deleteMode: 'hard', versionGate: true, conflicts: tracking() });
  return {
    sink,
    storesPositions: true,
    missingTableIsPrerequisite: true,
    async createTable(table) {
      await client.query(`CREATE TABLE public.${pg.escapeIdentifier(table)} (id text PRIMARY KEY, v text CHECK (v IS DISTINCT FROM ${pg.escapeLiteral(REJECT_VALUE)}), n text)`);
    },
    async readRow(table, key) {
      const { rows } = await client.query<{ id: string; v: string | null; n: string | null }>(`SELECT id, v, n FROM public.${pg.escapeIdentifier(table)} WHERE id = $1`, [key.id]);
      return rows[0];
    },
    async close() {
      await sink.close();
      await client.end();
      await dropDatabases(PG15_URL, [`syncline_conflict_contract_${PID}`]);
    },
  };
});

describe('postgres sink conflict tracking (PostgreSQL 15)', () => {
  const db = `syncline_conflict_sink_${PID}`;
  let url: string;
  let client: pg.Client;

  beforeAll(async () => {
    url = await freshDatabase(await machinePg15(), db);
    client = new pg.Client({ connectionString: url });
    await client.connect();
  });

  afterAll(async () => {
    await client?.end();
    await dropDatabases(PG15_URL, [db]);
  });

  async function rows(): Promise<Row[]> {
    return (await client.query<Row>('SELECT id, v, n::text FROM acc ORDER BY id')).rows;
  }

  it('gates versions per source, decides other writers and local writes by the strategy, records each conflict once, and a soft delete stays syncline’s', async () => {
    await client.query('DROP TABLE IF EXISTS acc; CREATE TABLE acc (id text PRIMARY KEY, v text, n bigint)');
    const sink = new PostgresSink({ url, stateSchema: 'syncline', deleteMode: 'soft', versionGate: true, conflicts: tracking(builtInResolver('last_write_wins'), [['public.acc', ['n']]]) });
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
      expect(await rows()).toEqual([{ id: '1', v: 'a1', n: '11' }]);
      // a's next version goes through its own gate (no conflict), its counter difference added.
      await sink.apply([change('a', 'UPDATE', '1', { id: '1', v: 'a2', n: '12' }, '2026-01-01T00:00:02Z', { id: '1', v: 'a1', n: '10' })], new Map(), 'g');
      expect(await rows()).toEqual([{ id: '1', v: 'a2', n: '13' }]);
      // A write made at the target itself is the `local` writer's: the next change conflicts with it.
      await client.query(`UPDATE acc SET v = 'mine' WHERE id = '1'`);
      o = await sink.apply([change('a', 'UPDATE', '1', { id: '1', v: 'a3', n: '12' }, '2026-01-01T00:00:03Z', { id: '1', v: 'a2', n: '12' })], new Map(), 'g');
      expect(o.conflicts?.[0]?.count).toBe(1);
      const recorded = await client.query<{ stored_source: string; winner: string }>(`SELECT stored_source, winner FROM syncline.conflicts ORDER BY id`);
      expect(recorded.rows).toEqual([
        { stored_source: 'a', winner: 'stored' },
        { stored_source: 'local', winner: 'incoming' },
      ]);
      // A soft delete of the owner keeps the row syncline's: the owner's next insert is no conflict.
      await sink.apply([change('a', 'DELETE', '1', null, '2026-01-01T00:00:04Z')], new Map(), 'g');
      o = await sink.apply([change('a', 'INSERT', '1', { id: '1', v: 'back', n: '1' }, '2026-01-01T00:00:05Z')], new Map(), 'g');
      expect(o.conflicts).toBeUndefined();
      expect(await rows()).toEqual([{ id: '1', v: 'back', n: '1' }]);
    } finally {
      await sink.close();
    }
  });

  it('a custom resolver decides and is recorded as custom', async () => {
    await client.query('DROP TABLE IF EXISTS acc; CREATE TABLE acc (id text PRIMARY KEY, v text, n bigint); TRUNCATE syncline.conflicts, syncline.tombstones, syncline.source_tombstones');
    const seen: string[] = [];
    const resolver: ConflictResolver = (c) => {
      seen.push(`${c.incoming.source} vs ${c.stored.writer}`);
      return { winner: 'incoming', row: { ...c.incoming.payload, v: `${c.stored.row.v}+${c.incoming.payload?.v}` } };
    };
    const sink = new PostgresSink({ url, stateSchema: 'syncline', deleteMode: 'hard', versionGate: true, conflicts: { ...tracking(resolver), strategy: 'custom' } });
    await sink.prepare();
    try {
      await sink.apply([change('a', 'INSERT', '1', { id: '1', v: 'A', n: '1' }, '2026-01-01T00:00:01Z')], new Map(), 'g');
      await sink.apply([change('b', 'UPDATE', '1', { id: '1', v: 'B', n: '1' }, '2026-01-01T00:00:00Z')], new Map(), 'g');
      expect(seen).toEqual(['b vs a']);
      expect(await rows()).toEqual([{ id: '1', v: 'A+B', n: '1' }]);
      const r = await client.query<{ strategy: string; written: Row }>(`SELECT strategy, written FROM syncline.conflicts`);
      expect(r.rows).toEqual([{ strategy: 'custom', written: { id: '1', v: 'A+B', n: '1' } }]);
    } finally {
      await sink.close();
    }
  });
  it('a key another writer inserts while the batch runs is a conflict decided by the strategy, not overwritten (source_priority)', async () => {
    await client.query('DROP TABLE IF EXISTS acc; CREATE TABLE acc (id text PRIMARY KEY, v text, n bigint); TRUNCATE syncline.conflicts, syncline.tombstones, syncline.source_tombstones');
    const priority: ConflictOptions = { strategy: 'source_priority', resolver: withDeltas(builtInResolver('source_priority', ['a', 'b'])), deltaColumns: new Map(), localSource: 'local' };
    const sinkA = new PostgresSink({ url, stateSchema: 'syncline', deleteMode: 'hard', versionGate: true, conflicts: priority });
    const sinkB = new PostgresSink({ url, stateSchema: 'syncline', deleteMode: 'hard', versionGate: true, conflicts: priority });
    await sinkA.prepare();
    await sinkB.prepare();
    // Source a (first in priority) inserts key 1 in a transaction held open: b's batch reads
    // the key absent (nothing to lock) and must not write over a's row once a commits.
    const held = new pg.Client({ connectionString: url });
    await held.connect();
    try {
      await sinkA.apply([change('a', 'INSERT', '0', { id: '0', v: 'warm', n: '0' }, '2026-01-01T00:00:00Z')], new Map(), 'ga');
      await held.query('BEGIN');
      await held.query(`INSERT INTO acc (id, v, n, _syncline_source, _syncline_lsn, _syncline_seq, _syncline_xid)
                        VALUES ('1', 'from a', 1, 'a', '0/1', 1, pg_current_xact_id()::text::bigint % 4294967296)`);
      const applyingB = sinkB.apply([change('b', 'INSERT', '1', { id: '1', v: 'from b', n: '2' }, '2026-01-01T00:00:02Z')], new Map(), 'gb');
      // b's insert waits on a's uncommitted key (the transaction is visible as a lock wait).
      await waitFor('b waiting for a\'s row lock', async () => (await client.query(`SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()`)).rowCount === 1, 10_000, 20);
      await held.query('COMMIT');
      const outcome = await applyingB;
      expect(outcome.applied).toBe(0);
      expect(await rows()).toEqual([{ id: '0', v: 'warm', n: '0' }, { id: '1', v: 'from a', n: '1' }]);
      const r = await client.query<{ winner: string; incoming_source: string; stored_source: string }>(`SELECT winner, incoming_source, stored_source FROM syncline.conflicts`);
      expect(r.rows).toEqual([{ winner: 'stored', incoming_source: 'b', stored_source: 'a' }]);
    } finally {
      await held.end();
      await sinkA.close();
      await sinkB.close();
    }
  });
  it('a republished change of a version another writer replaced or deleted does not bring it back', async () => {
    await client.query('DROP TABLE IF EXISTS acc; CREATE TABLE acc (id text PRIMARY KEY, v text, n bigint); TRUNCATE syncline.conflicts, syncline.tombstones, syncline.source_tombstones');
    const sink = new PostgresSink({ url, stateSchema: 'syncline', deleteMode: 'hard', versionGate: true, conflicts: tracking() });
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
    await client.query('DROP TABLE IF EXISTS acc; CREATE TABLE acc (id text PRIMARY KEY, v text, n bigint); TRUNCATE syncline.conflicts, syncline.tombstones, syncline.source_tombstones');
    const sink = new PostgresSink({ url, stateSchema: 'syncline', deleteMode: 'hard', versionGate: true, conflicts: tracking() });
    await sink.prepare();
    try {
      await truncationScenario(sink, async () => (await rows()).map((r) => String(r.id)));
    } finally {
      await sink.close();
    }
  });

  it('a keyless table takes each source’s changes against that source’s versions; a row both sides deleted is no drift', async () => {
    await client.query('DROP TABLE IF EXISTS bag; CREATE TABLE bag (v text, n int); TRUNCATE syncline.conflicts');
    const sink = new PostgresSink({ url, stateSchema: 'syncline', deleteMode: 'hard', versionGate: true, conflicts: tracking() });
    await sink.prepare();
    try {
      await keylessScenario(
        sink,
        async () => (await client.query<{ r: string }>(`SELECT v || ':' || n AS r FROM bag ORDER BY 1`)).rows.map((r) => r.r),
        async () => void (await client.query(`UPDATE syncline.source_multiset_versions SET reset = true WHERE table_name = 'public.bag'`)),
      );
    } finally {
      await sink.close();
    }
  });
});
