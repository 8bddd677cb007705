import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import Database from 'better-sqlite3';
import type mysql from 'mysql2/promise';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runPipeline } from '../../src/api/run-pipeline.js';
import { parseConfig } from '../../src/config/load.js';
import { ensureBuilt, runCli } from '../helpers/cli.js';
import { MYSQL_ADMIN_URL, mysqlAdmin } from '../helpers/mysql.js';
import { freePort, freshDatabase, machinePg15, testLogger, uniqueName, waitFor } from '../helpers/postgres.js';

/**
 * Values an acceptance pass found lost or misjudged, through `syncline run` into targets
 * syncline creates itself, then `syncline verify`, `doctor` and `dlq list` as a user runs them:
 * - a stored generated column at the source (never sent by pgoutput, so never created at the
 *   target) failed verify with "lacks column(s)" and doctor with a fix that adds a column
 *   nothing writes;
 * - char(n) shorter than n and inet host addresses always read as drift on mysql/sqlite
 *   (the source side compared `::text`, which trims char(n) and adds `/32` to an inet);
 * - a numeric(38,18) lost digits in the SQLite column syncline created (NUMERIC affinity);
 * - a numeric(80,40) made MySQL's CREATE TABLE fail (DECIMAL(80,40)), dead-lettering the table;
 * - a timestamptz past the year 275760 became `0NaN-NaN-NaN ...` in SQLite;
 * - MariaDB refused a real's largest values (`3.4028235e+38` reads above FLT_MAX as a double);
 * - an unbounded numeric with more than 30 digits after the point was rounded silently by
 *   MySQL's DECIMAL(65,30) (a note, not an error, strict mode too).
 */

type Report = { drift: boolean; tables: { table: string; differing: number; missing: string[]; extra: string[]; different: string[] }[] };

const SOURCE_DDL = `
  CREATE TABLE vals (id int PRIMARY KEY, ch char(5), ip inet, n numeric(38,18), wide numeric(80,40));
  CREATE TABLE ck (k char(4) PRIMARY KEY, v int);
  CREATE TABLE far (id int PRIMARY KEY, tz timestamptz);
  INSERT INTO vals (id, ch, ip, n) VALUES (1, 'ab', '1.2.3.4', '12345678901234567890.123456789012345678'), (2, 'é😀', '::1', '-0.000000000000000001'),
    (3, 'abcde', '10.0.0.0/8', 1.5), (4, NULL, NULL, NULL), (5, '', '2001:db8::1/64', 0);
  UPDATE vals SET wide = '1234567890123456789012345678901234567890.0123456789012345678901234567890123456789' WHERE id = 3;
  INSERT INTO ck VALUES ('a', 1), ('é😀', 2), ('abcd', 3);
  INSERT INTO far VALUES (1, '294276-12-31 23:59:59.999999+00'), (2, '2024-01-01 00:00:00+00');
  CREATE TABLE flt (id int PRIMARY KEY, r real);
  INSERT INTO flt VALUES (1, '3.4028235e38'), (2, '-3.4028235e38'), (3, '1e-45'), (4, '0.1'), (5, '1.17549435e-38');
  CREATE TABLE decs (id int PRIMARY KEY, u numeric);
  INSERT INTO decs VALUES (1, '0.123456789012345678901234567890'), (2, '0.1234567890123456789012345678901'), (3, '1.50000000000000000000000000000000000000');`;

const drop = async (name: string): Promise<void> => {
  const server = await machinePg15();
  const c = new pg.Client({ connectionString: server.url('postgres') });
  await c.connect();
  await c.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`).catch(() => undefined);
  await c.end();
};

describe.each(['mysql', 'sqlite'] as const)('values into a %s target syncline created (schema_evolution: full)', (type) => {
  const name = uniqueName(`syncline_acc2_${type}`);
  let dir: string;
  let source: pg.Client;
  let targetUrl: string;
  let configFile: string;
  let admin: mysql.Connection | undefined;
  const ctl = new AbortController();
  let running: Promise<unknown> = Promise.resolve();

  const targetRows = async (sql: string): Promise<Record<string, unknown>[]> => {
    if (admin) {
      await admin.query(`USE \`${name}\``);
      const [rows] = await admin.query<mysql.RowDataPacket[]>(sql);
      return rows;
    }
    const db = new Database(path.join(dir, 'target.db'), { readonly: true });
    try {
      return db.prepare(sql).all() as Record<string, unknown>[];
    } finally {
      db.close();
    }
  };

  beforeAll(async () => {
    ensureBuilt();
    dir = await mkdtemp(path.join(os.tmpdir(), `syncline-acc2-${type}-`));
    const sourceUrl = await freshDatabase(await machinePg15(), name);
    source = new pg.Client({ connectionString: sourceUrl });
    await source.connect();
    await source.query(SOURCE_DDL);
    if (type === 'mysql') {
      admin = await mysqlAdmin();
      await admin.query(`DROP DATABASE IF EXISTS \`${name}\``);
      await admin.query(`CREATE DATABASE \`${name}\` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin`);
      const u = new URL(MYSQL_ADMIN_URL);
      u.pathname = `/${name}`;
      targetUrl = u.toString();
    } else {
      targetUrl = `sqlite://${path.join(dir, 'target.db')}`;
    }
    const yaml = `source:
  url: ${sourceUrl}
  slots: [{ name: ${name}, publication: ${name}_pub, tables: [vals, ck, far, flt, decs] }]
stream: { path: ${path.join(dir, 'stream')}, partitions: 2 }
sink: { type: ${type}, url: '${targetUrl}', schema_evolution: full }
dead_letter: { url: ${sourceUrl} }
monitoring: { port: ${await freePort()} }
`;
    configFile = path.join(dir, 'sync.yaml');
    await writeFile(configFile, yaml);
    running = runPipeline(parseConfig(yaml), 'run', await testLogger(), ctl.signal);
    running.catch(() => undefined);
    await waitFor('tables replicated', async () => {
      try {
        const counts = await Promise.all(['vals', 'ck', 'far', 'flt', 'decs'].map(async (t) => Number((await targetRows(`SELECT count(*) AS n FROM ${t}`))[0]?.n)));
        return counts.join() === `5,3,1,5,${type === 'mysql' ? 2 : 3}`;
      } catch {
        return false; // not created yet
      }
    }, 60_000, 250);
  }, 120_000);

  afterAll(async () => {
    ctl.abort();
    await running.catch(() => undefined);
    await source?.query('SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1 AND NOT active', [name]).catch(() => undefined);
    await source?.end();
    if (admin) {
      await admin.query(`DROP DATABASE IF EXISTS \`${name}\``);
      await admin.end();
    }
    await drop(name);
    if (dir) await rm(dir, { recursive: true, force: true });
  }, 60_000);

  it('verify finds char(n), inet and numeric(38,18) values equal, char(n) keys included', async () => {
    const r = await runCli('verify', '-c', configFile, '--json', '--table', 'vals', '--table', 'ck');
    expect(r.code, r.stderr).toBe(0);
    const report = JSON.parse(r.stdout) as Report;
    for (const t of report.tables) expect({ table: t.table, missing: t.missing, extra: t.extra, different: t.different }).toEqual({ table: t.table, missing: [], extra: [], different: [] });
  }, 60_000);

  it('keeps every digit of a numeric(38,18) and a numeric(80,40)', async () => {
    const [row] = await targetRows(`SELECT CAST(n AS ${type === 'mysql' ? 'CHAR' : 'TEXT'}) AS n FROM vals WHERE id = 1`);
    expect(row?.n).toBe('12345678901234567890.123456789012345678');
    const [wide] = await targetRows('SELECT wide FROM vals WHERE id = 3');
    expect(wide?.wide).toBe('1234567890123456789012345678901234567890.0123456789012345678901234567890123456789');
  });

  it("keeps a real's extremes (verify equal) and dead-letters a numeric the target would round", async () => {
    const r = await runCli('verify', '-c', configFile, '--json', '--table', 'flt');
    expect(r.code, r.stderr + r.stdout).toBe(0);
    const ids = (await targetRows('SELECT id FROM decs ORDER BY id')).map((row) => Number(row.id));
    if (type === 'sqlite') {
      expect(ids).toEqual([1, 2, 3]);
      return;
    }
    expect(ids).toEqual([1, 3]);
    const [kept] = await targetRows('SELECT CAST(u AS CHAR) AS u FROM decs WHERE id = 1');
    expect(kept?.u).toBe('0.123456789012345678901234567890');
    const list = await runCli('dlq', 'list', '-c', configFile, '--json', '--table', 'decs');
    expect(list.stdout).toContain('column u: 0.1234567890123456789012345678901 has 31 digits after the point');
  }, 60_000);

  it('dead-letters a timestamptz no UTC date-time holds instead of writing NaN', async () => {
    expect(await targetRows('SELECT id, tz FROM far')).toEqual([{ id: 2, tz: '2024-01-01 00:00:00.000000' }]);
    const r = await runCli('dlq', 'list', '-c', configFile, '--json');
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain('SINK_VALUE');
    expect(r.stdout).toContain('column tz: cannot convert \\"294276-12-31');
  });
});

describe('a stored generated column at the source, target made by sink.create_tables', () => {
  const name = uniqueName('syncline_acc2_gen');
  let dir: string;
  let source: pg.Client;
  let configFile: string;
  const ctl = new AbortController();
  let running: Promise<unknown> = Promise.resolve();

  beforeAll(async () => {
    ensureBuilt();
    dir = await mkdtemp(path.join(os.tmpdir(), 'syncline-acc2-gen-'));
    const server = await machinePg15();
    const sourceUrl = await freshDatabase(server, name);
    const targetUrl = await freshDatabase(server, `${name}_t`);
    source = new pg.Client({ connectionString: sourceUrl });
    await source.connect();
    await source.query(`CREATE TABLE g (id int PRIMARY KEY, a int, twice int GENERATED ALWAYS AS (a * 2) STORED);
      INSERT INTO g (id, a) SELECT i, i FROM generate_series(1, 10) i`);
    const yaml = `source:
  url: ${sourceUrl}
  slots: [{ name: ${name}, publication: ${name}_pub, tables: [g] }]
stream: { path: ${path.join(dir, 'stream')}, partitions: 2 }
sink: { url: ${targetUrl}, create_tables: true }
monitoring: { port: ${await freePort()} }
`;
    configFile = path.join(dir, 'sync.yaml');
    await writeFile(configFile, yaml);
    running = runPipeline(parseConfig(yaml), 'run', await testLogger(), ctl.signal);
    running.catch(() => undefined);
    const target = new pg.Client({ connectionString: targetUrl });
    await target.connect();
    try {
      await waitFor('g replicated', async () => Number((await target.query('SELECT count(*) AS n FROM g').catch(() => ({ rows: [{ n: 0 }] }))).rows[0]?.n) === 10, 60_000, 250);
    } finally {
      await target.end();
    }
  }, 120_000);

  afterAll(async () => {
    ctl.abort();
    await running.catch(() => undefined);
    await source?.query('SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1 AND NOT active', [name]).catch(() => undefined);
    await source?.end();
    await drop(name);
    await drop(`${name}_t`);
    if (dir) await rm(dir, { recursive: true, force: true });
  }, 60_000);

  it('verify compares the replicated columns (exit 0), doctor does not ask for the generated one', async () => {
    const v = await runCli('verify', '-c', configFile, '--json');
    expect(v.code, v.stderr).toBe(0);
    const d = await runCli('doctor', '-c', configFile);
    expect(d.stdout).not.toContain('lacks source column');
    expect(d.stdout).toMatch(/ok +sink table public\.g/);
  }, 60_000);
});
