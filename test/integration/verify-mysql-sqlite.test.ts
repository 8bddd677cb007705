import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import Database from 'better-sqlite3';
import type mysql from 'mysql2/promise';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runPipeline } from '../../src/api/run-pipeline.js';
import { parseConfig } from '../../src/config/load.js';
import { TableMapping } from '../../src/core/table-mapping.js';
import { verifyTable } from '../../src/verify/compare.js';
import { floatText, sourceText } from '../../src/verify/targets/source-text.js';
import { openVerifyTarget } from '../../src/verify/targets/open.js';
import { ensureBuilt, runCli } from '../helpers/cli.js';
import { MYSQL_ADMIN_URL, mysqlAdmin } from '../helpers/mysql.js';
import { freePort, freshDatabase, machinePg15, testLogger, uniqueName, waitFor } from '../helpers/postgres.js';

const syncline = runCli;

type Report = { drift: boolean; tables: { table: string; sourceRows: number; targetRows: number; differing: number; missing: string[]; extra: string[]; different: string[]; lagChecked: boolean }[] };

// typed.f = i / 3.0 holds doubles whose text mysql2 parsed to a neighbour (90.33333333333333
// read as 90.33333333333331 for i = 271): verify called those rows different (red team).
const SOURCE_DDL = `
  CREATE TABLE typed (id bigint PRIMARY KEY, n numeric(12,2), tz timestamptz, ts timestamp, d date, b boolean, bin bytea,
    j json, jb jsonb, arr text[], u uuid, f float8, r real, t text, i2 smallint, tm time);
  CREATE TABLE utf (k text PRIMARY KEY, v int);
  CREATE TABLE ci (k text PRIMARY KEY, v int);
  CREATE TABLE wide (region text, id bigint, payload text, amount numeric(14,2), PRIMARY KEY (region, id));
  CREATE TABLE bag (a int, b text);
  ALTER TABLE bag REPLICA IDENTITY FULL;
  INSERT INTO typed SELECT 9007199254740993 + i, i * 1.25 - 400, timestamptz '2024-03-01 12:00:00.123456+02' + i * interval '1 hour 7 min',
    timestamp '2024-03-01 12:00:00.5' + i * interval '1 min', date '2024-01-01' + i, i % 2 = 0, decode(md5(i::text), 'hex'),
    json_build_object('i', i, 's', 'x y'), jsonb_build_object('k', i, 'arr', ARRAY[1, 2], 'u', 'é'),
    CASE i % 3 WHEN 0 THEN ARRAY['a b', '', NULL, 'q"u', 'x\\y', 'NULL', 'plain', '{}'] WHEN 1 THEN '{}'::text[] ELSE ARRAY['x'] END,
    md5(i::text)::uuid, i / 3.0::float8, (i / 3.0)::real, 'row ' || i || E' tab\\t, (quote") é 😀', (i % 30000)::smallint, time '12:34:56.5' + i * interval '1 s'
    FROM generate_series(1, 600) i;
  INSERT INTO typed (id, f, r, n, tz, ts, tm) VALUES (1, 1e20, 1e-5, 0, '2000-01-01 00:00:00+00', '2000-01-01 00:00:00', '00:00:00'),
    (2, 0.1, 0.1, 0.01, '1999-12-31 23:59:59.999999-08', '1999-12-31 23:59:59.999999', '23:59:59.999999'), (3, 123456789012345, 1234567, -0.5, NULL, NULL, NULL),
    (4, -1.5e-7, -3.4e38, 9999999999.99, NULL, NULL, NULL), (5, NULL, NULL, NULL, NULL, NULL, NULL);
  INSERT INTO utf VALUES ('x\uFFFD', 1), ('x😀', 2), ('y', 3), ('a😀b', 4), ('a\uFFFDb', 5), ('B', 6), ('a', 7), ('A', 8), ('Straße', 9), ('🙂', 10);
  INSERT INTO ci VALUES ('Abc', 1), ('q😀', 2), ('k', 3);
  INSERT INTO wide SELECT 'r' || (i % 7), i, repeat(md5(i::text), 2), i * 1.25 FROM generate_series(1, 20000) i;
  INSERT INTO bag SELECT i % 50, 'v' || (i % 50) FROM generate_series(1, 1000) i;`;

const MYSQL_DDL = [
  `CREATE TABLE typed (id BIGINT PRIMARY KEY, n DECIMAL(12,2), tz DATETIME(6), ts DATETIME(6), d DATE, b TINYINT(1), bin LONGBLOB,
    j JSON, jb JSON, arr JSON, u CHAR(36), f DOUBLE, r FLOAT, t TEXT, i2 SMALLINT, tm TIME(6))`,
  // utf8mb4_bin: code point order, not the source's; every key distinct.
  'CREATE TABLE utf (k VARCHAR(64) COLLATE utf8mb4_bin PRIMARY KEY, v INT)',
  // general_ci: 'abc' = 'Abc' and every emoji = every other: lookups return collation-equal keys.
  'CREATE TABLE ci (k VARCHAR(64) COLLATE utf8mb4_general_ci PRIMARY KEY, v INT)',
  'CREATE TABLE wide (region VARCHAR(8), id BIGINT, payload TEXT, amount DECIMAL(14,2), PRIMARY KEY (region, id))',
  'CREATE TABLE bag (a INT, b TEXT)',
];

const SQLITE_DDL = `
  CREATE TABLE typed (id INTEGER PRIMARY KEY, n NUMERIC(12,2), tz TIMESTAMPTZ, ts TIMESTAMP, d DATE, b BOOLEAN, bin BLOB,
    j JSON, jb JSON, arr JSON, u UUID, f DOUBLE PRECISION, r REAL, t TEXT, i2 SMALLINT, tm TIME);
  CREATE TABLE utf (k TEXT PRIMARY KEY, v INTEGER);
  CREATE TABLE ci (k TEXT COLLATE NOCASE PRIMARY KEY, v INTEGER);
  CREATE TABLE wide (region TEXT, id INTEGER, payload TEXT, amount NUMERIC(14,2), PRIMARY KEY (region, id));
  CREATE TABLE bag (a INTEGER, b TEXT);`;

const COUNTS: Record<string, number> = { typed: 605, utf: 10, ci: 3, wide: 20000, bag: 1000 };

describe('source text of target values (pure)', () => {
  it('prints floats as float8out/float4out do with extra_float_digits 3', () => {
    expect([1e20, 1e-5, 1.5e-7, 123456789012345, 1234567890123456, 0.1, -0].map((x) => floatText(x, 15))).toEqual(['1e+20', '1e-05', '1.5e-07', '123456789012345', '1.234567890123456e+15', '0.1', '-0']);
    expect([0.1, 1e6, 123456, 1e-5, 1 / 3].map((x) => floatText(x, 6))).toEqual(['0.1', '1e+06', '123456', '1e-05', '0.33333334']);
  });
  it('turns stored forms back into source text', () => {
    expect(sourceText('boolean', Buffer.from([1]))).toBe('true');
    expect(sourceText('boolean', 0n)).toBe('false');
    expect(sourceText('numeric(12,2)', '-400.00')).toBe('-400');
    expect(sourceText('numeric', 2.5)).toBe('2.5');
    expect(sourceText('timestamp with time zone', '2024-03-01 10:00:00.000000')).toBe('2024-03-01 10:00:00+00');
    expect(sourceText('timestamp without time zone', '2024-03-01 10:00:00.500000')).toBe('2024-03-01 10:00:00.5');
    expect(sourceText('text[]', '["a b","",null,"q\\"u","NULL","x"]')).toBe('{"a b","",NULL,"q\\"u","NULL",x}');
    expect(sourceText('bytea', Buffer.from('0a1b', 'hex'))).toBe('\\x0a1b');
    expect(sourceText('character(4)', 'ab')).toBe('ab  ');
  });
});

describe.each(['mysql', 'sqlite'] as const)('verify and repair with a %s target (PostgreSQL 15 source, syncline run)', (type) => {
  const name = uniqueName(`syncline_v14_${type}`);
  let dir: string;
  let source: pg.Client;
  let sourceUrl: string;
  let targetUrl: string;
  let configFile: string;
  let admin: mysql.Connection | undefined;
  let port: number;
  const ctl = new AbortController();
  let running: Promise<unknown> = Promise.resolve();

  /** Runs SQL at the target behind syncline's back. */
  const atTarget = async (sql: string, params: unknown[] = []): Promise<void> => {
    if (admin) {
      await admin.query(`USE \`${name}\``);
      await admin.query(sql, params);
      return;
    }
    const db = new Database(path.join(dir, 'target.db'));
    try {
      db.prepare(sql).run(...params);
    } finally {
      db.close();
    }
  };
  const targetCount = async (table: string): Promise<number> => {
    if (admin) {
      await admin.query(`USE \`${name}\``);
      const [rows] = await admin.query<mysql.RowDataPacket[]>(`SELECT COUNT(*) AS n FROM \`${table}\``);
      return Number(rows[0]?.n);
    }
    const db = new Database(path.join(dir, 'target.db'));
    try {
      return Number((db.prepare(`SELECT count(*) AS n FROM "${table}"`).get() as { n: number }).n);
    } finally {
      db.close();
    }
  };
  const verify = async (...args: string[]): Promise<Report> => {
    const r = await syncline('verify', '-c', configFile, '--json', ...args);
    expect(r.code, r.stderr).toBeLessThan(2);
    return JSON.parse(r.stdout) as Report;
  };
  const byTable = (report: Report, table: string): Report['tables'][number] => report.tables.find((t) => t.table === `public.${table}`) as Report['tables'][number];

  beforeAll(async () => {
    ensureBuilt();
    dir = await mkdtemp(path.join(os.tmpdir(), `syncline-v14-${type}-`));
    sourceUrl = await freshDatabase(await machinePg15(), name);
    source = new pg.Client({ connectionString: sourceUrl });
    await source.connect();
    await source.query(SOURCE_DDL);
    if (type === 'mysql') {
      admin = await mysqlAdmin();
      await admin.query(`DROP DATABASE IF EXISTS \`${name}\``);
      await admin.query(`CREATE DATABASE \`${name}\` CHARACTER SET utf8mb4`);
      await admin.query(`USE \`${name}\``);
      for (const ddl of MYSQL_DDL) await admin.query(ddl);
      const u = new URL(MYSQL_ADMIN_URL);
      u.pathname = `/${name}`;
      targetUrl = u.toString();
    } else {
      const db = new Database(path.join(dir, 'target.db'));
      db.exec(SQLITE_DDL);
      db.close();
      targetUrl = `sqlite://${path.join(dir, 'target.db')}`;
    }
    port = await freePort();
    const yaml = `source:
  url: ${sourceUrl}
  heartbeat_interval_ms: 500
  slots: [{ name: ${name}, publication: ${name}_pub, tables: [typed, utf, ci, wide, bag] }]
stream: { path: ${path.join(dir, 'stream')}, partitions: 2 }
consumer: { group_id: v14 }
sink: { type: ${type}, url: '${targetUrl}' }
dead_letter: { url: ${sourceUrl} }
verify: { interval: 1s, lag_timeout: 30s }
monitoring: { port: ${port} }
`;
    configFile = path.join(dir, 'sync.yaml');
    await writeFile(configFile, yaml);
    running = runPipeline(parseConfig(yaml), 'run', await testLogger(), ctl.signal);
    running.catch(() => undefined);
    for (const [table, n] of Object.entries(COUNTS)) await waitFor(`${table} replicated`, async () => (await targetCount(table)) === n, 60_000, 250);
  }, 180_000);

  afterAll(async () => {
    ctl.abort();
    await running.catch(() => undefined);
    await source?.query(`SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1 AND NOT active`, [name]).catch(() => undefined);
    await source?.end();
    if (admin) {
      await admin.query(`DROP DATABASE IF EXISTS \`${name}\``);
      await admin.end();
    }
    const server = await machinePg15();
    const c = new pg.Client({ connectionString: server.url('postgres') });
    await c.connect();
    await c.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`).catch(() => undefined);
    await c.end();
    await rm(dir, { recursive: true, force: true });
  }, 60_000);

  it('equal tables of many types (numeric, timestamptz, timestamp, date, bool, bytea, json, jsonb, text[], uuid, float8, real, int8 past 2^53, time): no drift', async () => {
    const report = await verify();
    for (const t of report.tables) expect({ table: t.table, differing: t.differing, missing: t.missing, extra: t.extra, different: t.different }).toEqual({ table: t.table, differing: 0, missing: [], extra: [], different: [] });
    expect(report.drift).toBe(false);
    expect(byTable(report, 'typed')).toMatchObject({ sourceRows: 605, targetRows: 605, lagChecked: true });
    expect(byTable(report, 'wide')).toMatchObject({ sourceRows: 20000, targetRows: 20000 });
  }, 120_000);

  it('keys only collation-equal at the target (mixed case, emoji under general_ci / NOCASE) are told apart', async () => {
    await atTarget('UPDATE ci SET k = ? WHERE k = ?', ['abc', 'Abc']);
    await atTarget('UPDATE ci SET k = ? WHERE k = ?', ['q🙂', 'q😀']);
    // The pipeline is idle: no lag to wait for (--no-wait), differences are what they are.
    const r = byTable(await verify('--table', 'ci', '--no-wait'), 'ci');
    expect(r.differing).toBe(4);
    expect([...r.missing].sort()).toEqual(['["Abc"]', '["q😀"]']);
    expect([...r.extra].sort()).toEqual(['["abc"]', '["q🙂"]']);
    expect(r.different).toEqual([]);
  }, 60_000);

  it('5 changed, 3 deleted, 2 added target rows: exactly those 10 keys; emoji and U+FFFD keys and keyless multisets counted exactly', async () => {
    for (const id of [5, 6000, 12001, 17000, 19999]) await atTarget('UPDATE wide SET amount = amount + 1 WHERE id = ?', [id]);
    for (const id of [1, 10000, 20000]) await atTarget('DELETE FROM wide WHERE id = ?', [id]);
    await atTarget("INSERT INTO wide (region, id, payload, amount) VALUES ('r0', 40000, 'x', 1), ('zz', 1, 'y', 2)");
    await atTarget('DELETE FROM utf WHERE k = ?', ['x\uFFFD']);
    await atTarget('INSERT INTO utf (k, v) VALUES (?, 11)', ['z😀']);
    await atTarget('UPDATE utf SET v = 80 WHERE k = ?', ['A']);
    await atTarget(type === 'mysql' ? 'DELETE FROM bag WHERE a = 5 LIMIT 2' : 'DELETE FROM bag WHERE rowid IN (SELECT rowid FROM bag WHERE a = 5 LIMIT 2)');
    await atTarget("INSERT INTO bag (a, b) VALUES (7, 'v7'), (1000, 'new')");
    await atTarget(type === 'mysql' ? 'UPDATE typed SET tz = tz + INTERVAL 1 SECOND WHERE id = 9007199254741000' : "UPDATE typed SET tz = '2000-01-01 00:00:00.000000' WHERE id = 9007199254741000");
    const report = await verify('--table', 'wide', 'utf', 'bag', 'typed');
    expect(report.drift).toBe(true);
    const wide = byTable(report, 'wide');
    const key = (id: number): string => JSON.stringify([`r${id % 7}`, String(id)]);
    expect(wide.differing).toBe(10);
    expect([...wide.different].sort()).toEqual([5, 6000, 12001, 17000, 19999].map(key).sort());
    expect([...wide.missing].sort()).toEqual([1, 10000, 20000].map(key).sort());
    expect([...wide.extra].sort()).toEqual(['["r0","40000"]', '["zz","1"]']);
    expect(wide).toMatchObject({ sourceRows: 20000, targetRows: 19999 });
    expect(byTable(report, 'utf')).toMatchObject({ differing: 3, missing: ['["x\uFFFD"]'], extra: ['["z😀"]'], different: ['["A"]'] });
    const bag = byTable(report, 'bag');
    expect(bag).toMatchObject({ sourceRows: 1000, targetRows: 1000, differing: 4, unsettled: 0, lagChecked: true });
    expect(bag.missing).toEqual(['["5","v5"]', '["5","v5"]']);
    expect([...bag.extra].sort()).toEqual(['["1000","new"]', '["7","v7"]']);
    expect(byTable(report, 'typed')).toMatchObject({ differing: 1, different: ['["9007199254741000"]'] });
    // verify.interval inside run exports the drift the same way.
    const scrape = async (): Promise<string> => (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
    await waitFor('sync_drift_rows of wide', async () => /^sync_drift_rows\{table="public\.wide"\} 10$/m.test(await scrape().catch(() => '')), 60_000, 250);
    expect(await scrape()).toMatch(/^sync_verify_last_success_timestamp [1-9]/m);
  }, 120_000);

  it('repair re-syncs the differing rows through the sink, and verify is then clean', async () => {
    const dry = await syncline('repair', '-c', configFile, '--dry-run', '--json');
    expect(dry.code, dry.stderr).toBe(1);
    const repaired = await syncline('repair', '-c', configFile, '--json', '--timeout', '60s');
    expect(repaired.code, `${repaired.stdout}\n${repaired.stderr}`).toBe(0);
    expect(JSON.parse(repaired.stdout)).toMatchObject({ remaining_drift: 0 });
    const report = await verify();
    expect(report.drift).toBe(false);
    for (const [table, n] of Object.entries(COUNTS)) expect(byTable(report, table)).toMatchObject({ sourceRows: n, targetRows: n, differing: 0 });
  }, 180_000);

  it('soft-deleted target rows count as absent; sink.tables routes compare the renamed target table without its excluded columns', async () => {
    await source.query(`CREATE TABLE soft (id int PRIMARY KEY, v text); INSERT INTO soft VALUES (1, 'a'), (2, 'b'), (3, 'c');
      CREATE TABLE routed (id int PRIMARY KEY, v text, secret text); INSERT INTO routed VALUES (1, 'a', 's'), (2, 'b', 's')`);
    const deletedAt = type === 'mysql' ? 'DATETIME(6)' : 'TEXT';
    await atTarget(`CREATE TABLE soft (id INT PRIMARY KEY, v TEXT, _deleted_at ${deletedAt})`);
    await atTarget("INSERT INTO soft (id, v, _deleted_at) VALUES (1, 'a', NULL), (2, 'b', '2024-01-01 00:00:00'), (3, 'c', NULL), (4, 'd', '2024-01-01 00:00:00')");
    await atTarget('CREATE TABLE routed_v2 (id INT PRIMARY KEY, value TEXT)');
    await atTarget("INSERT INTO routed_v2 (id, value) VALUES (1, 'a'), (2, 'B')");
    const target = await openVerifyTarget(type, targetUrl);
    try {
      const soft = await verifyTable([{ source, target }], { schema: 'public', table: 'soft' }, undefined);
      expect(soft).toMatchObject({ sourceRows: 3, targetRows: 2, differing: 1, missing: ['["2"]'], extra: [], different: [] });
      const route = TableMapping.fromConfig({ 'public.routed': { target: 'routed_v2', columns: { v: 'value' }, exclude_columns: ['secret'] } }).routeOf({ schema: 'public', table: 'routed' });
      const routed = await verifyTable([{ source, target }], { schema: 'public', table: 'routed' }, route);
      expect(routed).toMatchObject({ table: 'public.routed', target: 'public.routed_v2', differing: 1, different: ['["2"]'] });
    } finally {
      await target.close();
    }
  }, 60_000);

  it('compares in memory bounded by a range: a table verified on 2 pairs with small ranges gives the same answer', async () => {
    const targets = [await openVerifyTarget(type, targetUrl), await openVerifyTarget(type, targetUrl)];
    const s2 = new pg.Client({ connectionString: sourceUrl });
    await s2.connect();
    try {
      const r = await verifyTable([{ source, target: targets[0] as never }, { source: s2, target: targets[1] as never }], { schema: 'public', table: 'wide' }, undefined, { rangeRows: 1500 });
      expect(r).toMatchObject({ sourceRows: 20000, targetRows: 20000, differing: 0 });
    } finally {
      await s2.end();
      for (const t of targets) await t.close();
    }
  }, 60_000);
});
