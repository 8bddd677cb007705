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
