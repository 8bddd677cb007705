import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ChangeEvent, Row } from '../../src/core/change.js';
import { PostgresSink } from '../../src/sink/postgres/postgres-sink.js';
import { changeAt, tracking } from '../helpers/conflict-fixtures.js';
import { installV1Reference, localTombstones, localTruncations, v1Function, v1Triggers } from '../helpers/local-writes-v1.js';
import { dropDatabases } from '../helpers/many-writers.js';
import { embeddedPg17, freshDatabase, machinePg15, PG15_URL, type PgServer } from '../helpers/postgres.js';

/**
 * The postgres sink's record of the target application's own deletes, key changes and
 * truncations (src/sink/postgres/local-writes.ts), per statement from transition tables, on
 * PostgreSQL 15 and 17. Red team: each case runs the application's statements with the
 * previous version's per-row triggers installed beside the sink's (test/helpers/local-writes-v1.ts,
 * recording into schema `ref`), and the two records must be equal, or differ as the case
 * says (and the README explains).
 */
const SERVERS: [string, () => Promise<PgServer>][] = [
  ['PostgreSQL 15', machinePg15],
  ['PostgreSQL 17', () => embeddedPg17('replica')],
];

const TABLES = `
  CREATE TABLE acc (id int PRIMARY KEY, v text, n bigint);
  CREATE TABLE pacc (id int PRIMARY KEY, v text) PARTITION BY RANGE (id);
  CREATE TABLE pacc_1 PARTITION OF pacc FOR VALUES FROM (0) TO (100);
  CREATE TABLE pacc_2 PARTITION OF pacc FOR VALUES FROM (100) TO (300) PARTITION BY RANGE (id);
  CREATE TABLE pacc_2a PARTITION OF pacc_2 FOR VALUES FROM (100) TO (200);
  CREATE TABLE pacc_2b PARTITION OF pacc_2 FOR VALUES FROM (200) TO (300);
  CREATE TABLE par (id int PRIMARY KEY);
  CREATE TABLE kid (p int REFERENCES par ON DELETE CASCADE ON UPDATE CASCADE, id int, v text, PRIMARY KEY (p, id));
  CREATE TABLE nkey (k numeric PRIMARY KEY, v text);
  CREATE TABLE shift (id int PRIMARY KEY, v text)`;
const TRACKED = ['acc', 'pacc', 'kid', 'nkey', 'shift'];
const V1 = [
  { qualified: 'public.acc', label: 'public.acc', keys: ['id'], counters: ['n'] },
  { qualified: 'public.pacc', label: 'public.pacc', keys: ['id'], partitioned: true },
  { qualified: 'public.kid', label: 'public.kid', keys: ['p', 'id'] },
  { qualified: 'public.nkey', label: 'public.nkey', keys: ['k'] },
  { qualified: 'public.shift', label: 'public.shift', keys: ['id'] },
];

const ts = (s: number): string => `2026-01-01T00:00:${String(s).padStart(2, '0')}Z`;

describe.each(SERVERS)('the application’s deletes, key changes and truncations, per statement (%s)', (_name, start) => {
  let server: PgServer;
  let url: string;
  let sink: PostgresSink;
  let app: pg.Client;
  let lsn = 0x1000;
  const warnings: string[] = [];
  const databases: string[] = [];

  beforeAll(async () => {
    server = await start();
    url = await freshDatabase(server, 'local_writes');
    databases.push(new URL(url).pathname.slice(1));
    app = new pg.Client({ connectionString: url });
    await app.connect();
    app.on('notice', (n) => {
      if (n.message?.startsWith('syncline')) warnings.push(n.message);
    });
    await app.query(TABLES);
    sink = new PostgresSink({
      url,
      stateSchema: 'syncline',
      deleteMode: 'hard',
      versionGate: true,
      conflicts: tracking(undefined, [['public.acc', ['n']]]),
      trackedTables: TRACKED.map((table) => ({ schema: 'public', table })),
    });
    await sink.prepare();
    await installV1Reference(app, V1);
  }, 120_000);

  afterAll(async () => {
    await sink?.close();
    await app?.end();
    if (server?.name === 'pg15') await dropDatabases(PG15_URL, databases);
    else await server?.stop();
  }, 60_000);

  const insert = (table: string, key: Row, row: Row): ChangeEvent => changeAt('a', (lsn += 0x10), ts(1), 'INSERT', table, key, row);

  /** Empties every table and record (unrecorded), then seeds rows: some written by the sink (their version is kept with a tombstone), some by the application. */
  async function reset(): Promise<void> {
    lsn = 0x1000;
    await app.query(`BEGIN; SET LOCAL syncline.applying = 'on';
      TRUNCATE acc, pacc, kid, par, nkey, shift, syncline.source_tombstones, syncline.source_truncations, ref.source_tombstones, ref.source_truncations; COMMIT`);
    await sink.apply(
      [
        ...[1, 2, 3, 4, 5].map((id) => insert('acc', { id: String(id) }, { id: String(id), v: 'sink', n: String(id) })),
        ...[1, 150].map((id) => insert('pacc', { id: String(id) }, { id: String(id), v: 'sink' })),
      ],
      new Map(),
      'ga',
    );
    await app.query(`BEGIN; SET LOCAL syncline.applying = 'on';
      INSERT INTO acc SELECT g, 'app', g FROM generate_series(6, 10) g;
      INSERT INTO pacc VALUES (2, 'app'), (3, 'app'), (151, 'app'), (250, 'app'), (251, 'app');
      INSERT INTO par VALUES (1), (2), (3); INSERT INTO kid VALUES (1, 1, 'x'), (1, 2, 'x'), (2, 1, 'x'), (3, 1, 'x');
      INSERT INTO nkey VALUES (1.0, 'x'), (2.5, 'x');
      INSERT INTO shift VALUES (3, 'x'), (2, 'x'), (1, 'x'); COMMIT`);
  }

  /** Runs the application's statements, then the sink's and the previous version's records. */
  async function run(...statements: string[]): Promise<{ mine: string[]; v1: string[]; truncations: string[]; v1Truncations: string[] }> {
    await reset();
    for (const sql of statements) await app.query(sql);
    return { mine: await localTombstones(app, 'syncline'), v1: await localTombstones(app, 'ref'), truncations: await localTruncations(app, 'syncline'), v1Truncations: await localTruncations(app, 'ref') };
  }

  /** The statements leave the same record as the previous version's triggers, `expected`. */
  async function same(expected: string[], ...statements: string[]): Promise<void> {
    const r = await run(...statements);
    expect(r.mine).toEqual([...expected].sort());
    expect(r.v1).toEqual([...expected].sort());
    expect(r.truncations).toEqual(r.v1Truncations);
    expect(warnings).toEqual([]);
  }

  /** Calls of the sink's trigger functions so far (see pg_stat_xact_user_functions). */
  const sinkCalls = async (): Promise<number> =>
    Number((await app.query<{ n: string }>(`SELECT coalesce(sum(calls), 0)::text AS n FROM pg_stat_xact_user_functions WHERE schemaname = 'syncline'`)).rows[0]?.n);

  const acc = (id: number, replaced = id <= 5): string => `public.acc ["${id}"] {"n": "${id}"}${replaced ? ` a 0/${(0x1000 + id * 0x10).toString(16).toUpperCase()} 1` : ''}`;
  const pacc = (id: number, replaced?: string): string => `public.pacc ["${id}"]${replaced ? ` a ${replaced} 1` : ''}`;

  it('DELETE ... RETURNING and DELETE ... USING', async () => {
    await same([acc(1), acc(2), acc(6), acc(7)], `DELETE FROM acc WHERE id IN (1, 6) RETURNING *`, `DELETE FROM acc a USING (VALUES (2), (7)) d(id) WHERE a.id = d.id`);
  });

  it('UPDATEs that change no key (also one that sets the key to itself) record nothing', async () => {
    await same([], `UPDATE acc SET v = 'x'`, `UPDATE acc SET id = id, v = 'y' WHERE id < 4`, `UPDATE pacc SET v = 'z'`, `UPDATE kid SET p = p`);
  });

  it('key UPDATEs of one row and of many', async () => {
    await same([acc(1), acc(6), acc(7), acc(8), acc(9), acc(10)], `UPDATE acc SET id = 100 WHERE id = 1`, `UPDATE acc SET id = id + 1000 WHERE id BETWEEN 6 AND 10`);
  });

  it('two keys swapped in three statements (in one statement the primary key refuses it, syncline or not)', async () => {
    await reset();
    await expect(app.query(`UPDATE acc SET id = 3 - id WHERE id IN (1, 2)`)).rejects.toMatchObject({ code: '23505' });
    expect(await localTombstones(app, 'syncline')).toEqual([]);
    await same([acc(-1, false).replace('{"n": "-1"}', '{"n": "1"} a 0/1010 1'), acc(1), acc(2)].sort(), `UPDATE acc SET id = -1 WHERE id = 1`, `UPDATE acc SET id = 1 WHERE id = 2`, `UPDATE acc SET id = 2 WHERE id = -1`);
  });

  it('MERGE: a delete, a key update, a non-key update and an insert; into the partitioned table, a key moved to another partition', async () => {
    await same(
      [acc(1), acc(2), pacc(2)],
      `MERGE INTO acc t USING (VALUES (1, 'd'), (2, 'k'), (3, 'u'), (50, 'i')) s(id, a) ON t.id = s.id
         WHEN MATCHED AND s.a = 'd' THEN DELETE WHEN MATCHED AND s.a = 'k' THEN UPDATE SET id = 200 WHEN MATCHED THEN UPDATE SET v = 'm'
         WHEN NOT MATCHED THEN INSERT (id, v, n) VALUES (s.id, 'i', 0)`,
      `MERGE INTO pacc t USING (VALUES (2)) s(id) ON t.id = s.id WHEN MATCHED THEN UPDATE SET id = 202`,
    );
  });

  it('INSERT ... ON CONFLICT DO UPDATE that changes the key', async () => {
    await same([acc(4)], `INSERT INTO acc VALUES (4, 'x', 0) ON CONFLICT (id) DO UPDATE SET id = 40`, `INSERT INTO acc VALUES (5, 'x', 0) ON CONFLICT (id) DO UPDATE SET v = 'y'`);
  });

  it('what a rollback (to a savepoint, or of the transaction) undid is not recorded', async () => {
    await same(
      [acc(1), acc(4)],
      `BEGIN; DELETE FROM acc WHERE id = 1; SAVEPOINT s; DELETE FROM acc WHERE id = 2; UPDATE acc SET id = 300 WHERE id = 3; TRUNCATE pacc_1; ROLLBACK TO s; DELETE FROM acc WHERE id = 4; COMMIT`,
      `BEGIN; DELETE FROM acc; UPDATE pacc SET id = id + 50 WHERE id < 10; TRUNCATE pacc_2a; TRUNCATE acc; ROLLBACK`,
    );
  });

  it('cascades from a parent that is not tracked: deleted rows, and keys changed by ON UPDATE CASCADE', async () => {
    await same(['public.kid ["1","1"]', 'public.kid ["1","2"]', 'public.kid ["2","1"]'], `DELETE FROM par WHERE id = 1`, `UPDATE par SET id = 20 WHERE id = 2`);
  });

  it('partitioned: deletes through the table, an intermediate partition and a leaf; keys moved between partitions and within one', async () => {
    await same(
      [pacc(1, '0/1060'), pacc(150, '0/1070'), pacc(151), pacc(2), pacc(250), pacc(251), pacc(3)],
      `DELETE FROM pacc WHERE id IN (1, 250)`,
      `DELETE FROM pacc_2 WHERE id = 150`,
      `DELETE FROM pacc_2b WHERE id = 251`,
      `UPDATE pacc SET id = CASE id WHEN 2 THEN 202 ELSE 152 END WHERE id IN (2, 151)`,
      `UPDATE pacc_1 SET id = 50 WHERE id = 3`,
    );
  });

  it('partitioned: a TRUNCATE of a partition deletes its rows (the previous version recorded nothing); of the table, a truncation', async () => {
    const leaf = await run(`TRUNCATE pacc_1`);
    expect(leaf).toMatchObject({ mine: [pacc(1, '0/1060'), pacc(2), pacc(3)], v1: [], truncations: [] });
    const intermediate = await run(`TRUNCATE pacc_2`);
    expect(intermediate).toMatchObject({ mine: [pacc(150, '0/1070'), pacc(151), pacc(250), pacc(251)], truncations: [] });
    const two = await run(`TRUNCATE pacc_1, pacc_2b`);
    expect(two).toMatchObject({ mine: [pacc(1, '0/1060'), pacc(2), pacc(250), pacc(251), pacc(3)], truncations: [] });
    const table = await run(`TRUNCATE pacc`);
    expect(table).toMatchObject({ mine: [], v1: [], truncations: ['public.pacc'], v1Truncations: ['public.pacc'] });
    // The mark of one TRUNCATE statement does not outlive it.
    const then = await run(`BEGIN; TRUNCATE pacc; SET LOCAL syncline.applying = 'on'; INSERT INTO pacc VALUES (5, 'x'); SET LOCAL syncline.applying = 'off'; TRUNCATE pacc_1; COMMIT`);
    expect(then).toMatchObject({ mine: [pacc(5)], truncations: ['public.pacc'] });
    const before = await run(`BEGIN; TRUNCATE pacc_2b; TRUNCATE pacc; COMMIT`);
    expect(before).toMatchObject({ mine: [pacc(250), pacc(251)], truncations: ['public.pacc'] });
    expect(warnings).toEqual([]);
  });

  it('a key shift in one statement records the keys left empty (the previous version: every key that changed, see README)', async () => {
    // Rows stored 3, 2, 1: a sequential scan moves 3 to 4 first, so the unique key never clashes.
    const r = await run(`UPDATE shift SET id = id + 1`);
    expect((await app.query('SELECT id FROM shift ORDER BY id')).rows).toEqual([{ id: 2 }, { id: 3 }, { id: 4 }]);
    expect(r.mine).toEqual(['public.shift ["1"]']);
    expect(r.v1).toEqual(['public.shift ["1"]', 'public.shift ["2"]', 'public.shift ["3"]']);
  });

  it('a key whose text changes though it compares equal (numeric scale) is a key change, as capture sees it', async () => {
    const r = await run(`UPDATE nkey SET k = 1.00 WHERE k = 1`);
    expect(r.mine).toEqual(['public.nkey ["1.0"]']);
    expect(r.v1).toEqual([]);
  });

  it('one trigger call per statement: none for an UPDATE that names no key column', async () => {
    await reset();
    const calls = async (sql: string): Promise<number> => {
      await app.query(`BEGIN; SET LOCAL track_functions = 'all'`);
      try {
        // The view counts the calls not yet flushed to the shared statistics, of earlier transactions too: the difference.
        const before = await sinkCalls();
        await app.query(sql);
        return (await sinkCalls()) - before;
      } finally {
        await app.query('ROLLBACK');
      }
    };
    await app.query(`BEGIN; SET LOCAL syncline.applying = 'on'; INSERT INTO acc SELECT g, 'bulk', g FROM generate_series(1000, 3000) g; COMMIT`);
    expect(await calls(`DELETE FROM acc WHERE id >= 1000`)).toBe(1);
    expect(await calls(`UPDATE acc SET id = id + 10000 WHERE id >= 1000`)).toBe(2);
    expect(await calls(`UPDATE acc SET v = 'x'`)).toBe(0);
    // Two rows stay in their partition, one (151) moves to another: the row trigger records it too (see README).
    expect(await calls(`UPDATE pacc SET id = id + 50 WHERE id IN (1, 2, 151)`)).toBe(3);
    expect(await calls(`UPDATE pacc SET id = id + 50 WHERE id IN (1, 2)`)).toBe(2);
    expect(await calls(`DELETE FROM pacc_2b`)).toBe(1);
  });

  it('a partition attached after the sink started: its rows are recorded by the row triggers until the sink checks the table again, then by its own statement triggers', async () => {
    await reset();
    await app.query(`CREATE TABLE pacc_3 PARTITION OF pacc FOR VALUES FROM (300) TO (400);
      BEGIN; SET LOCAL syncline.applying = 'on'; INSERT INTO pacc SELECT g, 'x' FROM generate_series(301, 310) g; COMMIT`);
    await app.query(`DELETE FROM pacc_3 WHERE id = 301`);
    await app.query(`DELETE FROM pacc WHERE id IN (302, 1)`);
    await app.query(`UPDATE pacc_3 SET id = 350 WHERE id = 303`);
    await app.query(`UPDATE pacc SET id = 4 WHERE id = 304`);
    const expected = [pacc(1, '0/1060'), pacc(301), pacc(302), pacc(303), pacc(304)].sort();
    expect(await localTombstones(app, 'syncline')).toEqual(expected);
    expect(await localTombstones(app, 'ref')).toEqual(expected);
    // Not yet: a TRUNCATE of it (no row trigger fires for a TRUNCATE).
    await app.query(`TRUNCATE pacc_3`);
    expect(await localTombstones(app, 'syncline')).toEqual(expected);
    // The sink restarts (or checks the table again): the partition gets its triggers.
    await sink.close();
    sink = new PostgresSink({ url, stateSchema: 'syncline', deleteMode: 'hard', versionGate: true, conflicts: tracking(undefined, [['public.acc', ['n']]]), trackedTables: TRACKED.map((table) => ({ schema: 'public', table })) });
    await sink.prepare();
    const { rows } = await app.query<{ t: string }>(`SELECT tgname AS t FROM pg_trigger WHERE tgrelid = 'pacc_3'::regclass AND tgname LIKE 'syncline%' ORDER BY 1`);
    expect(rows.map((r) => r.t)).toEqual(['syncline_local_delete', 'syncline_local_delete_row', 'syncline_local_key_change', 'syncline_local_key_change_row', 'syncline_local_key_mark', 'syncline_local_truncate_end', 'syncline_local_truncate_rows']);
    await app.query(`BEGIN; SET LOCAL syncline.applying = 'on'; INSERT INTO pacc VALUES (320, 'x'), (321, 'x'); COMMIT`);
    await app.query(`TRUNCATE pacc_3`);
    await app.query(`BEGIN; SET LOCAL track_functions = 'all'`);
    const before = await sinkCalls();
    await app.query(`DELETE FROM pacc WHERE id = 2`);
    const calls = (await sinkCalls()) - before;
    await app.query('COMMIT');
    // One call: the statement trigger; pacc_1's row triggers skip it.
    expect(calls).toBe(1);
    expect(await localTombstones(app, 'syncline')).toEqual([pacc(1, '0/1060'), pacc(2), pacc(301), pacc(302), pacc(303), pacc(304), pacc(320), pacc(321)].sort());
    // Detached and attached again: still recorded once.
    await app.query(`ALTER TABLE pacc DETACH PARTITION pacc_3; ALTER TABLE pacc ATTACH PARTITION pacc_3 FOR VALUES FROM (300) TO (400)`);
    await app.query(`BEGIN; SET LOCAL syncline.applying = 'on'; INSERT INTO pacc VALUES (330, 'x'); COMMIT`);
    await app.query(`DELETE FROM pacc_3`);
    expect(await localTombstones(app, 'syncline')).toContain(pacc(330));
    await app.query(`DROP TABLE pacc_3`);
    expect(warnings).toEqual([]);
  });
  it('an application role without any right on the state schema: its deletes, key changes and partition truncations are recorded', async () => {
    await reset();
    const role = `${new URL(url).pathname.slice(1)}_app`;
    await app.query(`DROP ROLE IF EXISTS ${pg.escapeIdentifier(role)}; CREATE ROLE ${pg.escapeIdentifier(role)} LOGIN PASSWORD 'test';
      GRANT SELECT, UPDATE, DELETE, TRUNCATE ON acc, pacc, pacc_1 TO ${pg.escapeIdentifier(role)}`);
    const roleUrl = Object.assign(new URL(url), { username: role, password: 'test' }).toString();
    const limited = new pg.Client({ connectionString: roleUrl });
    await limited.connect();
    const notices: string[] = [];
    limited.on('notice', (n) => notices.push(n.message ?? ''));
    try {
      await expect(limited.query('SELECT 1 FROM syncline.source_tombstones')).rejects.toMatchObject({ code: '42501' });
      await limited.query(`DELETE FROM acc WHERE id = 1`);
      await limited.query(`UPDATE acc SET id = 60 WHERE id = 6`);
      await limited.query(`UPDATE pacc SET id = 180 WHERE id = 2`);
      await limited.query(`TRUNCATE pacc_1`);
      expect(notices).toEqual([]);
      expect(await localTombstones(app, 'syncline')).toEqual([acc(1), acc(6), pacc(1, '0/1060'), pacc(2), pacc(3)].sort());
    } finally {
      await limited.end();
      await app.query(`DROP OWNED BY ${pg.escapeIdentifier(role)}; DROP ROLE ${pg.escapeIdentifier(role)}`);
    }
  });

  it('a running sink looks at a tracked table again when it applies to it after recheckTriggersMs: a partition attached meanwhile gets its triggers', async () => {
    await reset();
    const eager = new PostgresSink({ url, stateSchema: 'syncline', deleteMode: 'hard', versionGate: true, conflicts: tracking(undefined, [['public.acc', ['n']]]), recheckTriggersMs: 0 });
    try {
      await eager.prepare();
      await eager.apply([insert('pacc', { id: '5' }, { id: '5', v: 'sink' })], new Map(), 'ga');
      await app.query(`CREATE TABLE pacc_4 PARTITION OF pacc FOR VALUES FROM (400) TO (500)`);
      await app.query(`BEGIN; SET LOCAL syncline.applying = 'on'; INSERT INTO pacc VALUES (401, 'x'); COMMIT`);
      await eager.apply([insert('pacc', { id: '6' }, { id: '6', v: 'sink' })], new Map(), 'ga');
      await app.query(`TRUNCATE pacc_4`);
      expect(await localTombstones(app, 'syncline')).toEqual([pacc(401)]);
    } finally {
      await eager.close();
      await app.query(`DROP TABLE pacc_4`);
    }
  });
});

/** The earlier version's triggers on a target: a sink of this version replaces them (none doubled) and cleans up after them. */
describe('upgrade from the per-row triggers (PostgreSQL 15)', () => {
  const databases: string[] = [];
  afterAll(async () => {
    if (databases.length > 0) await dropDatabases(PG15_URL, databases);
  });

  it('replaces every earlier trigger and drops the earlier function; the application’s writes are recorded once', async () => {
    const url = await freshDatabase(await machinePg15(), 'local_writes_upgrade');
    databases.push(new URL(url).pathname.slice(1));
    const app = new pg.Client({ connectionString: url });
    await app.connect();
    try {
      await app.query(`${TABLES.split(';').slice(0, 6).join(';')};
        CREATE SCHEMA syncline; CREATE TABLE syncline.source_tombstones (table_name text NOT NULL, row_key text NOT NULL, source text NOT NULL, lsn pg_lsn NOT NULL, seq integer NOT NULL,
          clock timestamptz, deleted_at timestamptz NOT NULL DEFAULT now(), xid bigint, counters jsonb, replaced_source text, replaced_lsn pg_lsn, replaced_seq integer, PRIMARY KEY (table_name, row_key, source));
        CREATE TABLE syncline.source_truncations (table_name text NOT NULL, source text NOT NULL, lsn pg_lsn NOT NULL, seq integer NOT NULL, clock timestamptz, xid bigint, PRIMARY KEY (table_name, source));
        ALTER TABLE acc ADD COLUMN _syncline_lsn pg_lsn, ADD COLUMN _syncline_seq integer, ADD COLUMN _syncline_source text, ADD COLUMN _syncline_ts timestamptz, ADD COLUMN _syncline_xid bigint;
        ALTER TABLE pacc ADD COLUMN _syncline_lsn pg_lsn, ADD COLUMN _syncline_seq integer, ADD COLUMN _syncline_source text, ADD COLUMN _syncline_ts timestamptz, ADD COLUMN _syncline_xid bigint`);
      await app.query(v1Function('syncline'));
      for (const t of [V1[0], V1[1]]) for (const sql of v1Triggers('syncline', 'syncline', t as (typeof V1)[number])) await app.query(sql);
      const sink = new PostgresSink({ url, stateSchema: 'syncline', deleteMode: 'hard', versionGate: true, conflicts: tracking(undefined, [['public.acc', ['n']]]), trackedTables: [{ schema: 'public', table: 'acc' }, { schema: 'public', table: 'pacc' }] });
      await sink.prepare();
      await sink.close();
      const triggers = async (): Promise<string[]> =>
        (await app.query<{ t: string }>(`SELECT t FROM (SELECT tgrelid::regclass || ' ' || tgname || ' ' || (tgtype & 1)::text || ' ' || (tgparentid <> 0)::text AS t FROM pg_trigger WHERE tgname LIKE 'syncline%') x ORDER BY t COLLATE "C"`)).rows.map((r) => r.t);
      // Per statement everywhere (tgtype bit 0 clear), the partitioned table's row triggers (and their clones) aside.
      const after = await triggers();
      expect(after).toEqual([
        'acc syncline_local_delete 0 false', 'acc syncline_local_key_change 0 false', 'acc syncline_local_key_mark 0 false', 'acc syncline_local_truncate 0 false',
        ...['pacc_1', 'pacc_2', 'pacc_2a', 'pacc_2b'].flatMap((p) => [
          `${p} syncline_local_delete 0 false`, `${p} syncline_local_delete_row 1 true`, `${p} syncline_local_key_change 0 false`, `${p} syncline_local_key_change_row 1 true`,
          `${p} syncline_local_key_mark 0 false`, `${p} syncline_local_truncate_end 0 false`, `${p} syncline_local_truncate_rows 0 false`,
        ]),
        'pacc syncline_local_delete 0 false', 'pacc syncline_local_delete_row 1 false', 'pacc syncline_local_key_change 0 false', 'pacc syncline_local_key_change_row 1 false',
        'pacc syncline_local_key_mark 0 false', 'pacc syncline_local_truncate 0 false', 'pacc syncline_local_truncate_mark 0 false',
      ].sort());
      expect((await app.query(`SELECT to_regprocedure('syncline.record_local_writes()') AS f`)).rows).toEqual([{ f: null }]);
      // A restart changes nothing.
      const oids = (await app.query(`SELECT array_agg(oid ORDER BY oid)::text AS o FROM pg_trigger WHERE tgname LIKE 'syncline%'`)).rows;
      const again = new PostgresSink({ url, stateSchema: 'syncline', deleteMode: 'hard', versionGate: true, conflicts: tracking(undefined, [['public.acc', ['n']]]), trackedTables: [{ schema: 'public', table: 'acc' }, { schema: 'public', table: 'pacc' }] });
      await again.prepare();
      await again.close();
      expect((await app.query(`SELECT array_agg(oid ORDER BY oid)::text AS o FROM pg_trigger WHERE tgname LIKE 'syncline%'`)).rows).toEqual(oids);
      await app.query(`INSERT INTO acc (id, v, n) VALUES (1, 'x', 1), (2, 'x', 2); INSERT INTO pacc (id, v) VALUES (1, 'x'), (2, 'x'), (150, 'x')`);
      await app.query(`BEGIN; SET LOCAL track_functions = 'all'`);
      const count = async (): Promise<number> => Number((await app.query<{ n: string }>(`SELECT coalesce(sum(calls), 0)::text AS n FROM pg_stat_xact_user_functions WHERE schemaname = 'syncline'`)).rows[0]?.n);
      const before = await count();
      await app.query(`DELETE FROM acc WHERE id = 1; UPDATE acc SET id = 3 WHERE id = 2; DELETE FROM pacc WHERE id IN (1, 150); UPDATE pacc SET id = 102 WHERE id = 2`);
      const calls = (await count()) - before;
      await app.query('COMMIT');
      // 1 + 2 + 1 + 2, and the row moved to another partition once more (see README).
      expect(calls).toBe(7);
      expect((await app.query(`SELECT table_name || ' ' || row_key AS k FROM syncline.source_tombstones ORDER BY 1`)).rows.map((r) => r.k)).toEqual([
        'public.acc ["1"]', 'public.acc ["2"]', 'public.pacc ["1"]', 'public.pacc ["150"]', 'public.pacc ["2"]',
      ]);
    } finally {
      await app.end();
    }
  });
});

/**
 * The triggers never fail the application's statement for their own sake (an error of theirs
 * becomes a WARNING and the write goes unrecorded), but what fails a statement without
 * syncline fails it with syncline too, so the application's retry logic sees it: a
 * serialization failure, a deadlock, a lock or statement timeout (the previous version made
 * all but the last a WARNING, and the delete went unrecorded).
 */
describe.each(SERVERS)('errors inside the triggers (%s)', (_name, start) => {
  let server: PgServer;
  let url: string;
  let sink: PostgresSink;
  let app: pg.Client;
  let other: pg.Client;
  const notices: string[] = [];
  const databases: string[] = [];

  beforeAll(async () => {
    server = await start();
    url = await freshDatabase(server, 'local_writes_errors');
    databases.push(new URL(url).pathname.slice(1));
    app = new pg.Client({ connectionString: url });
    other = new pg.Client({ connectionString: url });
    await app.connect();
    await other.connect();
    app.on('notice', (n) => notices.push(`${n.severity ?? ''} ${n.message ?? ''}`));
    await app.query(`CREATE TABLE acc (id int PRIMARY KEY, v text)`);
    sink = new PostgresSink({ url, stateSchema: 'syncline', deleteMode: 'hard', versionGate: true, conflicts: tracking(), trackedTables: [{ schema: 'public', table: 'acc' }] });
    await sink.prepare();
  }, 120_000);

  afterAll(async () => {
    await sink?.close();
    await app?.end();
    await other?.end();
    if (server?.name === 'pg15') await dropDatabases(PG15_URL, databases);
    else await server?.stop();
  }, 60_000);

  /** Rows 1..3 whose keys the application deleted once already (their local tombstones exist, so recording a delete updates one). */
  async function seed(): Promise<void> {
    await app.query(`SET syncline.applying = 'on'; DELETE FROM acc; TRUNCATE syncline.source_tombstones; RESET syncline.applying;
      INSERT INTO acc VALUES (1, 'x'), (2, 'x'), (3, 'x'); DELETE FROM acc; INSERT INTO acc VALUES (1, 'x'), (2, 'x'), (3, 'x')`);
    notices.length = 0;
  }

  const code = (err: unknown): unknown => (err as { code?: unknown }).code;
  const ids = async (): Promise<number[]> => (await app.query<{ id: number }>('SELECT id FROM acc ORDER BY id')).rows.map((r) => r.id);
  /** Waits until `client`'s backend waits for a lock. */
  async function waitingForLock(client: pg.Client): Promise<void> {
    const pid = (client as unknown as { processID: number }).processID;
    for (let i = 0; i < 200; i++) {
      const { rows } = await app.query(`SELECT 1 FROM pg_stat_activity WHERE pid = $1 AND wait_event_type = 'Lock'`, [pid]);
      if (rows.length > 0) return;
      await new Promise((r) => setTimeout(r, 25));
    }
    throw new Error('the other session never waited for a lock');
  }

  it('a serialization failure fails the DELETE (REPEATABLE READ, the key’s tombstone changed since the snapshot)', async () => {
    await seed();
    await app.query(`BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT 1`);
    // The sink changes the local tombstone's counters meanwhile (here: any committed change of that row).
    await other.query(`UPDATE syncline.source_tombstones SET clock = clock WHERE row_key = '["1"]'`);
    const err = await app.query(`DELETE FROM acc WHERE id = 1`).catch((e: unknown) => e);
    await app.query('ROLLBACK');
    expect(code(err)).toBe('40001');
    expect(await ids()).toEqual([1, 2, 3]);
    expect(notices).toEqual([]);
  });

  it('a deadlock fails the DELETE (the other transaction goes on)', async () => {
    await seed();
    await other.query(`BEGIN; SET LOCAL deadlock_timeout = '20s'; SELECT 1 FROM syncline.source_tombstones WHERE row_key = '["2"]' FOR UPDATE`);
    await app.query(`BEGIN; SET LOCAL deadlock_timeout = '50ms'; DELETE FROM acc WHERE id = 1`);
    const otherWaits = other.query(`SELECT 1 FROM syncline.source_tombstones WHERE row_key = '["1"]' FOR UPDATE`);
    await waitingForLock(other);
    const err = await app.query(`DELETE FROM acc WHERE id = 2`).catch((e: unknown) => e);
    await app.query('ROLLBACK');
    await otherWaits;
    await other.query('COMMIT');
    expect(code(err)).toBe('40P01');
    expect(await ids()).toEqual([1, 2, 3]);
    expect(notices).toEqual([]);
  });

  it('a lock timeout and a statement timeout fail the DELETE', async () => {
    await seed();
    await other.query(`BEGIN; SELECT 1 FROM syncline.source_tombstones WHERE row_key = '["1"]' FOR UPDATE`);
    try {
      const lock = await app.query(`BEGIN; SET LOCAL lock_timeout = '100ms'; DELETE FROM acc WHERE id = 1`).catch((e: unknown) => e);
      await app.query('ROLLBACK');
      const statement = await app.query(`BEGIN; SET LOCAL statement_timeout = '200ms'; DELETE FROM acc WHERE id = 1`).catch((e: unknown) => e);
      await app.query('ROLLBACK');
      expect([code(lock), code(statement)]).toEqual(['55P03', '57014']);
    } finally {
      await other.query('ROLLBACK');
    }
    expect(await ids()).toEqual([1, 2, 3]);
    expect(notices).toEqual([]);
  });

  it('another error of the trigger is a WARNING: the DELETE succeeds, unrecorded', async () => {
    await seed();
    await app.query(`BEGIN; ALTER TABLE syncline.source_tombstones RENAME TO away; DELETE FROM acc WHERE id = 3; ALTER TABLE syncline.away RENAME TO source_tombstones; COMMIT`);
    expect(await ids()).toEqual([1, 2]);
    expect(notices).toEqual([expect.stringMatching(/^WARNING syncline: the delete of public\.acc was not recorded for conflict tracking: relation .*source_tombstones.* does not exist/)]);
  });
});

/** A sink role that may put triggers on a partitioned table and some of its partitions only. */
describe('a sink that may not trigger every partition (PostgreSQL 15)', () => {
  const databases: string[] = [];
  afterAll(async () => {
    if (databases.length > 0) await dropDatabases(PG15_URL, databases);
  });

  it('records what the triggers it may create see, warns with the SQL for the rest; run by the owner, that SQL completes them', async () => {
    const url = await freshDatabase(await machinePg15(), 'local_writes_priv');
    const database = new URL(url).pathname.slice(1);
    databases.push(database);
    const role = `${database}_sink`;
    const admin = new pg.Client({ connectionString: url });
    await admin.connect();
    const cols = `_syncline_lsn pg_lsn, _syncline_seq integer, _syncline_source text, _syncline_ts timestamptz, _syncline_xid bigint`;
    await admin.query(`DROP ROLE IF EXISTS ${pg.escapeIdentifier(role)}; CREATE ROLE ${pg.escapeIdentifier(role)} LOGIN PASSWORD 'test';
      GRANT CREATE ON DATABASE ${pg.escapeIdentifier(database)} TO ${pg.escapeIdentifier(role)};
      CREATE TABLE pacc (id int PRIMARY KEY, v text, ${cols}) PARTITION BY RANGE (id);
      CREATE TABLE pacc_1 PARTITION OF pacc FOR VALUES FROM (0) TO (100);
      CREATE TABLE pacc_2 PARTITION OF pacc FOR VALUES FROM (100) TO (200);
      INSERT INTO pacc (id, v) SELECT g, 'x' FROM generate_series(1, 6) g; INSERT INTO pacc (id, v) SELECT g, 'x' FROM generate_series(101, 106) g;
      GRANT SELECT, INSERT, UPDATE, DELETE, TRIGGER ON pacc TO ${pg.escapeIdentifier(role)}; GRANT TRIGGER ON pacc_1 TO ${pg.escapeIdentifier(role)}`);
    const sinkUrl = Object.assign(new URL(url), { username: role, password: 'test' }).toString();
    const open = (warnings: { message: string; details: Record<string, unknown> }[]): PostgresSink =>
      new PostgresSink({ url: sinkUrl, stateSchema: 'syncline', deleteMode: 'hard', versionGate: true, conflicts: tracking(), trackedTables: [{ schema: 'public', table: 'pacc' }], warn: (message, details) => warnings.push({ message, details }) });
    const keys = async (): Promise<string[]> => (await admin.query<{ k: string }>(`SELECT k FROM (SELECT row_key AS k FROM syncline.source_tombstones) x ORDER BY k COLLATE "C"`)).rows.map((r) => r.k);
    try {
      const warnings: { message: string; details: Record<string, unknown> }[] = [];
      const sink = open(warnings);
      await sink.prepare();
      await sink.close();
      expect(warnings).toHaveLength(1);
      expect(warnings[0]?.message).toMatch(/may not create the triggers .* public\.pacc/);
      const fix = String(warnings[0]?.details.fix).replace(/^run as the table's owner or a superuser: /, '').replace("<the table's owner>", 'postgres');
      expect(fix).toMatch(/ON "public"\."pacc_2"/);
      await admin.query(`DELETE FROM pacc WHERE id IN (1, 101)`);
      await admin.query(`DELETE FROM pacc_1 WHERE id = 2`);
      await admin.query(`UPDATE pacc_1 SET id = 30 WHERE id = 3`);
      await admin.query(`DELETE FROM pacc_2 WHERE id = 102`);
      // Through the partitioned table, and through the partition the sink may trigger: recorded; through the other: not.
      expect(await keys()).toEqual(['["101"]', '["1"]', '["2"]', '["3"]'].sort());
      await admin.query(fix);
      const after: { message: string; details: Record<string, unknown> }[] = [];
      const again = open(after);
      await again.prepare();
      await again.close();
      expect(after).toEqual([]);
      await admin.query(`DELETE FROM pacc_2 WHERE id = 103`);
      await admin.query(`TRUNCATE pacc_1`);
      expect(await keys()).toEqual(['["101"]', '["103"]', '["1"]', '["2"]', '["30"]', '["3"]', '["4"]', '["5"]', '["6"]'].sort());
    } finally {
      await admin.query(`DROP OWNED BY ${pg.escapeIdentifier(role)}`).catch(() => undefined);
      await admin.end();
      await dropDatabases(PG15_URL, [database]);
      databases.splice(databases.indexOf(database), 1);
      const root = new pg.Client({ connectionString: PG15_URL });
      await root.connect();
      await root.query(`DROP ROLE IF EXISTS ${pg.escapeIdentifier(role)}`);
      await root.end();
    }
  });
});
