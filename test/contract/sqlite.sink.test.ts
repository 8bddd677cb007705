import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import Database from 'better-sqlite3';
import { describe, expect, it } from 'vitest';
import { SqliteSink, quoteSqliteIdent, sqlitePathOf } from '../../src/sink/sqlite/sqlite-sink.js';
import { REJECT_VALUE, describeKeylessSinkContract, describeSinkContract, describeSoftDeleteContract, type KeylessRow, type SoftDeleteHarness } from './sink-contract.js';

describeSinkContract('sqlite', async () => {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'syncline-sinkc-sqlite-'));
  const file = path.join(dir, 'nested', 'target.db');
  const sink = new SqliteSink({ url: `sqlite://${file}`, stateSchema: 'syncline', versionGate: true });
  // The sink creates the file on prepare(); the harness opens its own connection lazily.
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

/** An SQLite sink with `delete_mode: soft` in a fresh file; readRow sees live rows only. */
async function softHarness(): Promise<SoftDeleteHarness> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'syncline-sinkc-sqlite-soft-'));
  const file = path.join(dir, 'target.db');
  const sink = new SqliteSink({ url: file, stateSchema: 'syncline', versionGate: true, deleteMode: 'soft' });
  let db: Database.Database | undefined;
  const conn = (): Database.Database => (db ??= new Database(file));
  type Stored = { id: string; v: string | null; n: string | null; deletedAt: string | null };
  const readStored = (table: string, key: Record<string, string>): Stored | undefined => {
    // `_deleted_at` exists once the sink touched the table.
    const soft = conn().prepare('SELECT 1 FROM pragma_table_info(?) WHERE name = ?').get(table, '_deleted_at') !== undefined;
    return conn().prepare(`SELECT id, v, n, ${soft ? '_deleted_at' : 'NULL'} AS deletedAt FROM ${quoteSqliteIdent(table)} WHERE id = ?`).get(key.id) as Stored | undefined;
  };
  return {
    sink,
    storesPositions: true,
    missingTableIsPrerequisite: true,
    async createTable(table) {
      conn().exec(`CREATE TABLE ${quoteSqliteIdent(table)} (id TEXT PRIMARY KEY, v TEXT CHECK (v IS NULL OR v <> '${REJECT_VALUE}'), n TEXT)`);
    },
    async readRow(table, key) {
      const r = readStored(table, key);
      return r === undefined || r.deletedAt !== null ? undefined : { id: r.id, v: r.v, n: r.n };
    },
    async readStored(table, key) {
      return readStored(table, key);
    },
    async close() {
      await sink.close();
      db?.close();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

describeSinkContract('sqlite, delete_mode: soft', softHarness);
describeSoftDeleteContract('sqlite', softHarness);

// Keyless tables; `id` is declared COLLATE NOCASE: a row is still removed only by its exact values.
describeKeylessSinkContract('sqlite', async () => {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'syncline-sinkc-sqlite-keyless-'));
  const file = path.join(dir, 'target.db');
  const sink = new SqliteSink({ url: file, stateSchema: 'syncline', versionGate: true });
  let db: Database.Database | undefined;
  const conn = (): Database.Database => (db ??= new Database(file));
  const check = `CHECK (v IS NULL OR v <> '${REJECT_VALUE}')`;
  return {
    sink,
    storesPositions: true,
    missingTableIsPrerequisite: true,
    async createTable(table) {
      conn().exec(`CREATE TABLE ${quoteSqliteIdent(table)} (id TEXT PRIMARY KEY, v TEXT ${check}, n TEXT)`);
    },
    async createKeylessTable(table) {
      conn().exec(`CREATE TABLE ${quoteSqliteIdent(table)} (id TEXT COLLATE NOCASE, v TEXT ${check}, n TEXT)`);
    },
    async readRow(table, key) {
      return conn().prepare(`SELECT id, v, n FROM ${quoteSqliteIdent(table)} WHERE id = ?`).get(key.id) as Record<string, string | null> | undefined;
    },
    async readRows(table) {
      return conn().prepare(`SELECT id, v, n FROM ${quoteSqliteIdent(table)}`).all() as KeylessRow[];
    },
    async close() {
      await sink.close();
      db?.close();
      await rm(dir, { recursive: true, force: true });
    },
  };
});

describe('sqlite sink: URLs and journal mode', () => {
  it('accepts a path, sqlite:///abs and sqlite:relative', () => {
    expect(sqlitePathOf('/tmp/a.db')).toBe('/tmp/a.db');
    expect(sqlitePathOf('sqlite:///tmp/a%20b.db')).toBe('/tmp/a b.db');
    expect(sqlitePathOf('sqlite:data/a.db', '/srv')).toBe('/srv/data/a.db');
    expect(sqlitePathOf('data/a.db', '/srv')).toBe('/srv/data/a.db');
    expect(() => sqlitePathOf('sqlite://relative.db')).toThrow(/absolute/);
  });

  it('runs the database in WAL mode', async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'syncline-sqlite-wal-'));
    const sink = new SqliteSink({ url: path.join(dir, 't.db'), stateSchema: 'syncline', versionGate: true });
    try {
      await sink.prepare();
      const db = new Database(path.join(dir, 't.db'), { readonly: true });
      expect(db.pragma('journal_mode', { simple: true })).toBe('wal');
      db.close();
    } finally {
      await sink.close();
      await rm(dir, { recursive: true, force: true });
    }
  });
});
