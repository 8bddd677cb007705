import mysql from 'mysql2/promise';
import { describe, expect, it } from 'vitest';
import { MysqlSink } from '../../src/sink/mysql/mysql-sink.js';
import { isRetriableMysqlError } from '../../src/sink/mysql/mysql-errors.js';
import { quoteMysqlIdent } from '../../src/sink/mysql/mysql-table.js';
import { REJECT_VALUE, describeSinkContract } from './sink-contract.js';
import { MYSQL_ADMIN_URL, mysqlAdmin } from '../helpers/mysql.js';

const DATABASE = 'syncline_sinkc';

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
