import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ChangeEvent, Row } from '../../src/core/change.js';
import { PostgresSink } from '../../src/sink/postgres/postgres-sink.js';
import { CLI, ensureBuilt } from '../helpers/cli.js';
import { changeAt, tracking } from '../helpers/conflict-fixtures.js';
import { dropDatabases, range, rowsOf } from '../helpers/many-writers.js';
import { freePort, freshDatabase, machinePg15, PG15_URL, secondPg15, uniqueName, waitFor, type PgServer } from '../helpers/postgres.js';

/**
 * Red-team cases (second round) of conflict tracking's record of the target application's own
 * deletes (src/sink/postgres/local-writes.ts), on PostgreSQL 15 without track_commit_timestamp
 * (a delete made at the target has the time of the delete as its clock). Each case: a fresh
 * target database whose tables the sink tracks under last_write_wins (commit time).
 */
const databases: string[] = [];
let serial = 0;

afterAll(async () => {
  if (databases.length > 0) await dropDatabases(PG15_URL, databases);
});

interface Target {
  sink: PostgresSink;
  client: pg.Client;
  url: string;
  warnings: string[];
}

async function target(ddl: string, tables: string[]): Promise<Target> {
  const url = await freshDatabase(await machinePg15(), `red_cf2_${serial++}`);
  databases.push(new URL(url).pathname.slice(1));
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  await client.query(ddl);
  const warnings: string[] = [];
  const sink = new PostgresSink({
    url,
    stateSchema: 'syncline',
    deleteMode: 'hard',
    versionGate: true,
    conflicts: tracking(),
    trackedTables: tables.map((table) => ({ schema: 'public', table })),
    warn: (m) => warnings.push(m),
  });
  await sink.prepare();
  return { sink, client, url, warnings };
}

async function within(ddl: string, tables: string[], fn: (t: Target) => Promise<void>): Promise<void> {
  const t = await target(ddl, tables);
  try {
    await fn(t);
  } finally {
    await t.sink.close();
    await t.client.end();
  }
}

/** Long before any delete the test's application makes (those have the time of the delete as clock). */
const EARLY = (s: number): string => `2026-01-01T00:00:${String(s).padStart(2, '0')}Z`;

const pacc = (lsn: number, s: number, op: ChangeEvent['op'], id: number, v: string, before?: Row): ChangeEvent =>
  changeAt('a', lsn, EARLY(s), op, 'pacc', { id: String(id) }, { id: String(id), v }, before);

const ids = async (t: Target, table: string): Promise<number[]> =>
  (await t.client.query<{ id: number }>(`SELECT id FROM ${pg.escapeIdentifier(table)} ORDER BY id`)).rows.map((r) => r.id);

/** A partitioned target: ids 0..99 in pacc_1, 100..199 in pacc_2. */
const PARTITIONED = `CREATE TABLE pacc (id int PRIMARY KEY, v text) PARTITION BY RANGE (id);
  CREATE TABLE pacc_1 PARTITION OF pacc FOR VALUES FROM (0) TO (100);
  CREATE TABLE pacc_2 PARTITION OF pacc FOR VALUES FROM (100) TO (200)`;

describe('red team 2: deletes made by the application of a partitioned target (PostgreSQL 15)', () => {
  it('a row the application deleted from a partition directly stays deleted when an older write of another side arrives', async () => {
    await within(PARTITIONED, ['pacc'], async (t) => {
      await t.sink.apply([pacc(0x100, 1, 'INSERT', 5, 'a'), pacc(0x110, 1, 'INSERT', 6, 'a')], new Map(), 'ga');
      // The application deletes through the partition, not the partitioned table.
      await t.client.query('DELETE FROM pacc_1 WHERE id = 5');
      // a's update, made (02) before the delete (now) by a writer that had not seen it.
      const late = await t.sink.apply([pacc(0x200, 2, 'UPDATE', 5, 'a2', { id: '5', v: 'a' })], new Map(), 'ga');
      expect(await ids(t, 'pacc')).toEqual([6]);
      expect(late.applied).toBe(0);
    });
  });

  it('a key the application moved to another partition (UPDATE of the partitioned table) is gone for an older write of another side', async () => {
    await within(PARTITIONED, ['pacc'], async (t) => {
      await t.sink.apply([pacc(0x100, 1, 'INSERT', 7, 'a')], new Map(), 'ga');
      // Key 7 becomes 150: the row moves from pacc_1 to pacc_2 (a DELETE and an INSERT inside PostgreSQL).
      await t.client.query('UPDATE pacc SET id = 150 WHERE id = 7');
      await t.sink.apply([pacc(0x200, 2, 'UPDATE', 7, 'a2', { id: '7', v: 'a' })], new Map(), 'ga');
      expect(await ids(t, 'pacc')).toEqual([150]);
    });
  });

  it('deletes through the partitioned table and key changes within a partition are recorded once, and the sink’s own deletes not at all', async () => {
    await within(PARTITIONED, ['pacc'], async (t) => {
      await t.sink.apply([1, 2, 3, 120].map((id, i) => pacc(0x100 + i * 0x10, 1, 'INSERT', id, 'a')), new Map(), 'ga');
      await t.client.query('DELETE FROM pacc WHERE id IN (1, 120)');
      await t.client.query('UPDATE pacc_1 SET id = 4 WHERE id = 2');
      // The sink deletes 3 (a's delete): no tombstone of the local writer.
      await t.sink.apply([pacc(0x300, 3, 'DELETE', 3, 'a')].map((c) => ({ ...c, payload: null })), new Map(), 'ga');
      const { rows } = await t.client.query<{ k: string; source: string }>(`SELECT row_key AS k, source FROM syncline.source_tombstones ORDER BY 1, 2`);
      expect(rows).toEqual([
        { k: '["1"]', source: 'local' },
        { k: '["120"]', source: 'local' },
        { k: '["2"]', source: 'local' },
        { k: '["3"]', source: 'a' },
      ]);
      // A partition attached later is covered too.
      await t.client.query('CREATE TABLE pacc_3 PARTITION OF pacc FOR VALUES FROM (200) TO (300); INSERT INTO pacc VALUES (250, $$x$$); DELETE FROM pacc_3');
      expect((await t.client.query(`SELECT count(*)::int AS n FROM syncline.source_tombstones WHERE row_key = '["250"]'`)).rows[0]?.n).toBe(1);
      expect(t.warnings).toEqual([]);
    });
  });
});

describe('red team 2: a composite key whose column order at the target differs from the source’s', () => {
  // The target's columns are (b, a), the source's key (a, b): the changes' row keys are
  // ["<a>","<b>"], and a tombstone of the application's must be too, also after a restart.
  const DDL = `CREATE TABLE ck (b text, a text, v text, PRIMARY KEY (a, b))`;
  const ck = (lsn: number, s: number, op: ChangeEvent['op'], a: string, b: string, v: string | null, before?: Row): ChangeEvent =>
    changeAt('a', lsn, EARLY(s), op, 'ck', { a, b }, v === null ? null : { a, b, v }, before);

  it('a row the application deleted after the sink restarted stays deleted when an older write of another side arrives', async () => {
    await within(DDL, ['ck'], async (t) => {
      await t.sink.apply([ck(0x100, 1, 'INSERT', 'x', 'y', 'a'), ck(0x110, 1, 'INSERT', 'p', 'q', 'a')], new Map(), 'ga');
      // The sink restarts (its process does): prepare() looks at the tracked table again.
      await t.sink.close();
      t.sink = new PostgresSink({ url: t.url, stateSchema: 'syncline', deleteMode: 'hard', versionGate: true, conflicts: tracking(), trackedTables: [{ schema: 'public', table: 'ck' }] });
      await t.sink.prepare();
      await t.client.query(`DELETE FROM ck WHERE a = 'x'`);
      await t.sink.apply([ck(0x200, 2, 'UPDATE', 'x', 'y', 'a2', { a: 'x', b: 'y', v: 'a' })], new Map(), 'ga');
      expect((await t.client.query<{ a: string }>('SELECT a FROM ck ORDER BY a')).rows).toEqual([{ a: 'p' }]);
    });
  });
});

/** Every order of `lists` that keeps each list's own order (one source's changes arrive in its order). */
function interleavings<X>(lists: X[][]): X[][] {
  if (lists.every((l) => l.length === 0)) return [[]];
  const out: X[][] = [];
  lists.forEach((l, i) => {
    if (l.length === 0) return;
    const rest = lists.map((m, j) => (j === i ? m.slice(1) : m));
    for (const tail of interleavings(rest)) out.push([l[0] as X, ...tail]);
  });
  return out;
}

describe('red team 2: three sources, deletes and updates of one key in every arrival order (last_write_wins on commit time)', () => {
  const k = (source: string, lsn: number, s: number, op: ChangeEvent['op'], v: string | null, before?: string): ChangeEvent =>
    changeAt(source, lsn, EARLY(s), op, 'acc', { id: 'k' }, v === null ? null : { id: 'k', v }, before === undefined ? undefined : { id: 'k', v: before });
  const SCENARIOS: [string, ChangeEvent[][], string[]][] = [
    // a inserts (01) and updates (04); b deletes (02); c updates (03): a's update is last.
    ['a insert 01, b delete 02, c update 03, a update 04', [[k('a', 0x9000000, 1, 'INSERT', 'a1'), k('a', 0x9000010, 4, 'UPDATE', 'a4', 'a1')], [k('b', 0x100, 2, 'DELETE', null, 'a1')], [k('c', 0x5000, 3, 'UPDATE', 'c3', 'a1')]], ['a4']],
    // The delete is last: the key ends deleted.
    ['a insert 01, c update 02, a update 03, b delete 04', [[k('a', 0x9000000, 1, 'INSERT', 'a1'), k('a', 0x9000010, 3, 'UPDATE', 'a3', 'a1')], [k('b', 0x100, 4, 'DELETE', null, 'a3')], [k('c', 0x5000, 2, 'UPDATE', 'c2', 'a1')]], []],
    // Two deletes and an insert in between by clock: c's insert (03) is after a's delete (02), before b's (04).
    ['a insert 01, a delete 02, c insert 03, b delete 04', [[k('a', 0x9000000, 1, 'INSERT', 'a1'), k('a', 0x9000010, 2, 'DELETE', null, 'a1')], [k('b', 0x100, 4, 'DELETE', null, 'c3')], [k('c', 0x5000, 3, 'INSERT', 'c3')]], []],
    // The same, b's delete (02) before c's insert (04): c's row stays.
    ['a insert 01, b delete 02, a delete 03, c insert 04', [[k('a', 0x9000000, 1, 'INSERT', 'a1'), k('a', 0x9000010, 3, 'DELETE', null, 'a1')], [k('b', 0x100, 2, 'DELETE', null, 'a1')], [k('c', 0x5000, 4, 'INSERT', 'c4')]], ['c4']],
  ];
  for (const [name, lists, expected] of SCENARIOS) {
    it(`${name}: the same end in every order, and replays change nothing`, async () => {
      const orders = interleavings(lists);
      const t = await target(`CREATE TABLE acc (id text PRIMARY KEY, v text)`, ['acc']);
      try {
        const ends: string[] = [];
        for (const order of orders) {
          await t.client.query(`SET syncline.applying = 'on'; TRUNCATE acc; TRUNCATE syncline.source_tombstones, syncline.source_truncations, syncline.conflicts; RESET syncline.applying`);
          for (const change of order) await t.sink.apply([change], new Map(), `g${change.source}`);
          for (const change of order) await t.sink.apply([change], new Map(), `g${change.source}`);
          const rows = (await t.client.query<{ v: string }>('SELECT v FROM acc')).rows.map((r) => r.v);
          ends.push(`${order.map((c) => `${c.source}${c.op[0]}${c.commit_ts.slice(-3, -1)}`).join(' ')} -> ${JSON.stringify(rows)}`);
        }
        expect(ends).toEqual(orders.map((order) => `${order.map((c) => `${c.source}${c.op[0]}${c.commit_ts.slice(-3, -1)}`).join(' ')} -> ${JSON.stringify(expected)}`));
      } finally {
        await t.sink.close();
        await t.client.end();
      }
    });
  }
});

type SideName = 'a' | 'b';

/**
 * Active-active between two PostgreSQL 15 clusters (track_commit_timestamp on), each direction
 * a `syncline run` process killed with SIGKILL, with another mix than active-active-deletes:
 * a partitioned table at both sides, last_write_wins on commit time (no lww_column, no delta
 * columns), and applications that delete through a partition, delete with RETURNING, move
 * their own keys to another partition, re-insert with MERGE and INSERT ... ON CONFLICT, and
 * roll back a transaction that deleted every row. Afterwards both sides are identical, each
 * side's own rows are as its application left them, nothing is dead-lettered, no statement of
 * an application failed (deadlocks with the sink retried), and traffic stops.
 */
describe('red team 2: active-active on a partitioned table with another workload (two PostgreSQL 15 clusters, syncline run, kill -9)', () => {
  let servers: PgServer[] = [];
  let dir: string;
  const urls: Record<SideName, string> = { a: '', b: '' };
  const names = { a: uniqueName('rcf2_a'), b: uniqueName('rcf2_b') };
  const ports: Record<SideName, number> = { a: 0, b: 0 };
  const children = new Map<SideName, ChildProcess>();
  const logs = new Map<SideName, string>();
  let runs = 0;
  const ROWS = 'SELECT id, v FROM items ORDER BY id';
  /** Own keys: a's 21..30, b's 31..40; shared 1..20. */
  const OWN: Record<SideName, number[]> = { a: range(21, 30), b: range(31, 40) };

  beforeAll(async () => {
    ensureBuilt();
    servers = await Promise.all([secondPg15(['track_commit_timestamp=on']), secondPg15(['track_commit_timestamp=on'])]);
    dir = await mkdtemp(path.join(os.tmpdir(), 'syncline-rcf2-'));
    for (const [side, server] of [['a', servers[0]], ['b', servers[1]]] as const) {
      const admin = new pg.Client({ connectionString: (server as PgServer).url('postgres') });
      await admin.connect();
      await admin.query(`CREATE DATABASE ${pg.escapeIdentifier(names[side])}`);
      await admin.end();
      urls[side] = (server as PgServer).url(names[side]);
      const c = new pg.Client({ connectionString: urls[side] });
      await c.connect();
      await c.query(`CREATE TABLE items (id int PRIMARY KEY, v text NOT NULL) PARTITION BY RANGE (id);
                     CREATE TABLE items_low PARTITION OF items FOR VALUES FROM (0) TO (100);
                     CREATE TABLE items_high PARTITION OF items FOR VALUES FROM (100) TO (1000);
                     INSERT INTO items SELECT g, 'seed' FROM generate_series(1, 40) g`);
      await c.end();
      ports[side] = await freePort();
    }
    for (const [from, to] of [['a', 'b'], ['b', 'a']] as const) {
      await writeFile(
        path.join(dir, `${from}.yaml`),
        `source:
  name: ${names[from]}
  url: ${urls[from]}
  slots: [{ name: ${names[from]}_slot, publication: ${names[from]}_pub, tables: [items] }]
  skip_origins: true
  heartbeat_interval_ms: 1000
  snapshot: never
stream: { broker: embedded, path: ${path.join(dir, `stream-${from}`)}, partitions: 3 }
consumer: { group_id: ${names[from]}, batch_wait_ms: 5, retry: { backoff_base_ms: 10, backoff_max_ms: 200 } }
sink:
  type: postgres
  url: ${urls[to]}
  origin: from_${names[from]}
  local_source: ${names[to]}
  conflict_strategy: last_write_wins
dead_letter: { url: ${urls[to]} }
monitoring: { enabled: true, port: ${ports[from]} }
`,
      );
    }
  }, 120_000);

  afterAll(async () => {
    for (const child of children.values()) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    if (process.env.SYNCLINE_TEST_KEEP) return;
    for (const s of servers) await s.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  }, 60_000);

  function start(side: SideName): void {
    const file = path.join(dir, `run-${side}-${runs++}.log`);
    logs.set(side, file);
    const log = createWriteStream(file);
    const child = spawn(process.execPath, [CLI, 'run', '-c', path.join(dir, `${side}.yaml`)], { stdio: ['ignore', 'pipe', 'pipe'] });
    child.stdout?.pipe(log);
    child.stderr?.pipe(log);
    children.set(side, child);
  }

  async function kill(side: SideName): Promise<void> {
    const child = children.get(side);
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise((r) => child.once('exit', r));
    child.kill('SIGKILL');
    await exited;
  }

  async function traffic(side: SideName): Promise<number | undefined> {
    try {
      const text = await (await fetch(`http://127.0.0.1:${ports[side]}/metrics`)).text();
      let n = 0;
      for (const m of text.matchAll(/^sync_events_(?:captured|applied)_total\{[^}]*\} (\d+)/gm)) n += Number(m[1]);
      return n;
    } catch {
      return undefined;
    }
  }

  const streaming = async (side: SideName): Promise<boolean> => (await readFile(logs.get(side) as string, 'utf8').catch(() => '')).includes('pgoutput protocol negotiated');

  it('converges: identical rows, own rows as their application left them, no dead letter, no failed application statement, no loop', async () => {
    start('a');
    start('b');
    await waitFor('both captures streaming', async () => (await streaming('a')) && (await streaming('b')), 60_000, 200);
    for (const side of ['a', 'b'] as const) {
      await waitFor(`triggers at ${side}`, async () => (await rowsOf(urls[side], `SELECT count(*)::int AS n FROM pg_trigger WHERE tgrelid = 'items'::regclass AND tgname LIKE 'syncline_local_%'`)) === '[{"n":7}]', 30_000, 100);
    }
    const ROUNDS = 24;
    const warnings: Record<SideName, string[]> = { a: [], b: [] };
    const workload = async (side: SideName, afterRound: (round: number) => Promise<void>): Promise<Map<number, string>> => {
      const own = new Map<number, string>(OWN[side].map((id) => [id, 'seed']));
      const c = new pg.Client({ connectionString: urls[side] });
      await c.connect();
      c.on('notice', (n) => {
        // The triggers' own warnings (a delete they could not record).
        if (n.message?.startsWith('syncline')) warnings[side].push(n.message);
      });
      const retrying = async (sql: string, params: unknown[] = []): Promise<pg.QueryResult> => {
        for (;;) {
          try {
            return await c.query(sql, params);
          } catch (err) {
            // A deadlock with the sink; MERGE's insert racing the sink's insert of the key (MERGE
            // is not safe against a concurrent insert, syncline or not): the application retries.
            const code = (err as { code?: string }).code;
            if (code !== '40P01' && !(code === '23505' && sql.startsWith('MERGE'))) throw err;
            await c.query('ROLLBACK').catch(() => undefined);
          }
        }
      };
      try {
        for (let r = 0; r < ROUNDS; r++) {
          const v = `${side}-${r}`;
          const shared = range(1, 20).filter((id) => (id + r) % 3 !== 0);
          const ownNow = [...own.keys()].filter((id) => (id + r) % 2 === 0);
          await retrying(`UPDATE items SET v = $1 WHERE id = ANY($2::int[])`, [v, [...shared, ...ownNow]]);
          for (const id of ownNow) own.set(id, v);
          // A shared key deleted through its partition, with RETURNING.
          await retrying(`DELETE FROM items_low WHERE id = $1 RETURNING id, v`, [((r * 7 + (side === 'a' ? 0 : 3)) % 20) + 1]);
          // An own key moved to the other partition (rounds 4..13, one key each).
          if (r >= 4 && r < 14) {
            const id = OWN[side][r - 4] as number;
            if (own.has(id)) {
              await retrying(`UPDATE items SET id = id + 100 WHERE id = $1`, [id]);
              own.set(id + 100, own.get(id) as string);
              own.delete(id);
            }
          }
          // Shared keys deleted before come back: with MERGE on even rounds, INSERT ... ON CONFLICT on odd ones.
          const back = range(1, 20).filter((id) => (id + r) % 5 === 0);
          if (r % 2 === 0) {
            await retrying(`MERGE INTO items t USING unnest($2::int[]) s(id) ON t.id = s.id WHEN MATCHED THEN UPDATE SET v = $1 WHEN NOT MATCHED THEN INSERT VALUES (s.id, $1)`, [`${v}-merge`, back]);
          } else {
            await retrying(`INSERT INTO items SELECT g, $1 FROM unnest($2::int[]) g ON CONFLICT (id) DO UPDATE SET v = EXCLUDED.v`, [`${v}-upsert`, back]);
          }
          // A transaction that deletes every row and truncates, then rolls back: nothing happened.
          if (r % 6 === 5) await retrying(`BEGIN; DELETE FROM items; SAVEPOINT s; DELETE FROM items_high; ROLLBACK TO s; ROLLBACK`);
          await afterRound(r);
        }
      } finally {
        await c.end();
      }
      return own;
    };
    const pause = (): Promise<void> => new Promise((resolve) => setTimeout(resolve, 50));
    const [ownA, ownB] = await Promise.all([
      workload('a', async (r) => {
        if (r === 7 || r === 18) {
          await kill('a');
          start('a');
        }
        await pause();
      }),
      workload('b', async (r) => {
        if (r === 12) {
          await kill('b');
          start('b');
        }
        await pause();
      }),
    ]);
    let last = '';
    await waitFor(
      'both databases identical',
      async () => {
        const [ra, rb] = [await rowsOf(urls.a, ROWS), await rowsOf(urls.b, ROWS)];
        last = `a: ${ra}\nb: ${rb}`;
        return ra === rb;
      },
      60_000,
      250,
      () => last,
    );
    const rows = JSON.parse(await rowsOf(urls.a, ROWS)) as { id: number; v: string }[];
    const ownRows = (own: Map<number, string>): { id: number; v: string }[] => [...own].map(([id, v]) => ({ id, v })).sort((x, y) => x.id - y.id);
    expect(rows.filter((r) => (r.id > 20 && r.id <= 30) || (r.id > 120 && r.id <= 130))).toEqual(ownRows(ownA));
    expect(rows.filter((r) => (r.id > 30 && r.id <= 40) || (r.id > 130 && r.id <= 140))).toEqual(ownRows(ownB));
    expect(rows.every((r) => r.id <= 40 || (r.id > 120 && r.id <= 140))).toBe(true);
    for (const s of ['a', 'b'] as const) {
      expect(await rowsOf(urls[s], 'SELECT count(*)::int AS n FROM syncline.dead_letter')).toBe('[{"n":0}]');
      expect(warnings[s]).toEqual([]);
      // Every own key moved was recorded as this side's delete (through the partitioned table's row trigger).
      const moved = JSON.parse(await rowsOf(urls[s], `SELECT count(*)::int AS n FROM syncline.source_tombstones WHERE source = '${names[s]}' AND row_key::jsonb->>0 IN (SELECT g::text FROM generate_series(${s === 'a' ? 21 : 31}, ${s === 'a' ? 30 : 40}) g)`)) as { n: number }[];
      expect(moved[0]?.n).toBe(10);
    }
    await waitFor('metrics of both pipelines', async () => (await traffic('a')) !== undefined && (await traffic('b')) !== undefined, 30_000, 200);
    let before: [number | undefined, number | undefined] = [undefined, undefined];
    await waitFor(
      'traffic stops',
      async () => {
        const now: [number | undefined, number | undefined] = [await traffic('a'), await traffic('b')];
        const still = now[0] === before[0] && now[1] === before[1];
        before = now;
        return still;
      },
      30_000,
      2000,
    );
  }, 240_000);
});

describe('red team 2: key columns of many types and odd names', () => {
  it('a row the application deleted stays deleted for an older write of another side, whatever the key’s types (the tombstone’s key is the change’s)', async () => {
    const DDL = `CREATE TABLE odd ("o" timestamptz, "we""ird key" text, "tb" numeric, f float8, b bytea, u uuid, flag boolean, arr int[], v text,
                   PRIMARY KEY ("o", "we""ird key", "tb", f, b, u, flag, arr));
                 SET timezone = 'America/New_York'; SET datestyle = 'SQL, DMY'; SET extra_float_digits = 0; SET bytea_output = 'escape';`;
    await within(DDL, ['odd'], async (t) => {
      // The key's values as capture sends them (its output settings: UTC, ISO, extra_float_digits 3, hex).
      const { rows } = await t.client.query<Row>(`SET timezone = 'UTC'; SET datestyle = 'ISO'; SET extra_float_digits = 3; SET bytea_output = 'hex';
        SELECT '2026-03-01 12:34:56.789+02'::timestamptz::text AS "o", E'line\\n"quoted" \\\\ é ☃' AS "we""ird key", '1.50'::numeric::text AS "tb",
               (0.1::float8 + 0.2)::text AS f, '\\xdeadbeef'::bytea::text AS b, 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'::uuid::text AS u, true::text AS flag, '{1,2,3}'::int[]::text AS arr`).then((r) => (r as unknown as pg.QueryResult[])[4] as pg.QueryResult<Row>);
      const key = rows[0] as Row;
      await t.client.query(`RESET ALL`);
      const at = (lsn: number, s: number, op: ChangeEvent['op'], v: string, before?: Row): ChangeEvent => changeAt('a', lsn, EARLY(s), op, 'odd', key, { ...key, v }, before);
      await t.sink.apply([at(0x100, 1, 'INSERT', 'a')], new Map(), 'ga');
      expect((await t.client.query('SELECT v FROM odd')).rows).toEqual([{ v: 'a' }]);
      // The application's session has other output settings than capture's.
      await t.client.query(`SET timezone = 'Asia/Tokyo'; SET datestyle = 'German'; SET extra_float_digits = 0; SET bytea_output = 'escape'; DELETE FROM odd`);
      await t.sink.apply([at(0x200, 2, 'UPDATE', 'a2', { ...key, v: 'a' })], new Map(), 'ga');
      expect((await t.client.query('SELECT v FROM odd')).rows).toEqual([]);
      expect(t.warnings).toEqual([]);
    });
  });
});
