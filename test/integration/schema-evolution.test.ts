/**
 * sink.schema_evolution end to end: `syncline run` (built CLI, embedded stream) from
 * PostgreSQL 15 to a postgres, mysql (MariaDB) and sqlite target, one process per mode, while
 * the source adds a column, drops one, renames one and widens int4 → int8, with a kill -9 of
 * every process in between. Each mode's source table is its own (`ev_<mode>`), beside a
 * `steady` table that must always flow:
 * - full (drop_columns: drop): the target ends with exactly the source's columns and rows
 *   (postgres: types too); its ev_full target does not exist at first and is created;
 * - add_columns: the added column is added and the rename renamed; the dropped column stays;
 * - none: the table is held (TABLE_BLOCKED, SCHEMA_MISMATCH in the reason) from the added
 *   column on, and `steady` still flows.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import Database from 'better-sqlite3';
import type mysql from 'mysql2/promise';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLI, ensureBuilt } from '../helpers/cli.js';
import { MYSQL_ADMIN_URL, mysqlAdmin } from '../helpers/mysql.js';
import { freshDatabase, machinePg15, slotStreaming, uniqueName, waitFor } from '../helpers/postgres.js';

type SinkType = 'postgres' | 'mysql' | 'sqlite';
type Mode = 'full' | 'add_columns' | 'none';
const MODES: readonly Mode[] = ['full', 'add_columns', 'none'];
const short = (m: Mode): string => (m === 'add_columns' ? 'add' : m);

/** Data columns of a target table (syncline's own left out), name → type as the target prints it. */
type Columns = Record<string, string>;

interface Target {
  url: string;
  columns(table: string): Promise<Columns>;
  /** Rows as text, by id: the columns asked for (absent ones null). */
  rows(table: string, columns: readonly string[]): Promise<string[][]>;
  close(): Promise<void>;
}

const OWN = /^(_syncline_|_deleted_at$)/;

async function pgTarget(url: string): Promise<Target> {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  return {
    url,
    async columns(table) {
      const { rows } = await c.query<{ name: string; type: string }>(
        `SELECT attname AS name, format_type(atttypid, atttypmod) AS type FROM pg_attribute
          WHERE attrelid = to_regclass($1) AND attnum > 0 AND NOT attisdropped`,
        [pg.escapeIdentifier(table)],
      );
      return Object.fromEntries(rows.filter((r) => !OWN.test(r.name)).map((r) => [r.name, r.type]));
    },
    async rows(table, columns) {
      const { rows } = await c.query({ text: `SELECT ${columns.map((col) => `${pg.escapeIdentifier(col)}::text`).join(', ')} FROM ${pg.escapeIdentifier(table)} t ORDER BY t.id`, rowMode: 'array' });
      return rows as string[][];
    },
    close: () => c.end(),
  };
}

async function mysqlTarget(database: string, admin: mysql.Connection): Promise<Target> {
  return {
    url: MYSQL_ADMIN_URL.replace(/\/[^/]*$/, `/${database}`),
    async columns(table) {
      const [rows] = await admin.query<mysql.RowDataPacket[]>('SELECT COLUMN_NAME AS name, COLUMN_TYPE AS type FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?', [database, table]);
      return Object.fromEntries(rows.filter((r) => !OWN.test(r.name as string)).map((r) => [r.name as string, (r.type as string).replace(/^(int|bigint)\(\d+\)/, '$1')]));
    },
    async rows(table, columns) {
      const [rows] = await admin.query<mysql.RowDataPacket[]>({
        sql: `SELECT ${columns.map((col) => `CAST(\`${col}\` AS CHAR)`).join(', ')} FROM \`${database}\`.\`${table}\` ORDER BY id`,
        rowsAsArray: true,
      });
      return rows as unknown as string[][];
    },
    close: async () => undefined,
  };
}

function sqliteTarget(file: string): Target {
  const read = <T>(fn: (db: Database.Database) => T): T => {
    const db = new Database(file, { readonly: true, fileMustExist: true });
    try {
      return fn(db);
    } finally {
      db.close();
    }
  };
  return {
    url: `sqlite://${file}`,
    async columns(table) {
      const rows = read((db) => db.prepare('SELECT name, type FROM pragma_table_info(?)').all(table) as { name: string; type: string }[]);
      return Object.fromEntries(rows.filter((r) => !OWN.test(r.name)).map((r) => [r.name, r.type]));
    },
    async rows(table, columns) {
      return read((db) => db.prepare(`SELECT ${columns.map((col) => `CAST("${col}" AS TEXT)`).join(', ')} FROM "${table}" ORDER BY id`).raw().all() as string[][]);
    },
    close: async () => undefined,
  };
}

const TARGET_DDL: Record<SinkType, (table: string) => string> = {
  postgres: (t) => `CREATE TABLE ${t} (id integer PRIMARY KEY, v integer NOT NULL, note text, legacy text)`,
  mysql: (t) => `CREATE TABLE ${t} (id INT PRIMARY KEY, v INT NOT NULL, note LONGTEXT, legacy LONGTEXT)`,
  sqlite: (t) => `CREATE TABLE ${t} (id INTEGER PRIMARY KEY, v INTEGER NOT NULL, note TEXT, legacy TEXT)`,
};

describe.each<SinkType>(['postgres', 'mysql', 'sqlite'])('sink.schema_evolution, PostgreSQL 15 → %s, kill -9 mid-stream', (sinkType) => {
  const base = `sl_evolve_${sinkType.slice(0, 2)}`;
  const slots = Object.fromEntries(MODES.map((m) => [m, uniqueName(`${base}_${short(m)}`)])) as Record<Mode, string>;
  let dir: string;
  let sourceUrl: string;
  let source: pg.Client;
  let admin: mysql.Connection | undefined;
  const targets = {} as Record<Mode, Target>;
  const children = new Map<Mode, ChildProcess>();
  let runs = 0;

  beforeAll(async () => {
    ensureBuilt();
    const server = await machinePg15();
    dir = await mkdtemp(path.join(os.tmpdir(), 'syncline-evolve-'));
    sourceUrl = await freshDatabase(server, `${base}_source`);
    source = new pg.Client({ connectionString: sourceUrl });
    await source.connect();
    for (const m of MODES) await source.query(`CREATE TABLE ev_${short(m)} (id integer PRIMARY KEY, v integer NOT NULL, note text, legacy text)`);
    await source.query('CREATE TABLE steady (id integer PRIMARY KEY, v integer NOT NULL)');
    if (sinkType === 'mysql') admin = await mysqlAdmin();
    for (const m of MODES) {
      const table = `ev_${short(m)}`;
      // full creates its missing table from the source's definition.
      if (sinkType === 'postgres') {
        const url = await freshDatabase(server, `${base}_${short(m)}_target`);
        targets[m] = await pgTarget(url);
        const c = new pg.Client({ connectionString: url });
        await c.connect();
        if (m !== 'full') await c.query(TARGET_DDL.postgres(table));
        await c.query('CREATE TABLE steady (id integer PRIMARY KEY, v integer NOT NULL)');
        await c.end();
      } else if (sinkType === 'mysql' && admin) {
        const db = uniqueName(`${base}_${short(m)}_t`);
        await admin.query(`DROP DATABASE IF EXISTS \`${db}\``);
        await admin.query(`CREATE DATABASE \`${db}\``);
        if (m !== 'full') await admin.query(`CREATE TABLE \`${db}\`.${table} ${TARGET_DDL.mysql(table).slice(`CREATE TABLE ${table} `.length)}`);
        await admin.query(`CREATE TABLE \`${db}\`.steady (id INT PRIMARY KEY, v INT NOT NULL)`);
        targets[m] = await mysqlTarget(db, admin);
      } else {
        const file = path.join(dir, `${short(m)}.db`);
        const db = new Database(file);
        db.exec(`${m === 'full' ? '' : `${TARGET_DDL.sqlite(table)};`} CREATE TABLE steady (id INTEGER PRIMARY KEY, v INTEGER NOT NULL)`);
        db.close();
        targets[m] = sqliteTarget(file);
      }
      await writeFile(
        path.join(dir, `${m}.yaml`),
        `source:
  url: ${sourceUrl}
  slots:
    - name: ${slots[m]}
      publication: ${slots[m]}_pub
      tables: ['public.${table}', 'public.steady']
stream:
  broker: embedded
  path: ${path.join(dir, `stream-${m}`)}
  partitions: 2
consumer:
  group_id: evolve_${m}
  batch_size: 200
  retry: { backoff_base_ms: 50, backoff_max_ms: 500, held_table_interval_ms: 500 }
sink:
  type: ${sinkType}
  url: ${targets[m].url}
  state_schema: sl_${short(m)}
  schema_evolution: ${m}
  drop_columns: ${m === 'full' ? 'drop' : 'keep'}
dead_letter:
  url: ${sourceUrl}
monitoring: { enabled: false }
`,
      );
    }
  }, 120_000);

  afterAll(async () => {
    for (const child of children.values()) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    for (const t of Object.values(targets)) await t.close();
    await admin?.end();
    await source?.end();
    if (dir && !process.env.SYNCLINE_TEST_KEEP) await rm(dir, { recursive: true, force: true });
  });

  function start(m: Mode): void {
    const log = createWriteStream(path.join(dir, `run-${m}-${runs++}.log`));
    const child = spawn(process.execPath, [CLI, 'run', '-c', path.join(dir, `${m}.yaml`)], { stdio: ['ignore', 'pipe', 'pipe'] });
    child.stdout?.pipe(log);
    child.stderr?.pipe(log);
    children.set(m, child);
  }

  async function killAll(signal: NodeJS.Signals): Promise<void> {
    await Promise.all(
      [...children.values()].map(async (child) => {
        if (child.exitCode !== null || child.signalCode !== null) return;
        const exited = new Promise((r) => child.once('exit', r));
        child.kill(signal);
        await exited;
      }),
    );
  }

  /** Every slot's capture recorded definition `version` of its table (so the next DDL comes after it). */
  async function recorded(version: number): Promise<void> {
    await waitFor(
      `_schema_version ${version} recorded`,
      async () => {
        const { rows } = await source
          .query<{ n: number }>(
            `SELECT count(*)::int AS n FROM syncline.schema_versions WHERE version = $1 AND columns IS NOT NULL AND table_name LIKE 'ev\\_%' AND slot_name = ANY($2)`,
            [version, Object.values(slots)],
          )
          .catch(() => ({ rows: [] })); // not created yet
        return rows[0]?.n === MODES.length;
      },
      60_000,
      200,
    );
  }

  /** Some transactions on every table; `values` spells ev_* column values for a row id. */
  async function dml(from: number, to: number, columns: string, values: (table: string) => string): Promise<void> {
    for (let id = from; id <= to; id += 10) {
      const last = Math.min(id + 9, to);
      await source.query('BEGIN');
      for (const m of MODES) {
        const t = `ev_${short(m)}`;
        await source.query(`INSERT INTO ${t} (${columns}) SELECT ${values(t)} FROM generate_series(${id}, ${last}) g`);
      }
      await source.query(`INSERT INTO steady SELECT g, g FROM generate_series(${id}, ${last}) g`);
      await source.query(`UPDATE steady SET v = v + 1 WHERE id % 7 = ${id % 7}`);
      await source.query('COMMIT');
    }
  }

  const streaming = (): Promise<void> =>
    waitFor('every slot streaming', async () => {
      for (const s of Object.values(slots)) if (!(await slotStreaming(source, s))) return false;
      return true;
    }, 60_000, 200);

  it('adds, drops, renames and widens at the target as each mode promises; none holds only its table', async () => {
    for (const m of MODES) start(m);
    await streaming();
    await dml(1, 100, 'id, v, note, legacy', () => `g, g, 'n' || g, 'l' || g`);
    await recorded(1);

    // 1. ADD COLUMN, then a kill -9 of every process with changes waiting in the slots.
    for (const m of MODES) await source.query(`ALTER TABLE ev_${short(m)} ADD COLUMN added numeric(12,2)`);
    await dml(101, 150, 'id, v, note, legacy, added', () => `g, g, 'n' || g, 'l' || g, g + 0.25`);
    for (const m of MODES) await source.query(`UPDATE ev_${short(m)} SET added = id + 0.75 WHERE id <= 20`);
    await recorded(2);
    await killAll('SIGKILL');
    await dml(151, 170, 'id, v, note, legacy, added', () => `g, g, 'n' || g, 'l' || g, g + 0.25`);
    for (const m of MODES) start(m);
    await streaming();

    // 2. DROP COLUMN.
    for (const m of MODES) await source.query(`ALTER TABLE ev_${short(m)} DROP COLUMN legacy`);
    await dml(171, 200, 'id, v, note, added', () => `g, g, 'n' || g, g + 0.25`);
    await recorded(3);

    // 3. RENAME COLUMN.
    for (const m of MODES) await source.query(`ALTER TABLE ev_${short(m)} RENAME COLUMN note TO remark`);
    await dml(201, 230, 'id, v, remark, added', () => `g, g, 'r' || g, g + 0.25`);
    for (const m of MODES) await source.query(`UPDATE ev_${short(m)} SET remark = 'renamed ' || id WHERE id <= 10`);
    await recorded(4);

    // 4. int4 → int8, and (ev_full only) values only the wider type holds.
    for (const m of MODES) await source.query(`ALTER TABLE ev_${short(m)} ALTER COLUMN v TYPE bigint`);
    await dml(231, 260, 'id, v, remark, added', (t) => (t === 'ev_full' ? `g, g + 3000000000, 'r' || g, g + 0.25` : `g, g, 'r' || g, g + 0.25`));
    for (const m of MODES) await source.query(`DELETE FROM ev_${short(m)} WHERE id % 13 = 0`);
    await recorded(5);

    const sourceRows = async (table: string, columns: readonly string[]): Promise<string[][]> =>
      (await source.query({ text: `SELECT ${columns.map((c) => `${c}::text`).join(', ')} FROM ${table} ORDER BY ${table}.id`, rowMode: 'array' })).rows as string[][];
    const converged = async (m: Mode, table: string, columns: readonly string[]): Promise<void> => {
      let last = '';
      await waitFor(
        `${sinkType} ${m}: ${table} equals the source`,
        async () => {
          try {
            const [s, t] = [await sourceRows(table, columns), await targets[m].rows(table, columns)];
            last = JSON.stringify({ source: s.length, target: t.length, first: t.find((r, i) => JSON.stringify(r) !== JSON.stringify(s[i])), want: s.find((r, i) => JSON.stringify(r) !== JSON.stringify(t[i])) });
            return JSON.stringify(s) === JSON.stringify(t);
          } catch (err) {
            last = (err as Error).message;
            return false;
          }
        },
        120_000,
        500,
      ).catch((err: unknown) => {
        throw new Error(`${(err as Error).message}: ${last}`);
      });
    };

    // full: every change followed, rows and columns equal.
    await converged('full', 'ev_full', ['id', 'v', 'remark', 'added']);
    const full = await targets.full.columns('ev_full');
    expect(Object.keys(full).sort()).toEqual(['added', 'id', 'remark', 'v']);
    if (sinkType === 'postgres') expect(full).toEqual({ id: 'integer', v: 'bigint', remark: 'text', added: 'numeric(12,2)' });
    if (sinkType === 'mysql') expect(full).toMatchObject({ v: 'bigint', added: 'decimal(12,2)' });

    // add_columns: the added column added, the rename renamed, the dropped column kept.
    await converged('add_columns', 'ev_add', ['id', 'v', 'remark', 'added']);
    expect(Object.keys(await targets.add_columns.columns('ev_add')).sort()).toEqual(['added', 'id', 'legacy', 'remark', 'v']);

    // none: held with SCHEMA_MISMATCH from the first change carrying `added`; steady flows.
    for (const m of MODES) await converged(m, 'steady', ['id', 'v']);
    const { rows: held } = await source.query<{ n: number; reason: string }>(
      `SELECT count(*)::int AS n, min(error) AS reason FROM sl_none.dead_letter WHERE error_code = 'TABLE_BLOCKED' AND table_name = 'public.ev_none'`,
    );
    expect(held[0]?.n).toBeGreaterThan(0);
    expect(held[0]?.reason).toContain('SCHEMA_MISMATCH');
    expect(Object.keys(await targets.none.columns('ev_none')).sort()).toEqual(['id', 'legacy', 'note', 'v']);
    // Nothing from the added column on was applied (changes before it may wait with them, in order).
    expect((await targets.none.rows('ev_none', ['id'])).every(([id]) => Number(id) <= 100)).toBe(true);
    const { rows: others } = await source.query<{ n: number }>(`SELECT count(*)::int AS n FROM sl_full.dead_letter UNION ALL SELECT count(*)::int FROM sl_add.dead_letter`);
    expect(others.map((r) => r.n)).toEqual([0, 0]);

    await killAll('SIGTERM');
  }, 400_000);
});
