import mysql from 'mysql2/promise';
import { describe, expect, it } from 'vitest';
import { MysqlSink } from '../../src/sink/mysql/mysql-sink.js';
import { isRetriableMysqlError } from '../../src/sink/mysql/mysql-errors.js';
import { quoteMysqlIdent } from '../../src/sink/mysql/mysql-table.js';
import { REJECT_VALUE, describeKeylessSinkContract, describeSinkContract, describeSoftDeleteContract, type KeylessRow, type SoftDeleteHarness } from './sink-contract.js';
import { MYSQL_ADMIN_URL, mysqlAdmin } from '../helpers/mysql.js';
import { uniqueName } from '../helpers/unique.js';

const DATABASE = uniqueName('syncline_sinkc');

describeSinkContract('mysql (MariaDB)', async () => {
  const admin = await mysqlAdmin();
  await admin.query(`DROP DATABASE IF EXISTS ${quoteMysqlIdent(DATABASE)}`);
  await admin.query(`CREATE DATABASE ${quoteMysqlIdent(DATABASE)} CHARACTER SET utf8mb4 COLLATE utf8mb4_bin`);
  await admin.query(`USE ${quoteMysqlIdent(DATABASE)}`);
  const url = new URL(MYSQL_ADMIN_URL);
  url.pathname = `/${DATABASE}`;
  const sink = new MysqlSink({ url: url.toString(), stateSchema: 'syncline', versionGate: true });
  return {
    sink,
    storesPositions: true,
    missingTableIsPrerequisite: true,
    async createTable(table) {
      await admin.query(
        `CREATE TABLE ${quoteMysqlIdent(table)} (id VARCHAR(255) PRIMARY KEY, v TEXT CHECK (v IS NULL OR v <> ${mysql.escape(REJECT_VALUE)}), n LONGTEXT)`,
      );
    },
    async readRow(table, key) {
      const [rows] = await admin.query<(mysql.RowDataPacket & { id: string; v: string | null; n: string | null })[]>(
        `SELECT id, v, n FROM ${quoteMysqlIdent(table)} WHERE id = ?`,
        [key.id],
      );
      const r = rows[0];
      return r === undefined ? undefined : { id: r.id, v: r.v, n: r.n };
    },
    async close() {
      await sink.close();
      await admin.query(`DROP DATABASE IF EXISTS ${quoteMysqlIdent(DATABASE)}`);
      await admin.end();
    },
  };
});

/** A MySQL sink with `delete_mode: soft` on its own database; readRow sees live rows only. */
async function softHarness(database: string): Promise<SoftDeleteHarness> {
  const admin = await mysqlAdmin();
  await admin.query(`DROP DATABASE IF EXISTS ${quoteMysqlIdent(database)}`);
  await admin.query(`CREATE DATABASE ${quoteMysqlIdent(database)} CHARACTER SET utf8mb4 COLLATE utf8mb4_bin`);
  await admin.query(`USE ${quoteMysqlIdent(database)}`);
  const url = new URL(MYSQL_ADMIN_URL);
  url.pathname = `/${database}`;
  const sink = new MysqlSink({ url: url.toString(), stateSchema: 'syncline', versionGate: true, deleteMode: 'soft' });
  type Stored = mysql.RowDataPacket & { id: string; v: string | null; n: string | null; deletedAt: string | null };
  const readStored = async (table: string, key: Record<string, string>): Promise<Stored | undefined> => {
    // `_deleted_at` exists once the sink touched the table; DATETIME(6) holds UTC.
    const [cols] = await admin.query<mysql.RowDataPacket[]>('SELECT 1 FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ? AND COLUMN_NAME = ?', [table, '_deleted_at']);
    const deletedAt = cols.length > 0 ? "DATE_FORMAT(_deleted_at, '%Y-%m-%d %H:%i:%s.%f')" : 'NULL';
    const [rows] = await admin.query<Stored[]>(`SELECT id, v, n, ${deletedAt} AS deletedAt FROM ${quoteMysqlIdent(table)} WHERE id = ?`, [key.id]);
    const r = rows[0];
    return r === undefined ? undefined : { ...r };
  };
  return {
    sink,
    storesPositions: true,
    missingTableIsPrerequisite: true,
    async createTable(table) {
      await admin.query(`CREATE TABLE ${quoteMysqlIdent(table)} (id VARCHAR(255) PRIMARY KEY, v TEXT CHECK (v IS NULL OR v <> ${mysql.escape(REJECT_VALUE)}), n LONGTEXT)`);
    },
    async readRow(table, key) {
      const r = await readStored(table, key);
      return r === undefined || r.deletedAt !== null ? undefined : { id: r.id, v: r.v, n: r.n };
    },
    async readStored(table, key) {
      const r = await readStored(table, key);
      return r === undefined ? undefined : { id: r.id, v: r.v, n: r.n, deletedAt: r.deletedAt };
    },
    async close() {
      await sink.close();
      await admin.query(`DROP DATABASE IF EXISTS ${quoteMysqlIdent(database)}`);
      await admin.end();
    },
  };
}

describeSinkContract('mysql (MariaDB), delete_mode: soft', () => softHarness(uniqueName('syncline_sinkc_soft_all')));
describeSoftDeleteContract('mysql (MariaDB)', () => softHarness(uniqueName('syncline_sinkc_soft')));

// Keyless tables, in a database whose default collation is case-insensitive and PAD SPACE
// (utf8mb4_general_ci): a row is still removed only by its exact values.
describeKeylessSinkContract('mysql (MariaDB)', async () => {
  const database = uniqueName('syncline_ms_keyless');
  const admin = await mysqlAdmin();
  await admin.query(`DROP DATABASE IF EXISTS ${quoteMysqlIdent(database)}`);
  await admin.query(`CREATE DATABASE ${quoteMysqlIdent(database)} CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci`);
  await admin.query(`USE ${quoteMysqlIdent(database)}`);
  const url = new URL(MYSQL_ADMIN_URL);
  url.pathname = `/${database}`;
  const sink = new MysqlSink({ url: url.toString(), stateSchema: 'syncline', versionGate: true });
  const check = `CHECK (v IS NULL OR v <> ${mysql.escape(REJECT_VALUE)})`;
  return {
    sink,
    storesPositions: true,
    missingTableIsPrerequisite: true,
    async createTable(table) {
      await admin.query(`CREATE TABLE ${quoteMysqlIdent(table)} (id VARCHAR(255) PRIMARY KEY, v TEXT ${check}, n LONGTEXT)`);
    },
    async createKeylessTable(table) {
      await admin.query(`CREATE TABLE ${quoteMysqlIdent(table)} (id VARCHAR(255), v TEXT ${check}, n LONGTEXT)`);
    },
    async readRow(table, key) {
      const [rows] = await admin.query<(mysql.RowDataPacket & KeylessRow)[]>(`SELECT id, v, n FROM ${quoteMysqlIdent(table)} WHERE id = ?`, [key.id]);
      const r = rows[0];
      return r === undefined ? undefined : { id: r.id, v: r.v, n: r.n };
    },
    async readRows(table) {
      const [rows] = await admin.query<(mysql.RowDataPacket & KeylessRow)[]>(`SELECT id, v, n FROM ${quoteMysqlIdent(table)}`);
      return rows.map((r) => ({ id: r.id, v: r.v, n: r.n }));
    },
    async close() {
      await sink.close();
      await admin.query(`DROP DATABASE IF EXISTS ${quoteMysqlIdent(database)}`);
      await admin.end();
    },
  };
});

describe('mysql sink: error classification', () => {
  it('retries lock and connection errors, not data errors', () => {
    for (const errno of [1205, 1213, 2006, 2013]) expect(isRetriableMysqlError({ errno })).toBe(true);
    for (const code of ['ECONNREFUSED', 'PROTOCOL_CONNECTION_LOST']) expect(isRetriableMysqlError({ code })).toBe(true);
    for (const errno of [1062, 1264, 1366, 1406, 1452, 4025, 1146, 1054]) expect(isRetriableMysqlError({ errno })).toBe(false);
  });

  it('an unreachable server is a retriable error', async () => {
    const sink = new MysqlSink({ url: 'mysql://root@127.0.0.1:1/none', stateSchema: 'syncline', versionGate: true });
    const err = await sink.prepare().then(() => undefined, (e: unknown) => e);
    await sink.close();
    expect(err).toMatchObject({ retriable: true });
  });
});
