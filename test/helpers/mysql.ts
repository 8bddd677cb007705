import mysql from 'mysql2/promise';

/**
 * The machine's MariaDB (MySQL protocol) for sink tests. Unreachable = the test fails with
 * how to start it; it never skips.
 */
export const MYSQL_ADMIN_URL = process.env.SYNCLINE_TEST_MYSQL_URL ?? 'mysql://root@127.0.0.1:3306/test';

export async function mysqlAdmin(): Promise<mysql.Connection> {
  try {
    return await mysql.createConnection({ uri: MYSQL_ADMIN_URL, connectTimeout: 5000, supportBigNumbers: true, bigNumberStrings: true, dateStrings: true, charset: 'utf8mb4' });
  } catch (err) {
    throw new Error(
      `MariaDB is not reachable at ${MYSQL_ADMIN_URL} (${(err as Error).message}). ` +
        'Start it: start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd ' +
        '(as root; .ci/run does this), or set SYNCLINE_TEST_MYSQL_URL.',
    );
  }
}

/** A MariaDB database of a test: its sink URL, an admin connection in it, and how to drop it. */
export interface MysqlTestDatabase {
  url: string;
  admin: mysql.Connection;
  drop(): Promise<void>;
}

/** Creates `name` afresh (utf8mb4_bin, as sinks expect) and connects to it. */
export async function freshMysqlDatabase(name: string): Promise<MysqlTestDatabase> {
  const admin = await mysqlAdmin();
  const db = mysql.escapeId(name);
  await admin.query(`DROP DATABASE IF EXISTS ${db}`);
  await admin.query(`CREATE DATABASE ${db} CHARACTER SET utf8mb4 COLLATE utf8mb4_bin`);
  await admin.query(`USE ${db}`);
  const url = new URL(MYSQL_ADMIN_URL);
  url.pathname = `/${name}`;
  return {
    url: url.toString(),
    admin,
    async drop() {
      await admin.query(`DROP DATABASE IF EXISTS ${db}`);
      await admin.end();
    },
  };
}

/** Rows of a query at the admin connection, as plain objects. */
export async function mysqlRows<R = Record<string, unknown>>(admin: mysql.Connection, sql: string, params: unknown[] = []): Promise<R[]> {
  const [rows] = await admin.query<mysql.RowDataPacket[]>(sql, params);
  return rows.map((r) => ({ ...r }) as R);
}
