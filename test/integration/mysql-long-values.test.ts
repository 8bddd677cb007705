/**
 * Acceptance red team: values of 64 KiB or more reached a MariaDB TEXT or BLOB column cut to
 * their length modulo 65,536 ('a' × 70,000 stored as 4,464 characters; an UPDATE to 131,072
 * characters stored ''), with no error and no dead letter: the sink wrote rows through a
 * derived table (`INSERT ... SELECT ... FROM (SELECT ? AS c0 UNION ALL ...) i`), whose string
 * columns MariaDB 10.11 types from their literals and stores cut; a UNION of such rows with
 * a long VARCHAR value even crashed the server. A row holding a long value is now sent alone
 * without a derived table: it is stored whole where the column holds it, and refused
 * (ER_DATA_TOO_LONG, dead-lettered by apply) where it does not.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MysqlSink } from '../../src/sink/mysql/mysql-sink.js';
import { ChangeFactory } from '../../src/testing/sink-contract.js';
import { freshMysqlDatabase, mysqlRows, type MysqlTestDatabase } from '../helpers/mysql.js';
import { tracking } from '../helpers/conflict-fixtures.js';
import { uniqueName } from '../helpers/unique.js';

describe('MariaDB sink: values of 64 KiB and more', () => {
  let my: MysqlTestDatabase;
  let sink: MysqlSink;
  const f = new ChangeFactory();
  const lengths = async (table: string): Promise<Record<string, unknown>[]> =>
    mysqlRows(my.admin, `SELECT id, CHAR_LENGTH(v) AS v, LENGTH(n) AS n FROM ${table} ORDER BY id`);

  beforeAll(async () => {
    my = await freshMysqlDatabase(uniqueName('my_long'));
    await my.admin.query('CREATE TABLE short_cols (id VARCHAR(20) PRIMARY KEY, v TEXT, n BLOB)');
    await my.admin.query('CREATE TABLE long_cols (id VARCHAR(20) PRIMARY KEY, v MEDIUMTEXT, n LONGBLOB)');
    sink = new MysqlSink({ url: my.url, stateSchema: 'syncline', versionGate: true });
    await sink.prepare();
  });
  afterAll(async () => {
    await sink?.close();
    await my?.drop();
  });

  it('a value too long for its column is refused, never stored cut', async () => {
    const err = await sink.apply([f.insert('short_cols', '1', 100, 'a'.repeat(70_000))], new Map(), 'g').then(() => undefined, (e: unknown) => e as Error & { code?: string });
    expect(err?.code).toBe('SINK_MYSQL_1406');
    const blob = await sink.apply([f.insert('short_cols', '2', 101, 'x', `\\x${'ab'.repeat(70_000)}`)], new Map(), 'g').then(() => undefined, (e: unknown) => e as Error & { code?: string });
    expect(blob?.code).toBe('SINK_MYSQL_1406');
    expect(await lengths('short_cols')).toEqual([]);
  });

  it('long values among short rows are stored whole, by insert and by update', async () => {
    const batch = [
      f.insert('long_cols', '1', 200, 'short', '\\x00'),
      f.insert('long_cols', '2', 201, 'é'.repeat(40_000), `\\x${'cd'.repeat(140_000)}`),
      f.insert('long_cols', '3', 202, 'w'.repeat(16_001), `\\x${'cd'.repeat(100)}`),
      f.insert('long_cols', '4', 203, 'also short', null),
      f.insert('long_cols', '5', 204, 'm'.repeat(70_000), null),
    ];
    const outcome = await sink.apply(batch, new Map(), 'g');
    expect(outcome.applied).toBe(5);
    expect(await lengths('long_cols')).toEqual([
      { id: '1', v: 5, n: 1 },
      { id: '2', v: 40_000, n: 140_000 },
      { id: '3', v: 16_001, n: 100 },
      { id: '4', v: 10, n: null },
      { id: '5', v: 70_000, n: null },
    ]);
    await sink.apply([f.update('long_cols', '1', 300, 'd'.repeat(131_072)), f.update('long_cols', '4', 301, 'tiny')], new Map(), 'g');
    const after = await mysqlRows<{ id: string; v: string }>(my.admin, "SELECT id, v FROM long_cols WHERE id IN ('1', '4') ORDER BY id");
    expect(after.map((r) => [r.id, r.v.length])).toEqual([
      ['1', 131_072],
      ['4', 4],
    ]);
    expect(after[0]?.v).toBe('d'.repeat(131_072));
    // The version gate still holds for the rows sent alone: an older change is stale.
    const stale = await sink.apply([f.update('long_cols', '2', 150, 'z'.repeat(70_000))], new Map(), 'g');
    expect(stale.stale).toBe(1);
    expect(await lengths('long_cols')).toContainEqual({ id: '2', v: 40_000, n: 140_000 });
  });

  it('with conflict tracking too (its writer and time sent as literals)', async () => {
    await my.admin.query('CREATE TABLE tracked (id VARCHAR(20) PRIMARY KEY, v MEDIUMTEXT, n LONGBLOB)');
    const tracked = new MysqlSink({ url: my.url, stateSchema: 'syncline', versionGate: true, conflicts: tracking() });
    try {
      await tracked.prepare();
      const g = new ChangeFactory('public', "o'brien");
      await tracked.apply([g.insert('tracked', '1', 400, 'x'.repeat(90_000)), g.insert('tracked', '2', 401, 'short')], new Map(), 'g');
      await tracked.apply([g.update('tracked', '2', 402, 'y'.repeat(90_000))], new Map(), 'g');
      expect(await lengths('tracked')).toEqual([
        { id: '1', v: 90_000, n: null },
        { id: '2', v: 90_000, n: null },
      ]);
      const writers = await mysqlRows<{ s: string }>(my.admin, 'SELECT DISTINCT _syncline_source AS s FROM tracked');
      expect(writers).toEqual([{ s: "o'brien" }]);
    } finally {
      await tracked.close();
    }
  });
});
