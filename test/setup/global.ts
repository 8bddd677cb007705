import { randomBytes } from 'node:crypto';
import mysql from 'mysql2/promise';
import pg from 'pg';
import { quoteMysqlIdent } from '../../src/sink/mysql/mysql-table.js';
import { MYSQL_ADMIN_URL } from '../helpers/mysql.js';
import { PG15_URL } from '../helpers/pg15-url.js';
import { RUN_ENV, isOfRun } from '../helpers/unique.js';
import { waitFor } from '../helpers/wait.js';

/**
 * Once per vitest run: picks the run id that every unique name ends with (test/helpers/unique.ts;
 * the workers inherit it through the environment), and at the end drops what the run made on
 * the machine's servers (PostgreSQL databases and slots, MariaDB databases), even what a failed
 * or interrupted file left behind, so that the servers do not fill up.
 */
export default function setup(): () => Promise<void> {
  const runId = `r${randomBytes(4).readUInt32BE(0).toString(36).padStart(7, '0').slice(-5)}`;
  process.env[RUN_ENV] = runId;
  return async () => {
    await dropPostgres(runId);
    await dropMysql(runId);
  };
}

async function dropPostgres(runId: string): Promise<void> {
  const admin = new pg.Client({ connectionString: PG15_URL, connectionTimeoutMillis: 5000 });
  try {
    await admin.connect();
  } catch {
    return; // not running: nothing was made there
  }
  try {
    // A logical slot keeps its database from being dropped; one still streaming is ended first.
    const { rows: slots } = await admin.query<{ slot_name: string; database: string | null }>('SELECT slot_name, database FROM pg_replication_slots');
    for (const { slot_name: slot } of slots.filter((s) => isOfRun(s.slot_name, runId) || isOfRun(s.database ?? '', runId))) {
      await admin.query('SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = $1 AND active_pid IS NOT NULL', [slot]);
      const released = async (): Promise<boolean> => (await admin.query('SELECT 1 FROM pg_replication_slots WHERE slot_name = $1 AND active', [slot])).rowCount === 0;
      await waitFor(`slot ${slot} released`, released, 10_000, 50).catch(() => undefined);
      await admin.query('SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1', [slot]);
    }
    const { rows: databases } = await admin.query<{ datname: string }>('SELECT datname FROM pg_database');
    for (const { datname } of databases.filter((d) => isOfRun(d.datname, runId))) {
      await admin.query(`DROP DATABASE IF EXISTS ${pg.escapeIdentifier(datname)} WITH (FORCE)`);
    }
  } catch (err) {
    console.warn(`could not drop this run's PostgreSQL databases and slots (_${runId}): ${(err as Error).message}`);
  } finally {
    await admin.end();
  }
}

async function dropMysql(runId: string): Promise<void> {
  let admin: mysql.Connection;
  try {
    admin = await mysql.createConnection({ uri: MYSQL_ADMIN_URL, connectTimeout: 5000 });
  } catch {
    return; // not running: nothing was made there
  }
  try {
    const [rows] = await admin.query<mysql.RowDataPacket[]>('SHOW DATABASES');
    for (const name of rows.map((r) => String(r.Database)).filter((n) => isOfRun(n, runId))) {
      await admin.query(`DROP DATABASE IF EXISTS ${quoteMysqlIdent(name)}`);
    }
  } catch (err) {
    console.warn(`could not drop this run's MariaDB databases (_${runId}): ${(err as Error).message}`);
  } finally {
    await admin.end();
  }
}
