import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { describeVerification } from '../../src/cli/commands/verify.js';
import { verifyTable, type TableVerification } from '../../src/verify/compare.js';
import { orderingOf } from '../../src/verify/key-collation.js';
import { machinePg15, uniqueName, type PgServer } from '../helpers/postgres.js';

/**
 * Text keys ordered by another collation at the target than at the source (an ICU target
 * database, a target column declared COLLATE "en-x-icu"): ranges planned on the source's
 * key order used to select other rows at the target, so ranges overlapped, left gaps, and a
 * differing range was split without end (verify never finished). Small ranges and leaves
 * so that the table has many of both.
 */
const OPTIONS = { rangeRows: 500, leafRows: 20 };
const ROWS = 4000;
/** Keys whose order differs between C ('B…' before 'a…') and ICU ('a…' before 'B…'). */
const KEYS = `CASE WHEN i % 2 = 0 THEN 'a' || i ELSE 'B' || i END`;
const keysOf = (r: { missing: string[]; extra: string[]; different: string[] }): string => [...r.different, ...r.missing, ...r.extra].sort().join(',');

describe('verify with a text key the target orders by another collation (PostgreSQL 15)', () => {
  let server: PgServer;
  let admin: pg.Client;
  const databases: string[] = [];
  const clients: pg.Client[] = [];
  const database = async (options: string): Promise<pg.Client> => {
    const name = uniqueName(`syncline_verify_collation${databases.length}`);
    databases.push(name);
    await admin.query(`CREATE DATABASE ${pg.escapeIdentifier(name)} ${options}`);
    const c = new pg.Client({ connectionString: server.url(name) });
    await c.connect();
    clients.push(c);
    return c;
  };
  const verify = (source: pg.Client, target: pg.Client, table: string): Promise<TableVerification> => verifyTable([{ source, target }], { schema: 'public', table }, undefined, OPTIONS);
  /** What verify reports after `edit` at the target (rolled back after). */
  const after = async (source: pg.Client, target: pg.Client, table: string, edit: string): Promise<string> => {
    await target.query('BEGIN');
    try {
      await target.query(edit);
      return keysOf(await verify(source, target, table));
    } finally {
      await target.query('ROLLBACK');
    }
  };

  let source: pg.Client;
  beforeAll(async () => {
    server = await machinePg15();
    admin = new pg.Client({ connectionString: server.url('postgres') });
    await admin.connect();
    source = await database('');
    await source.query(`CREATE TABLE ck (k text PRIMARY KEY, v int)`);
    await source.query(`INSERT INTO ck SELECT ${KEYS}, i FROM generate_series(1, ${ROWS}) i`);
    await source.query(`CREATE TABLE ck2 (k text, j int, v int, PRIMARY KEY (k, j))`);
    await source.query(`INSERT INTO ck2 SELECT ${KEYS}, i % 3, i FROM generate_series(1, ${ROWS}) i`);
  });
  afterAll(async () => {
    for (const c of clients) await c.end().catch(() => undefined);
    for (const d of databases) await admin.query(`DROP DATABASE IF EXISTS ${pg.escapeIdentifier(d)} WITH (FORCE)`);
    await admin.end();
  });

  it('a target database whose default collation is ICU: equal rows finish as identical, edits are named exactly', { timeout: 60_000 }, async () => {
    const target = await database(`TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE 'en' LOCALE 'C.UTF-8'`);
    await target.query(`CREATE TABLE ck (k text PRIMARY KEY, v int)`);
    await target.query(`INSERT INTO ck SELECT ${KEYS}, i FROM generate_series(1, ${ROWS}) i`);
    const r = await verify(source, target, 'ck');
    expect([r.sourceRows, r.targetRows, r.differing]).toEqual([ROWS, ROWS, 0]);
    expect(r.warnings?.join('\n')).toMatch(/"public"\."ck"\."k" is ordered by pg_catalog\."default" \(icu "en"\) at the target.*COLLATE pg_catalog\."C\.utf8"/);
    expect(describeVerification(r)).toContain('warning: "public"."ck"."k"');
    expect(await after(source, target, 'ck', `UPDATE ck SET v = -1 WHERE k IN ('a2000', 'B1501'); DELETE FROM ck WHERE k IN ('a10', 'B3999'); INSERT INTO ck VALUES ('A1', 1), ('b2', 2)`)).toBe(
      '["A1"],["B1501"],["B3999"],["a10"],["a2000"],["b2"]',
    );
  });

  it('target key columns declared COLLATE "en-x-icu" (a two-column key): identical, then edits named exactly', { timeout: 60_000 }, async () => {
    const target = await database('');
    await target.query(`CREATE TABLE ck2 (k text COLLATE "en-x-icu", j int, v int, PRIMARY KEY (k, j))`);
    await target.query(`INSERT INTO ck2 SELECT ${KEYS}, i % 3, i FROM generate_series(1, ${ROWS}) i`);
    const r = await verify(source, target, 'ck2');
    expect([r.sourceRows, r.targetRows, r.differing]).toEqual([ROWS, ROWS, 0]);
    expect(r.warnings).toHaveLength(1);
    expect(await after(source, target, 'ck2', `UPDATE ck2 SET v = 0 WHERE k = 'B7'; DELETE FROM ck2 WHERE k = 'a3000'; INSERT INTO ck2 VALUES ('a3000', 1, 3000)`)).toBe('["B7","1"],["a3000","0"],["a3000","1"]');
  });

  it('a source key collation the target has no equivalent of: a clear error naming both collations and the fix, not a hang', { timeout: 60_000 }, async () => {
    const src = await database('');
    await src.query(`CREATE COLLATION phonebook (provider = icu, locale = 'de-u-co-phonebk')`);
    await src.query(`CREATE TABLE pb (k text COLLATE phonebook PRIMARY KEY, v int)`);
    await src.query(`INSERT INTO pb SELECT ${KEYS}, i FROM generate_series(1, ${ROWS}) i`);
    const target = await database('');
    await target.query(`CREATE TABLE pb (k text PRIMARY KEY, v int)`);
    await target.query(`INSERT INTO pb SELECT ${KEYS}, i FROM generate_series(1, ${ROWS}) i`);
    await expect(verify(src, target, 'pb')).rejects.toThrow(
      /cannot verify public\.pb: key column "k" is ordered by public\.phonebook \(icu "de-u-co-phonebk"\) at the source, "public"\."pb"\."k" by pg_catalog\."default" \(libc "C\.UTF-8"\) at the target, which has no collation ordering as the source's.*ALTER TABLE "public"\."pb" ALTER COLUMN "k" TYPE text COLLATE/,
    );
  });

  it('the same collation spelled otherwise (C.UTF-8 and C.utf8, C and POSIX) is no mismatch', { timeout: 60_000 }, async () => {
    const target = await database('');
    await target.query(`CREATE TABLE ck (k text COLLATE "C.utf8" PRIMARY KEY, v int)`);
    await target.query(`INSERT INTO ck SELECT ${KEYS}, i FROM generate_series(1, ${ROWS}) i`);
    const r = await verify(source, target, 'ck');
    expect([r.differing, r.warnings]).toEqual([0, undefined]);
    const libc = (locale: string): string => orderingOf({ provider: 'c', locale, deterministic: true });
    expect([libc('POSIX'), orderingOf({ provider: 'b', locale: 'C', deterministic: true })]).toEqual([libc('C'), libc('C')]);
    expect(libc('en_US.UTF-8')).toBe(libc('en_US.utf8'));
    expect(libc('en_US.UTF-8')).not.toBe(libc('C'));
    expect(orderingOf({ provider: 'i', locale: 'en', deterministic: false })).not.toBe(orderingOf({ provider: 'i', locale: 'en', deterministic: true }));
  });
});
