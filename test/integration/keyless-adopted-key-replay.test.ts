/**
 * A keyless table whose target has a primary key: its INSERTs are adopted as keyed,
 * version-gated upserts (src/sink/adopt-target-key.ts), its DELETEs stay in the multiset
 * (removeOne: the row goes, no tombstone; the table's high water moves). A replay of the
 * INSERT (capture re-sends what the slot was not confirmed past after a crash, at new stream
 * offsets; multiset.ts: "one high-water version per table makes replays ... no-ops") then
 * finds no row of its key and no tombstone: the keyed gate lets it in, and the row the
 * source deleted is back at the target, while the DELETE's own replay is stale behind the
 * high water. Before 25348c6 the INSERT stayed in the multiset, gated by the high water.
 * Failed on main at eaeef6e (postgres and sqlite: [a 1] at the target after the replay);
 * fixed: an INSERT the high water covers is not adopted (stale in the multiset).
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
import { KeylessChangeFactory } from '../contract/sink-contract.js';
import { freshMysqlDatabase, mysqlRows } from '../helpers/mysql.js';
import { freshDatabase, machinePg15, uniqueName } from '../helpers/postgres.js';

async function replayAfterDelete(sink: Sink, rows: () => Promise<unknown[]>): Promise<void> {
  const f = new KeylessChangeFactory();
  const row = { id: 'a', v: '1', n: null };
  const insert = f.insert('t', 10, row);
  const del = f.delete('t', 20, row);
  await sink.apply([insert], new Map(), 'g');
  await sink.apply([del], new Map(), 'g');
  expect(await rows()).toEqual([]);
  // The replay, split over two batches as the stream's batches may fall.
  await sink.apply([structuredClone(insert) as ChangeEvent], new Map(), 'g');
  await sink.apply([structuredClone(del) as ChangeEvent], new Map(), 'g');
  expect(await rows()).toEqual([]);
}

describe('a replayed INSERT of a keyless table whose target has a key, after its row was deleted', () => {
  it('postgres: the row stays deleted', async () => {
    const url = await freshDatabase(await machinePg15(), 'red17c_adopt_replay');
    const client = new pg.Client({ connectionString: url });
    await client.connect();
    const sink = new PostgresSink({ url, stateSchema: 'syncline', deleteMode: 'hard', versionGate: true });
    try {
      await sink.prepare();
      await client.query('CREATE TABLE t (id text PRIMARY KEY, v text, n text)');
      await replayAfterDelete(sink, async () => (await client.query('SELECT id, v FROM t')).rows);
    } finally {
      await sink.close();
      await client.end();
    }
  });

  it('sqlite: the row stays deleted', async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'red17c-adopt-replay-'));
    const file = path.join(dir, 'target.db');
    const db = new Database(file);
    db.exec('CREATE TABLE t (id TEXT PRIMARY KEY, v TEXT, n TEXT)');
    const sink = new SqliteSink({ url: file, stateSchema: 'syncline', versionGate: true });
    try {
      await sink.prepare();
      await replayAfterDelete(sink, async () => db.prepare('SELECT id, v FROM t').all());
    } finally {
      await sink.close();
      db.close();
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('mysql (MariaDB): the row stays deleted', async () => {
    const db = await freshMysqlDatabase(uniqueName('red17c_adopt_replay'));
    await db.admin.query('CREATE TABLE t (id VARCHAR(20) PRIMARY KEY, v TEXT, n TEXT)');
    const sink = new MysqlSink({ url: db.url, stateSchema: 'syncline', versionGate: true });
    try {
      await sink.prepare();
      await replayAfterDelete(sink, async () => mysqlRows(db.admin, 'SELECT id, v FROM t'));
    } finally {
      await sink.close();
      await db.drop();
    }
  });
});
