import pg from 'pg';
import { afterAll, describe, expect, it } from 'vitest';
import type { ChangeEvent, Row } from '../../src/core/change.js';
import { PostgresSink } from '../../src/sink/postgres/postgres-sink.js';
import { changeAt, tracking } from '../helpers/conflict-fixtures.js';
import { dropDatabases } from '../helpers/many-writers.js';
import { freshDatabase, machinePg15, PG15_URL } from '../helpers/postgres.js';

/**
 * Red-team cases (second round) of conflict tracking's record of the target application's own
 * deletes (src/sink/postgres/local-writes.ts), on PostgreSQL 15 without track_commit_timestamp
 * (a delete made at the target has the time of the delete as its clock). Each case: a fresh
 * target database whose tables the sink tracks under last_write_wins (commit time).
 */
const databases: string[] = [];
let serial = 0;

afterAll(async () => {
  if (databases.length > 0) await dropDatabases(PG15_URL, databases);
});

interface Target {
  sink: PostgresSink;
  client: pg.Client;
  url: string;
  warnings: string[];
}

async function target(ddl: string, tables: string[]): Promise<Target> {
  const url = await freshDatabase(await machinePg15(), `red_cf2_${serial++}`);
  databases.push(new URL(url).pathname.slice(1));
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  await client.query(ddl);
  const warnings: string[] = [];
  const sink = new PostgresSink({
    url,
    stateSchema: 'syncline',
    deleteMode: 'hard',
    versionGate: true,
    conflicts: tracking(),
    trackedTables: tables.map((table) => ({ schema: 'public', table })),
    warn: (m) => warnings.push(m),
  });
  await sink.prepare();
  return { sink, client, url, warnings };
}

async function within(ddl: string, tables: string[], fn: (t: Target) => Promise<void>): Promise<void> {
  const t = await target(ddl, tables);
  try {
    await fn(t);
  } finally {
    await t.sink.close();
    await t.client.end();
  }
}

/** Long before any delete the test's application makes (those have the time of the delete as clock). */
const EARLY = (s: number): string => `2026-01-01T00:00:${String(s).padStart(2, '0')}Z`;

const pacc = (lsn: number, s: number, op: ChangeEvent['op'], id: number, v: string, before?: Row): ChangeEvent =>
  changeAt('a', lsn, EARLY(s), op, 'pacc', { id: String(id) }, { id: String(id), v }, before);

const ids = async (t: Target, table: string): Promise<number[]> =>
  (await t.client.query<{ id: number }>(`SELECT id FROM ${pg.escapeIdentifier(table)} ORDER BY id`)).rows.map((r) => r.id);

/** A partitioned target: ids 0..99 in pacc_1, 100..199 in pacc_2. */
const PARTITIONED = `CREATE TABLE pacc (id int PRIMARY KEY, v text) PARTITION BY RANGE (id);
  CREATE TABLE pacc_1 PARTITION OF pacc FOR VALUES FROM (0) TO (100);
  CREATE TABLE pacc_2 PARTITION OF pacc FOR VALUES FROM (100) TO (200)`;

describe('red team 2: deletes made by the application of a partitioned target (PostgreSQL 15)', () => {
  it('a row the application deleted from a partition directly stays deleted when an older write of another side arrives', async () => {
    await within(PARTITIONED, ['pacc'], async (t) => {
      await t.sink.apply([pacc(0x100, 1, 'INSERT', 5, 'a'), pacc(0x110, 1, 'INSERT', 6, 'a')], new Map(), 'ga');
      // The application deletes through the partition, not the partitioned table.
      await t.client.query('DELETE FROM pacc_1 WHERE id = 5');
      // a's update, made (02) before the delete (now) by a writer that had not seen it.
      const late = await t.sink.apply([pacc(0x200, 2, 'UPDATE', 5, 'a2', { id: '5', v: 'a' })], new Map(), 'ga');
      expect(await ids(t, 'pacc')).toEqual([6]);
      expect(late.applied).toBe(0);
    });
  });

  it('a key the application moved to another partition (UPDATE of the partitioned table) is gone for an older write of another side', async () => {
    await within(PARTITIONED, ['pacc'], async (t) => {
      await t.sink.apply([pacc(0x100, 1, 'INSERT', 7, 'a')], new Map(), 'ga');
      // Key 7 becomes 150: the row moves from pacc_1 to pacc_2 (a DELETE and an INSERT inside PostgreSQL).
      await t.client.query('UPDATE pacc SET id = 150 WHERE id = 7');
      await t.sink.apply([pacc(0x200, 2, 'UPDATE', 7, 'a2', { id: '7', v: 'a' })], new Map(), 'ga');
      expect(await ids(t, 'pacc')).toEqual([150]);
    });
  });

  it('deletes through the partitioned table and key changes within a partition are recorded once, and the sink’s own deletes not at all', async () => {
    await within(PARTITIONED, ['pacc'], async (t) => {
      await t.sink.apply([1, 2, 3, 120].map((id, i) => pacc(0x100 + i * 0x10, 1, 'INSERT', id, 'a')), new Map(), 'ga');
      await t.client.query('DELETE FROM pacc WHERE id IN (1, 120)');
      await t.client.query('UPDATE pacc_1 SET id = 4 WHERE id = 2');
      // The sink deletes 3 (a's delete): no tombstone of the local writer.
      await t.sink.apply([pacc(0x300, 3, 'DELETE', 3, 'a')].map((c) => ({ ...c, payload: null })), new Map(), 'ga');
      const { rows } = await t.client.query<{ k: string; source: string }>(`SELECT row_key AS k, source FROM syncline.source_tombstones ORDER BY 1, 2`);
      expect(rows).toEqual([
        { k: '["1"]', source: 'local' },
        { k: '["120"]', source: 'local' },
        { k: '["2"]', source: 'local' },
        { k: '["3"]', source: 'a' },
      ]);
      // A partition attached later is covered too.
      await t.client.query('CREATE TABLE pacc_3 PARTITION OF pacc FOR VALUES FROM (200) TO (300); INSERT INTO pacc VALUES (250, $$x$$); DELETE FROM pacc_3');
      expect((await t.client.query(`SELECT count(*)::int AS n FROM syncline.source_tombstones WHERE row_key = '["250"]'`)).rows[0]?.n).toBe(1);
      expect(t.warnings).toEqual([]);
    });
  });
});

describe('red team 2: a composite key whose column order at the target differs from the source’s', () => {
  // The target's columns are (b, a), the source's key (a, b): the changes' row keys are
  // ["<a>","<b>"], and a tombstone of the application's must be too, also after a restart.
  const DDL = `CREATE TABLE ck (b text, a text, v text, PRIMARY KEY (a, b))`;
  const ck = (lsn: number, s: number, op: ChangeEvent['op'], a: string, b: string, v: string | null, before?: Row): ChangeEvent =>
    changeAt('a', lsn, EARLY(s), op, 'ck', { a, b }, v === null ? null : { a, b, v }, before);

  it('a row the application deleted after the sink restarted stays deleted when an older write of another side arrives', async () => {
    await within(DDL, ['ck'], async (t) => {
      await t.sink.apply([ck(0x100, 1, 'INSERT', 'x', 'y', 'a'), ck(0x110, 1, 'INSERT', 'p', 'q', 'a')], new Map(), 'ga');
      // The sink restarts (its process does): prepare() looks at the tracked table again.
      await t.sink.close();
      t.sink = new PostgresSink({ url: t.url, stateSchema: 'syncline', deleteMode: 'hard', versionGate: true, conflicts: tracking(), trackedTables: [{ schema: 'public', table: 'ck' }] });
      await t.sink.prepare();
      await t.client.query(`DELETE FROM ck WHERE a = 'x'`);
      await t.sink.apply([ck(0x200, 2, 'UPDATE', 'x', 'y', 'a2', { a: 'x', b: 'y', v: 'a' })], new Map(), 'ga');
      expect((await t.client.query<{ a: string }>('SELECT a FROM ck ORDER BY a')).rows).toEqual([{ a: 'p' }]);
    });
  });
});
