/**
 * A keyless table whose target has a primary key: its INSERTs are adopted as keyed,
 * version-gated upserts (src/sink/adopt-target-key.ts), so an INSERT reordered behind a later
 * keyed UPDATE of its row is stale instead of failing on the key. But the source may hold two
 * rows of an id the target's key (given by hand) cannot: the second INSERT overwrote the
 * first, silently (25348c6..24c2c7b; red17c: target [1 b, 2 z], no dead letter). An adopted
 * INSERT may skip only a stored row of its key at or past its own version (the reordered
 * update, or its own replay); an older stored row, or another adopted INSERT of the key in
 * the batch, fails on the key as before the adoption, for apply's per-row failure handling
 * to dead-letter. Each dialect the adoption applies to: postgres, sqlite, mysql (MariaDB).
 */
import Database from 'better-sqlite3';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { describe, expect, it } from 'vitest';
import type { ChangeEvent } from '../../src/core/change.js';
import { PostgresSink } from '../../src/sink/postgres/postgres-sink.js';
import { MysqlSink } from '../../src/sink/mysql/mysql-sink.js';
import { SqliteSink } from '../../src/sink/sqlite/sqlite-sink.js';
import type { Sink } from '../../src/sink/sink.js';
import { ChangeFactory, KeylessChangeFactory } from '../contract/sink-contract.js';
import { freshMysqlDatabase, mysqlRows } from '../helpers/mysql.js';
import { freshDatabase, machinePg15, uniqueName } from '../helpers/postgres.js';

type Rows = () => Promise<unknown[]>;
/** A sink on a fresh target with `t (id PRIMARY KEY, v, n)`, its live rows (id, v by id), and how to drop it. */
type Target = { sink: Sink; rows: Rows; close(): Promise<void> };

const apply = (sink: Sink, changes: ChangeEvent[]) => sink.apply(changes, new Map(), 'g');
/** The target's rows not (soft-)deleted. */
const live = (deleteMode: 'hard' | 'soft'): string => `SELECT id, v FROM t${deleteMode === 'soft' ? ' WHERE _deleted_at IS NULL' : ''} ORDER BY id`;

/** The cases every dialect must pass, each on a fresh target. */
function cases(name: string, open: (deleteMode: 'hard' | 'soft') => Promise<Target>): void {
  const run = async (fn: (t: Target) => Promise<void>, deleteMode: 'hard' | 'soft' = 'hard'): Promise<void> => {
    const t = await open(deleteMode);
    try {
      await fn(t);
    } finally {
      await t.close();
    }
  };
  const f = new KeylessChangeFactory();

  it(`${name}: a second source row of an id, in a later batch, fails on the key and leaves the first`, () =>
    run(async ({ sink, rows }) => {
      await apply(sink, [f.insert('t', 10, { id: '1', v: 'a', n: null })]);
      await expect(apply(sink, [f.insert('t', 20, { id: '1', v: 'b', n: null })])).rejects.toThrow(/duplicate|unique/i);
      expect(await rows()).toEqual([{ id: '1', v: 'a' }]);
    }));

  it(`${name}: two source rows of an id in one batch fail on the key (neither is written over the other)`, () =>
    run(async ({ sink, rows }) => {
      const batch = [f.insert('t', 10, { id: '1', v: 'a', n: null }), f.insert('t', 20, { id: '1', v: 'b', n: null }), f.insert('t', 30, { id: '2', v: 'z', n: null })];
      await expect(apply(sink, batch)).rejects.toThrow(/duplicate|unique/i);
      expect(await rows()).toEqual([]);
    }));

  it(`${name}: an INSERT reordered behind a later keyed UPDATE of its row is stale (kept: 25348c6)`, () =>
    run(async ({ sink, rows }) => {
      await apply(sink, [new ChangeFactory().update('t', '1', 30, 'u')]);
      const out = await apply(sink, [f.insert('t', 10, { id: '1', v: 'a', n: null })]);
      expect(out.stale).toBe(1);
      expect(await rows()).toEqual([{ id: '1', v: 'u' }]);
    }));

  it(`${name}: the replay of an adopted INSERT is stale, not a duplicate`, () =>
    run(async ({ sink, rows }) => {
      const insert = f.insert('t', 10, { id: '1', v: 'a', n: null });
      await apply(sink, [insert]);
      const out = await apply(sink, [structuredClone(insert)]);
      expect(out.stale).toBe(1);
      expect(await rows()).toEqual([{ id: '1', v: 'a' }]);
    }));

  it(`${name}: soft deletes: a row deleted (soft) before the INSERT is not a second row: the INSERT revives it`, () =>
    run(async ({ sink, rows }) => {
      const keyed = new ChangeFactory();
      await apply(sink, [keyed.insert('t', '1', 10, 'a')]);
      await apply(sink, [keyed.delete('t', '1', 20)]);
      const out = await apply(sink, [f.insert('t', 30, { id: '1', v: 'b', n: null })]);
      expect(out.applied).toBe(1);
      expect(await rows()).toEqual([{ id: '1', v: 'b' }]);
    }, 'soft'));
}

describe('keyless INSERTs adopted by the target key: two source rows of an id', () => {
  cases('postgres', async (deleteMode) => {
    const url = await freshDatabase(await machinePg15(), 'red17c_adopt_dup_sink');
    const client = new pg.Client({ connectionString: url });
    await client.connect();
    const sink = new PostgresSink({ url, stateSchema: 'syncline', deleteMode, versionGate: true });
    await sink.prepare();
    await client.query('CREATE TABLE t (id text PRIMARY KEY, v text, n text)');
    return {
      sink,
      rows: async () => (await client.query(live(deleteMode))).rows,
      close: async () => {
        await sink.close();
        await client.end();
      },
    };
  });

  cases('sqlite', async (deleteMode) => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'red17c-adopt-dup-'));
    const file = path.join(dir, 'target.db');
    const db = new Database(file);
    db.exec('CREATE TABLE t (id TEXT PRIMARY KEY, v TEXT, n TEXT)');
    const sink = new SqliteSink({ url: file, stateSchema: 'syncline', deleteMode, versionGate: true });
    await sink.prepare();
    return {
      sink,
      rows: async () => db.prepare(live(deleteMode)).all(),
      close: async () => {
        await sink.close();
        db.close();
        await rm(dir, { recursive: true, force: true });
      },
    };
  });

  cases('mysql (MariaDB)', async (deleteMode) => {
    const db = await freshMysqlDatabase(uniqueName('red17c_adopt_dup'));
    await db.admin.query('CREATE TABLE t (id VARCHAR(20) PRIMARY KEY, v TEXT, n TEXT)');
    const sink = new MysqlSink({ url: db.url, stateSchema: 'syncline', deleteMode, versionGate: true });
    await sink.prepare();
    return {
      sink,
      rows: async () => mysqlRows(db.admin, live(deleteMode)),
      close: async () => {
        await sink.close();
        await db.drop();
      },
    };
  });
});
