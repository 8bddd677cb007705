/**
 * Red team 2: a CHECK constraint refused at a MariaDB target was dead-lettered as
 * "CONSTRAINT `bal_ok` failed ... (errno 4025 ER_INNODB_AUTOEXTEND_SIZE_OUT_OF_RANGE)": mysql2
 * names errnos from MySQL's list, whose 4000s are not MariaDB's. The code keeps the errno; the
 * message no longer carries a name from another server.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MysqlSink } from '../../src/sink/mysql/mysql-sink.js';
import { ChangeFactory } from '../../src/testing/sink-contract.js';
import { freshMysqlDatabase, type MysqlTestDatabase } from '../helpers/mysql.js';
import { uniqueName } from '../helpers/unique.js';

describe('red team 2: MariaDB errors in dead letters', () => {
  let my: MysqlTestDatabase;
  beforeAll(async () => {
    my = await freshMysqlDatabase(uniqueName('rt2_myerr'));
  });
  afterAll(async () => {
    await my?.drop();
  });

  it('a CHECK violation keeps errno 4025 and names no MySQL error', async () => {
    await my.admin.query("CREATE TABLE t (id VARCHAR(20) PRIMARY KEY, v TEXT, n TEXT, CONSTRAINT v_ok CHECK (v <> 'bad'))");
    const sink = new MysqlSink({ url: my.url, stateSchema: 'syncline', versionGate: true });
    try {
      await sink.prepare();
      const err = await sink.apply([new ChangeFactory().insert('t', '1', 100, 'bad')], new Map(), 'g').then(() => undefined, (e: unknown) => e as Error & { code?: string });
      expect(err?.code).toBe('SINK_MYSQL_4025');
      expect(err?.message).toMatch(/v_ok/);
      expect(err?.message).not.toMatch(/INNODB|AUTOEXTEND/);
    } finally {
      await sink.close();
    }
  });

  // Acceptance red team: NaN reached MariaDB, which refused it as errno 1366, while the
  // README promises SINK_VALUE for the values a MySQL number cannot hold.
  it.each([
    ['v', 'NaN'],
    ['n', 'Infinity'],
    ['n', '-Infinity'],
  ])('%s = %s is refused by the sink as SINK_VALUE', async (column, value) => {
    await my.admin.query('CREATE TABLE IF NOT EXISTS nums (id VARCHAR(20) PRIMARY KEY, v DECIMAL(10,2), n DOUBLE)');
    const sink = new MysqlSink({ url: my.url, stateSchema: 'syncline', versionGate: true });
    try {
      await sink.prepare();
      const f = new ChangeFactory();
      const change = f.event('INSERT', 'nums', '1', 100, { id: '1', v: column === 'v' ? value : '1.5', n: column === 'n' ? value : '2.5' });
      const err = await sink.apply([change], new Map(), 'g').then(() => undefined, (e: unknown) => e as Error & { code?: string });
      expect(err?.code).toBe('SINK_VALUE');
      expect(err?.message).toContain(`column ${column}: ${value}`);
    } finally {
      await sink.close();
    }
  });
});
