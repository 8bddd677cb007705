/**
 * Keyless tables at the mysql and sqlite sinks, by column type: a DELETE or UPDATE finds the
 * row an INSERT wrote from the same PostgreSQL text (floats in the column's precision,
 * CHAR(n) padding, bytes, JSON, timestamps converted to UTC, NULLs), and only that row.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import Database from 'better-sqlite3';
import mysql from 'mysql2/promise';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ChangeEvent, Row } from '../../src/core/change.js';
import { formatLsn, versionOf } from '../../src/core/lsn.js';
import { MysqlSink } from '../../src/sink/mysql/mysql-sink.js';
import { quoteMysqlIdent } from '../../src/sink/mysql/mysql-table.js';
import { SqliteSink } from '../../src/sink/sqlite/sqlite-sink.js';
import { MYSQL_ADMIN_URL, mysqlAdmin } from '../helpers/mysql.js';
import { uniqueName } from '../helpers/unique.js';

function change(op: 'INSERT' | 'UPDATE' | 'DELETE', table: string, lsn: number, payload: Row | null, before?: Row): ChangeEvent {
  const e: ChangeEvent = {
    source: 'types',
    schema: 'public',
    table,
    op,
    lsn: formatLsn(BigInt(lsn)),
    commit_lsn: formatLsn(BigInt(lsn)),
    xid: lsn,
    seq: 1,
    commit_ts: '2024-01-01T00:00:00.000000Z',
    key: {},
    payload,
    _version: versionOf(BigInt(lsn), 1).toString(),
    _schema_version: 1,
  };
  if (before) e.before = before;
  return e;
}

/** Two rows per case: the one to find, and a near miss that must stay. */
const ROWS: { row: Row; nearMiss: Row }[] = [
  { row: { i: '42', b: '9007199254740993', d: '12.50', f: '0.1', g: '0.30000000000000004', t: 't' }, nearMiss: { i: '42', b: '9007199254740992', d: '12.50', f: '0.1', g: '0.30000000000000004', t: 't' } },
  { row: { i: null, b: null, d: null, f: '-0', g: '5e-324', t: 'f' }, nearMiss: { i: null, b: null, d: null, f: '-0', g: '1e-323', t: 'f' } },
  { row: { c: 'ab   ', s: 'Straße', ts: '2024-02-29 18:14:59.999999+01', dt: '2024-01-02' }, nearMiss: { c: 'AB', s: 'STRASSE', ts: '2024-02-29 17:14:59.999999+00', dt: '2024-01-02' } },
  { row: { by: '\\x00ff', j: '{"a": [1, "x"]}', arr: '{1,2,NULL}' }, nearMiss: { by: '\\x00fe', j: '{"a": [1, "y"]}', arr: '{1,2}' } },
];
// The near miss of the timestamp row is the same instant: only the other columns differ.
const COLUMNS = ['i', 'b', 'd', 'f', 'g', 't', 'c', 's', 'ts', 'dt', 'by', 'j', 'arr'];
const full = (r: Row): Row => Object.fromEntries(COLUMNS.map((c) => [c, r[c] ?? null]));

interface TypeHarness {
  sink: MysqlSink | SqliteSink;
  create(t: string): Promise<void>;
  /** A table `(rid <auto-increment primary key>, s text)`: a surrogate key only the target writes. */
  createSurrogate(t: string): Promise<void>;
  count(t: string): Promise<number>;
  close(): Promise<void>;
}

function typeCases(name: string, setup: () => Promise<TypeHarness>): void {
  describe(`keyless rows by column type: ${name}`, () => {
    let h: Awaited<ReturnType<typeof setup>>;
    beforeAll(async () => {
      h = await setup();
      await h.sink.prepare();
    }, 60_000);
    afterAll(async () => {
      await h?.close();
    });

    it('a DELETE, and an UPDATE, find the row an INSERT wrote from the same text, and only that row', async () => {
      let lsn = 1;
      for (const [i, { row, nearMiss }] of ROWS.entries()) {
        const t = `kt_${i}`;
        await h.create(t);
        await h.sink.apply([change('INSERT', t, lsn++, full(row)), change('INSERT', t, lsn++, full(nearMiss))], new Map(), 'types');
        expect(await h.count(t)).toBe(2);
        await h.sink.apply([change('UPDATE', t, lsn++, full(nearMiss), full(row))], new Map(), 'types');
        expect(await h.count(t)).toBe(2);
        await h.sink.apply([change('DELETE', t, lsn++, null, full(nearMiss)), change('DELETE', t, lsn++, null, full(nearMiss))], new Map(), 'types');
        expect(await h.count(t)).toBe(0);
      }
    });

    it('a surrogate auto-increment key at the target is left to the target', async () => {
      const t = 'kt_surrogate';
      await h.createSurrogate(t);
      const one = { s: 'x' };
      await h.sink.apply([change('INSERT', t, 100, one), change('INSERT', t, 101, one), change('INSERT', t, 102, { s: 'y' })], new Map(), 'types');
      expect(await h.count(t)).toBe(3);
      await h.sink.apply([change('DELETE', t, 103, null, one), change('UPDATE', t, 104, { s: 'z' }, { s: 'y' })], new Map(), 'types');
      expect(await h.count(t)).toBe(2);
    });
  });
}

typeCases('mysql (MariaDB)', async () => {
  const database = uniqueName('syncline_ms_keyless_types');
  const admin = await mysqlAdmin();
  await admin.query(`DROP DATABASE IF EXISTS ${quoteMysqlIdent(database)}`);
  await admin.query(`CREATE DATABASE ${quoteMysqlIdent(database)} CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci`);
  await admin.query(`USE ${quoteMysqlIdent(database)}`);
  const url = new URL(MYSQL_ADMIN_URL);
  url.pathname = `/${database}`;
  const sink = new MysqlSink({ url: url.toString(), stateSchema: 'syncline', versionGate: true });
  return {
    sink,
    async create(t) {
      await admin.query(`CREATE TABLE ${quoteMysqlIdent(t)} (i INT, b BIGINT, d DECIMAL(10,2), f FLOAT, g DOUBLE, t BOOLEAN,
        c CHAR(5), s VARCHAR(20), ts DATETIME(6), dt DATE, \`by\` VARBINARY(10), j JSON, arr JSON)`);
    },
    async createSurrogate(t) {
      await admin.query(`CREATE TABLE ${quoteMysqlIdent(t)} (rid BIGINT AUTO_INCREMENT PRIMARY KEY, s TEXT)`);
    },
    async count(t) {
      const [rows] = await admin.query<(mysql.RowDataPacket & { n: number })[]>(`SELECT COUNT(*) AS n FROM ${quoteMysqlIdent(t)}`);
      return Number(rows[0]?.n);
    },
    async close() {
      await sink.close();
      await admin.query(`DROP DATABASE IF EXISTS ${quoteMysqlIdent(database)}`);
      await admin.end();
    },
  };
});

typeCases('sqlite', async () => {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'syncline-keyless-types-'));
  const file = path.join(dir, 't.db');
  const sink = new SqliteSink({ url: file, stateSchema: 'syncline', versionGate: true });
  let db: Database.Database | undefined;
  const conn = (): Database.Database => (db ??= new Database(file));
  return {
    sink,
    async create(t) {
      conn().exec(`CREATE TABLE "${t}" (i INTEGER, b BIGINT, d NUMERIC, f REAL, g DOUBLE PRECISION, t BOOLEAN,
        c TEXT COLLATE RTRIM, s TEXT COLLATE NOCASE, ts TIMESTAMPTZ, dt DATE, "by" BLOB, j JSON, arr JSONB)`);
    },
    async createSurrogate(t) {
      conn().exec(`CREATE TABLE "${t}" (rid INTEGER PRIMARY KEY AUTOINCREMENT, s TEXT)`);
    },
    async count(t) {
      return Number((conn().prepare(`SELECT COUNT(*) AS n FROM "${t}"`).get() as { n: number }).n);
    },
    async close() {
      await sink.close();
      db?.close();
      await rm(dir, { recursive: true, force: true });
    },
  };
});
