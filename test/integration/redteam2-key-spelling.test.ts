import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ChangeEvent } from '../../src/core/change.js';
import Database from 'better-sqlite3';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { MysqlSink } from '../../src/sink/mysql/mysql-sink.js';
import { SqliteSink } from '../../src/sink/sqlite/sqlite-sink.js';
import { PostgresSink } from '../../src/sink/postgres/postgres-sink.js';
import { ChangeFactory } from '../../src/testing/sink-contract.js';
import { freshMysqlDatabase, type MysqlTestDatabase } from '../helpers/mysql.js';
import { freshDatabase, machinePg15 } from '../helpers/postgres.js';
import { uniqueName } from '../helpers/unique.js';

/**
 * Red team 2: keys that are equal at the target but spelled differently in the source's text
 * (citext 'KEY1' / 'key1', numeric 1.00 / 1.0000, a case-insensitive MySQL collation). An
 * UPDATE that respells the key (UPDATE ci SET id = lower(id)) is a DELETE of the old spelling
 * and an INSERT of the new one; the two keys hash to different stream partitions, so apply
 * may write the INSERT first. Found with `syncline run` on PostgreSQL 17: after
 * `UPDATE nm SET id = id::numeric(10,4)` 74 of 200 target rows kept the old spelling
 * (verify: missing 1.0000, extra 1.00), and 1 of 200 citext rows kept 'KEY23' for 'key23'.
 */
const f = new ChangeFactory();
const NONE = new Map<number, bigint>();
const ev = (e: ChangeEvent, key: Record<string, string>): ChangeEvent => ({ ...e, key, payload: e.payload === null ? null : { ...e.payload, ...key } });

/** The stream order apply may meet: the INSERT of the new spelling (seq 2) before the DELETE of the old (seq 1). */
function respelled(table: string, oldId: string, newId: string): ChangeEvent[][] {
  return [
    [ev(f.insert(table, oldId, { lsn: 100 }, 'first'), { id: oldId })],
    [ev(f.insert(table, newId, { lsn: 200, seq: 2 }, 'respelled'), { id: newId })],
    [ev(f.delete(table, oldId, { lsn: 200, seq: 1 }), { id: oldId })],
  ];
}

describe('red team 2: a key respelled at the source (equal at the target) takes the new spelling', () => {
  let url: string;
  let client: pg.Client;
  let my: MysqlTestDatabase;

  beforeAll(async () => {
    url = await freshDatabase(await machinePg15(), 'rt2_keys');
    client = new pg.Client({ connectionString: url });
    await client.connect();
    await client.query('CREATE EXTENSION IF NOT EXISTS citext');
    my = await freshMysqlDatabase(uniqueName('rt2_keys'));
  });
  afterAll(async () => {
    await client?.end();
    await my?.drop();
  });

  for (const copyThreshold of [0, 1]) {
    it(`postgres sink (copy_threshold ${copyThreshold}): citext and numeric keys end with the source's spelling`, async () => {
      const ci = `ci_${copyThreshold}`;
      const nm = `nm_${copyThreshold}`;
      await client.query(`CREATE TABLE ${ci} (id citext PRIMARY KEY, v text, n text)`);
      await client.query(`CREATE TABLE ${nm} (id numeric PRIMARY KEY, v text, n text)`);
      const sink = new PostgresSink({ url, stateSchema: 'syncline', deleteMode: 'hard', versionGate: true, copyThreshold });
      try {
        await sink.prepare();
        for (const batch of respelled(ci, 'KEY23', 'key23')) await sink.apply(batch, NONE, 'g');
        for (const batch of respelled(nm, '1.00', '1.0000')) await sink.apply(batch, NONE, 'g');
      } finally {
        await sink.close();
      }
      expect((await client.query(`SELECT id::text, v FROM ${ci}`)).rows).toEqual([{ id: 'key23', v: 'respelled' }]);
      expect((await client.query(`SELECT id::text, v FROM ${nm}`)).rows).toEqual([{ id: '1.0000', v: 'respelled' }]);
    });
  }

  it('postgres sink: a GENERATED ALWAYS identity key (not respellable) still takes updates', async () => {
    await client.query('CREATE TABLE ident (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, v text, n text)');
    const sink = new PostgresSink({ url, stateSchema: 'syncline', deleteMode: 'hard', versionGate: true });
    try {
      await sink.prepare();
      await sink.apply([f.insert('ident', '7', 100, 'a')], NONE, 'g');
      const out = await sink.apply([f.update('ident', '7', 200, 'b')], NONE, 'g');
      expect(out.applied).toBe(1);
    } finally {
      await sink.close();
    }
    expect((await client.query('SELECT id::text, v FROM ident')).rows).toEqual([{ id: '7', v: 'b' }]);
  });

  it('mysql sink: a case-insensitive key column ends with the source\'s spelling', async () => {
    await my.admin.query('CREATE TABLE ci (id VARCHAR(40) COLLATE utf8mb4_general_ci PRIMARY KEY, v TEXT, n TEXT)');
    const sink = new MysqlSink({ url: my.url, stateSchema: 'syncline', versionGate: true });
    try {
      await sink.prepare();
      for (const batch of respelled('ci', 'KEY23', 'key23')) await sink.apply(batch, NONE, 'g');
    } finally {
      await sink.close();
    }
    const [rows] = await my.admin.query('SELECT id, v FROM ci');
    expect(rows).toEqual([{ id: 'key23', v: 'respelled' }]);
  });

  it('sqlite sink: a NOCASE key column ends with the source\'s spelling', async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'rt2-keys-'));
    const file = path.join(dir, 't.db');
    const db = new Database(file);
    db.exec('CREATE TABLE ci (id TEXT COLLATE NOCASE PRIMARY KEY, v TEXT, n TEXT)');
    const sink = new SqliteSink({ url: file, stateSchema: 'syncline', versionGate: true });
    try {
      await sink.prepare();
      for (const batch of respelled('ci', 'KEY23', 'key23')) await sink.apply(batch, NONE, 'g');
      expect(db.prepare('SELECT id, v FROM ci').all()).toEqual([{ id: 'key23', v: 'respelled' }]);
    } finally {
      await sink.close();
      db.close();
      await rm(dir, { recursive: true, force: true });
    }
  });
});
