import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import Database from 'better-sqlite3';
import mysql from 'mysql2/promise';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Sink } from '../../src/sink/sink.js';
import { MysqlSink } from '../../src/sink/mysql/mysql-sink.js';
import { quoteMysqlIdent } from '../../src/sink/mysql/mysql-table.js';
import { PostgresSink } from '../../src/sink/postgres/postgres-sink.js';
import { SqliteSink, quoteSqliteIdent } from '../../src/sink/sqlite/sqlite-sink.js';
import type { ConflictOptions } from '../../src/sink/sql/sql-sink.js';
import { tracking } from '../helpers/conflict-fixtures.js';
import { freshMysqlDatabase } from '../helpers/mysql.js';
import { freshDatabase, machinePg15, uniqueName } from '../helpers/postgres.js';
import { ChangeFactory } from './sink-contract.js';

// How the SQL sinks count a DELETE: applied when the version gate accepted it (it removed or
// soft-deleted a row, or advanced the key's tombstone while the target held no row of the key
// and it is newer than the table's truncation), stale only when the gate refused it (an equal
// or newer tombstone: a replay; a newer stored row; a truncation at or past it). A delete whose
// insert the batch folded away is not a duplicate: a clean queue-like run reads 0 stale.

interface Harness {
  sink: Sink;
  createTable(table: string): Promise<void>;
  has(table: string, id: string): Promise<boolean>;
  close(): Promise<void>;
}

type Mode = 'hard' | 'soft' | 'tracked';
const MODES: Mode[] = ['hard', 'soft', 'tracked'];
const options = (mode: Mode): { deleteMode: 'hard' | 'soft'; conflicts?: ConflictOptions } => (mode === 'tracked' ? { deleteMode: 'hard', conflicts: tracking() } : { deleteMode: mode });

async function postgresHarness(mode: Mode): Promise<Harness> {
  const url = await freshDatabase(await machinePg15(), `duprate_delc_pg_${mode}`);
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  const sink = new PostgresSink({ url, stateSchema: 'syncline', versionGate: true, ...options(mode) });
  return {
    sink,
    createTable: async (t) => void (await client.query(`CREATE TABLE ${pg.escapeIdentifier(t)} (id text PRIMARY KEY, v text, n text)`)),
    has: async (t, id) => {
      const soft = mode === 'soft' ? ' AND _deleted_at IS NULL' : '';
      return ((await client.query(`SELECT 1 FROM ${pg.escapeIdentifier(t)} WHERE id = $1${soft}`, [id])).rowCount ?? 0) > 0;
    },
    close: async () => {
      await sink.close();
      await client.end();
    },
  };
}

async function mysqlHarness(mode: Mode): Promise<Harness> {
  const db = await freshMysqlDatabase(uniqueName(`duprate_delc_my_${mode}`));
  const sink = new MysqlSink({ url: db.url, stateSchema: 'syncline', versionGate: true, ...options(mode) });
  return {
    sink,
    createTable: async (t) => void (await db.admin.query(`CREATE TABLE ${quoteMysqlIdent(t)} (id VARCHAR(255) PRIMARY KEY, v TEXT, n TEXT)`)),
    has: async (t, id) => {
      const soft = mode === 'soft' ? ' AND _deleted_at IS NULL' : '';
      const [rows] = await db.admin.query<mysql.RowDataPacket[]>(`SELECT 1 FROM ${quoteMysqlIdent(t)} WHERE id = ?${soft}`, [id]);
      return rows.length > 0;
    },
    close: async () => {
      await sink.close();
      await db.drop();
    },
  };
}

async function sqliteHarness(mode: Mode): Promise<Harness> {
  const dir = await mkdtemp(path.join(os.tmpdir(), `duprate-delc-sqlite-${mode}-`));
  const file = path.join(dir, 'target.db');
  const sink = new SqliteSink({ url: file, stateSchema: 'syncline', versionGate: true, ...options(mode) });
  let db: Database.Database | undefined;
  const conn = (): Database.Database => (db ??= new Database(file));
  return {
    sink,
    createTable: async (t) => void conn().exec(`CREATE TABLE ${quoteSqliteIdent(t)} (id TEXT PRIMARY KEY, v TEXT, n TEXT)`),
    has: async (t, id) => {
      const soft = mode === 'soft' ? ' AND _deleted_at IS NULL' : '';
      return conn().prepare(`SELECT 1 FROM ${quoteSqliteIdent(t)} WHERE id = ?${soft}`).get(id) !== undefined;
    },
    close: async () => {
      await sink.close();
      db?.close();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

const DIALECTS: [string, (mode: Mode) => Promise<Harness>][] = [
  ['postgres', postgresHarness],
  ['mysql (MariaDB)', mysqlHarness],
  ['sqlite', sqliteHarness],
];

for (const [dialect, open] of DIALECTS) {
  for (const mode of MODES) {
    describe(`${dialect} sink, ${mode}: a delete is stale only when the version gate refused it`, () => {
      let h: Harness;
      const f = new ChangeFactory('public');
      let n = 0;
      const table = async (): Promise<string> => {
        const t = `delc_${++n}`;
        await h.createTable(t);
        return t;
      };
      const apply = (changes: Parameters<Sink['apply']>[0]) => h.sink.apply(changes, new Map(), 'delc');

      beforeAll(async () => {
        h = await open(mode);
        await h.sink.prepare();
      }, 60_000);

      afterAll(async () => {
        await h?.close();
      });

      it('an insert and its delete folded in one batch: the delete applied, nothing stale; replayed: stale', async () => {
        const t = await table();
        const batch = [f.insert(t, 'a', 10, 'a'), f.delete(t, 'a', 11), f.insert(t, 'b', 12, 'b'), f.delete(t, 'b', 13)];
        expect(await apply(batch)).toMatchObject({ applied: 2, stale: 0, superseded: 2 });
        expect(await h.has(t, 'a')).toBe(false);
        // The same batch again (a stream replay): every change a duplicate.
        expect(await apply(batch)).toMatchObject({ applied: 0, stale: 2, superseded: 2 });
        // The insert alone, replayed: the tombstone keeps it out.
        expect(await apply([f.insert(t, 'a', 10, 'a')])).toMatchObject({ applied: 0, stale: 1 });
        expect(await h.has(t, 'a')).toBe(false);
      });

      it('a delete of a key the target lacks advances its tombstone: applied; the same delete again: stale', async () => {
        const t = await table();
        expect(await apply([f.delete(t, 'ghost', 20)])).toMatchObject({ applied: 1, stale: 0 });
        expect(await apply([f.delete(t, 'ghost', 20)])).toMatchObject({ applied: 0, stale: 1 });
        expect(await apply([f.delete(t, 'ghost', 19)])).toMatchObject({ applied: 0, stale: 1 });
        // A newer delete of the still absent key advances the tombstone again.
        expect(await apply([f.delete(t, 'ghost', 21)])).toMatchObject({ applied: 1, stale: 0 });
      });

      it('a delete that removes a row: applied; older than the stored row: stale, the row stays', async () => {
        const t = await table();
        await apply([f.insert(t, 'a', 30, 'a'), f.insert(t, 'b', 40, 'b')]);
        expect(await apply([f.delete(t, 'a', 31)])).toMatchObject({ applied: 1, stale: 0 });
        expect(await h.has(t, 'a')).toBe(false);
        expect(await apply([f.delete(t, 'b', 35)])).toMatchObject({ applied: 0, stale: 1 });
        expect(await h.has(t, 'b')).toBe(true);
      });

      it('a delete of an absent key older than the table truncation: stale; newer: applied', async () => {
        const t = await table();
        await apply([f.insert(t, 'a', 50, 'a')]);
        expect(await apply([f.truncate(t, 60)])).toMatchObject({ applied: 1, stale: 0 });
        expect(await apply([f.delete(t, 'a', 55)])).toMatchObject({ applied: 0, stale: 1 });
        expect(await apply([f.delete(t, 'z', 58)])).toMatchObject({ applied: 0, stale: 1 });
        expect(await apply([f.delete(t, 'z', 61)])).toMatchObject({ applied: 1, stale: 0 });
      });
    });
  }
}
