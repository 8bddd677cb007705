/**
 * MariaDB and MySQL identifiers hold only the Basic Multilingual Plane: a source table named
 * `Tbl 😀` cannot exist on a mysql target. An acceptance pass (4) found each of its changes
 * dead-lettered with "Illegal mix of collations (utf8mb3_general_ci,IMPLICIT) and
 * (utf8mb4_general_ci,COERCIBLE)" (the name compared with information_schema's utf8mb3),
 * which says nothing of the cause or the fix, and `syncline verify` of every table stopping
 * with the same message. Now the table is refused with a reason that names the character and
 * the fix (route the table to another name with sink.tables), as a missing target table is.
 */
import mysql from 'mysql2/promise';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PrerequisiteError } from '../../src/core/errors.js';
import { loadMysqlTable } from '../../src/sink/mysql/mysql-table.js';
import { freshMysqlDatabase, type MysqlTestDatabase } from '../helpers/mysql.js';
import { uniqueName } from '../helpers/postgres.js';

describe('mysql sink: a table name MariaDB cannot hold', () => {
  let db: MysqlTestDatabase;
  let pool: mysql.Pool;

  beforeAll(async () => {
    db = await freshMysqlDatabase(uniqueName('syncline_acc4_ident'));
    pool = mysql.createPool({ uri: db.url, charset: 'utf8mb4' });
  });

  afterAll(async () => {
    await pool?.end();
    await db?.drop();
  });

  it('is refused naming the character and the fix, not with a collation error', async () => {
    const conn = await pool.getConnection();
    try {
      const err = await loadMysqlTable(conn, 'public', 'Mixed "Case".Tbl 😀').then(() => undefined, (e: unknown) => e);
      expect(err).toBeInstanceOf(PrerequisiteError);
      expect((err as Error).message).toContain('😀');
      expect((err as Error).message).not.toContain('collations');
      expect((err as PrerequisiteError).fix).toContain('sink.tables');
    } finally {
      conn.release();
    }
  });
});
