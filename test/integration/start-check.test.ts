import pg from 'pg';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { systemClock } from '../../src/core/clock.js';
import { PrerequisiteError } from '../../src/core/errors.js';
import { PostgresSource, type PostgresSourceOptions } from '../../src/source/postgres-source.js';
import { freshDatabase, machinePg15, testLogger, uniqueName } from '../helpers/postgres.js';

/**
 * Capture's start-up reads everything it checks on the source in one query (start-check.ts)
 * and runs the bookkeeping's DDL only for what is missing: a restart finds it in place and
 * runs none, an older or damaged bookkeeping is still brought up to date, captures starting
 * together still all get their tables, and every refusal keeps its message.
 */
describe('capture start-up: one check, DDL only when something is missing', () => {
  let url: string;
  let admin: pg.Client;

  beforeAll(async () => {
    url = await freshDatabase(await machinePg15(), 'syncline_startcheck');
    admin = new pg.Client({ connectionString: url });
    await admin.connect();
    await admin.query('CREATE TABLE t (id integer PRIMARY KEY, v text)');
    await admin.query('CREATE TABLE u (id integer PRIMARY KEY)');
  }, 60_000);

  afterEach(() => {
    vi.restoreAllMocks();
  });

  afterAll(async () => {
    await admin?.query('SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = current_database() AND NOT active').catch(() => undefined);
    await admin?.end();
  });

  const options = async (slot: string, extra: Partial<PostgresSourceOptions> = {}): Promise<PostgresSourceOptions> => ({
    connection: { connectionString: url },
    slot,
    publication: 'startcheck_pub',
    tables: [{ schema: 'public', table: 't' }],
    createPublication: true,
    stateSchema: 'syncline',
    initialSnapshot: false,
    heartbeatIntervalMs: 60_000,
    heartbeatPrefix: 'syncline.heartbeat',
    snapshotParallelism: 1,
    clock: systemClock,
    log: await testLogger(),
    ...extra,
  });

  /** Opens and closes a source; the statements sent on ordinary connections meanwhile (readers' settings left out). */
  async function openRecording(o: PostgresSourceOptions): Promise<string[]> {
    const statements: string[] = [];
    const query = pg.Client.prototype.query;
    vi.spyOn(pg.Client.prototype, 'query').mockImplementation(function (this: pg.Client, ...args: unknown[]) {
      const q = args[0];
      const text = typeof q === 'string' ? q : (q as { text?: string } | undefined)?.text;
      if (text && !text.includes('set_config(')) statements.push(text.replace(/\s+/g, ' ').trim());
      return (query as (...a: unknown[]) => unknown).apply(this, args);
    } as typeof pg.Client.prototype.query);
    const source = await PostgresSource.open(o, new AbortController().signal);
    vi.restoreAllMocks();
    if (!source) throw new Error('not the leader');
    await source.close();
    await source.release();
    return statements;
  }

  const ddl = (statements: string[]): string[] => statements.filter((s) => /^(CREATE|ALTER|BEGIN|DROP)\b/i.test(s));

  it('a restart finds the bookkeeping in place and runs no DDL, in a handful of queries', async () => {
    const slot = uniqueName('startcheck_restart');
    const first = await openRecording(await options(slot));
    expect(ddl(first).length).toBeGreaterThan(0); // created the publication and the state tables
    const again = await openRecording(await options(slot));
    expect(ddl(again)).toEqual([]);
    // The check, the schema versions, the DDL history's recording, the slot, the WAL position,
    // the primary keys, and the partition watch's comparison (an ATTACH made while capture was
    // down); and, as this slot has recorded no definition yet (no change streamed), the
    // statement that records a slot made outside syncline's tables as skipped (3115b99), which
    // inserts nothing for a slot with snapshot jobs; and the slot's health, read at once for
    // sync_slot_retained_wal_bytes (not only at the first heartbeat). A restart after changes sends 8.
    expect(again.length).toBeLessThanOrEqual(9);
  });

  it('brings an older bookkeeping up to date: a missing column, an outdated DDL history function, a dropped index, the history without command_tag or its partition columns, partition_sets without root', async () => {
    const slot = uniqueName('startcheck_old');
    await openRecording(await options(slot));
    await admin.query('ALTER TABLE syncline.snapshots DROP COLUMN done_ranges');
    await admin.query('ALTER TABLE syncline.schema_versions DROP COLUMN columns, DROP COLUMN relid_lsn, DROP COLUMN rewrite_id');
    await admin.query('DROP INDEX syncline.ddl_history_table_lsn');
    const { rows: fn } = await admin.query<{ src: string }>("SELECT prosrc AS src FROM pg_proc WHERE oid = 'syncline.record_ddl_history()'::regprocedure");
    await admin.query("CREATE OR REPLACE FUNCTION syncline.record_ddl_history() RETURNS event_trigger LANGUAGE plpgsql AS 'BEGIN END'");
    const statements = await openRecording(await options(slot));
    expect(ddl(statements).length).toBeGreaterThan(0);
    const { rows } = await admin.query<{ done_ranges: boolean; columns: boolean; relids: number; idx: boolean; src: string }>(
      `SELECT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = 'syncline.snapshots'::regclass AND attname = 'done_ranges' AND NOT attisdropped) AS done_ranges,
              EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = 'syncline.schema_versions'::regclass AND attname = 'columns' AND NOT attisdropped) AS columns,
              (SELECT count(*)::int FROM pg_attribute WHERE attrelid = 'syncline.schema_versions'::regclass AND attname IN ('relid', 'relid_lsn', 'rewrite_id') AND NOT attisdropped) AS relids,
              to_regclass('syncline.ddl_history_table_lsn') IS NOT NULL AS idx,
              (SELECT prosrc FROM pg_proc WHERE oid = 'syncline.record_ddl_history()'::regprocedure) AS src`,
    );
    expect(rows[0]).toEqual({ done_ranges: true, columns: true, relids: 3, idx: true, src: fn[0]?.src });
    expect(ddl(await openRecording(await options(slot)))).toEqual([]);
    // The history's command_tag (added later) alone missing, the function current: without
    // it the function's insert would fail (and be skipped) at every DDL, silently.
    await admin.query('ALTER TABLE syncline.ddl_history DROP COLUMN command_tag');
    expect(ddl(await openRecording(await options(slot))).length).toBeGreaterThan(0);
    const { rows: tag } = await admin.query<{ n: number }>(
      "SELECT count(*)::int AS n FROM pg_attribute WHERE attrelid = 'syncline.ddl_history'::regclass AND attname = 'command_tag' AND NOT attisdropped",
    );
    expect(tag[0]?.n).toBe(1);
    expect(ddl(await openRecording(await options(slot)))).toEqual([]);
    // Likewise the history's partition columns and partition_sets.root (added later still).
    await admin.query('ALTER TABLE syncline.ddl_history DROP COLUMN partition_xmin');
    await admin.query('ALTER TABLE syncline.partition_sets DROP COLUMN root');
    expect(ddl(await openRecording(await options(slot))).length).toBeGreaterThan(0);
    const { rows: added } = await admin.query<{ n: number }>(
      `SELECT count(*)::int AS n FROM pg_attribute WHERE NOT attisdropped AND ((attrelid = 'syncline.ddl_history'::regclass AND attname = 'partition_xmin')
          OR (attrelid = 'syncline.partition_sets'::regclass AND attname = 'root'))`,
    );
    expect(added[0]?.n).toBe(2);
    expect(ddl(await openRecording(await options(slot)))).toEqual([]);
  });

  it("the DDL history tags each entry with its command: a creation's only for the command that created the table", async () => {
    const slot = uniqueName('startcheck_tags');
    await openRecording(await options(slot));
    // Created while the event trigger is off: the next start seeds its definition.
    await admin.query('ALTER EVENT TRIGGER syncline_ddl_history_syncline DISABLE');
    await admin.query('CREATE TABLE tag_seeded (id integer PRIMARY KEY)');
    await admin.query('ALTER EVENT TRIGGER syncline_ddl_history_syncline ENABLE');
    await openRecording(await options(slot, { tables: [{ schema: 'public', table: 't' }, { schema: 'public', table: 'tag_seeded' }] }));
    // A CREATE TABLE with a foreign key also reports an ALTER TABLE of the table: one entry, the creation's.
    await admin.query(`CREATE TABLE tag_b (id integer PRIMARY KEY); CREATE TABLE tag_a (id serial PRIMARY KEY, b integer REFERENCES tag_b);
      CREATE SCHEMA tag_s; ALTER TABLE tag_a SET SCHEMA tag_s; CREATE TABLE tag_x AS SELECT 1 AS i; SELECT 1 AS i INTO tag_y;
      CREATE TABLE tag_p (id integer PRIMARY KEY) PARTITION BY RANGE (id); CREATE TABLE tag_p1 PARTITION OF tag_p FOR VALUES FROM (1) TO (10);
      CREATE TABLE tag_p2 (id integer PRIMARY KEY); ALTER TABLE tag_p ATTACH PARTITION tag_p2 FOR VALUES FROM (10) TO (20)`);
    const { rows } = await admin.query<{ t: string; tag: string; root: string | null; same_xmin: boolean | null }>(
      `SELECT h.table_schema || '.' || h.table_name AS t, h.command_tag AS tag, h.partition_root::regclass::text AS root, h.partition_xmin = c.xmin AS same_xmin
         FROM syncline.ddl_history h JOIN pg_class c ON c.oid = h.relid WHERE h.table_name LIKE 'tag\\_%' ORDER BY h.id`,
    );
    expect(rows).toEqual([
      { t: 'public.tag_seeded', tag: 'seed', root: null, same_xmin: null },
      { t: 'public.tag_b', tag: 'CREATE TABLE', root: null, same_xmin: null },
      { t: 'public.tag_a', tag: 'CREATE TABLE', root: null, same_xmin: null },
      { t: 'tag_s.tag_a', tag: 'ALTER TABLE', root: null, same_xmin: null },
      { t: 'public.tag_x', tag: 'CREATE TABLE AS', root: null, same_xmin: null },
      { t: 'public.tag_y', tag: 'SELECT INTO', root: null, same_xmin: null },
      { t: 'public.tag_p', tag: 'CREATE TABLE', root: null, same_xmin: null },
      // Created as a partition: its root and its pg_class row's xmin (the partition watch's test).
      { t: 'public.tag_p1', tag: 'CREATE TABLE PARTITION OF', root: 'tag_p', same_xmin: true },
      { t: 'public.tag_p2', tag: 'CREATE TABLE', root: null, same_xmin: null },
      // ATTACH PARTITION reports the partitioned table only.
      { t: 'public.tag_p', tag: 'ALTER TABLE', root: null, same_xmin: null },
    ]);
  });

  it('a DDL history trigger of an older tag list (without SELECT INTO) is made again by a superuser, as enabled as it was', async () => {
    const slot = uniqueName('startcheck_trigger_tags');
    await openRecording(await options(slot));
    const trigger = async (): Promise<unknown> => (await admin.query("SELECT evtenabled::text AS enabled, evttags AS tags FROM pg_event_trigger WHERE evtname = 'syncline_ddl_history_syncline'")).rows[0];
    const current = await trigger();
    expect(current).toEqual({ enabled: 'O', tags: ['CREATE TABLE', 'CREATE TABLE AS', 'SELECT INTO', 'ALTER TABLE'] });
    for (const enabled of ['O', 'A']) {
      await admin.query(`DROP EVENT TRIGGER syncline_ddl_history_syncline;
        CREATE EVENT TRIGGER syncline_ddl_history_syncline ON ddl_command_end WHEN TAG IN ('CREATE TABLE', 'CREATE TABLE AS', 'ALTER TABLE')
          EXECUTE FUNCTION syncline.record_ddl_history()`);
      if (enabled === 'A') await admin.query('ALTER EVENT TRIGGER syncline_ddl_history_syncline ENABLE ALWAYS');
      expect(ddl(await openRecording(await options(slot)))).toContain('DROP EVENT TRIGGER "syncline_ddl_history_syncline"');
      expect(await trigger()).toEqual({ enabled, tags: ['CREATE TABLE', 'CREATE TABLE AS', 'SELECT INTO', 'ALTER TABLE'] });
      expect(ddl(await openRecording(await options(slot)))).toEqual([]);
    }
    await admin.query('ALTER EVENT TRIGGER syncline_ddl_history_syncline ENABLE');
  });

  it('an install without the table_rewrite trigger (older syncline) gets it at a superuser\'s start, as enabled as the history trigger', async () => {
    const slot = uniqueName('startcheck_rewrite_trigger');
    await openRecording(await options(slot));
    const rewrite = async (): Promise<unknown> => (await admin.query("SELECT evtevent AS event, evtenabled::text AS enabled FROM pg_event_trigger WHERE evtname = 'syncline_ddl_rewrite_syncline'")).rows[0];
    expect(await rewrite()).toEqual({ event: 'table_rewrite', enabled: 'O' });
    for (const enabled of ['O', 'A']) {
      await admin.query('DROP EVENT TRIGGER syncline_ddl_rewrite_syncline');
      if (enabled === 'A') await admin.query('ALTER EVENT TRIGGER syncline_ddl_history_syncline ENABLE ALWAYS');
      expect(ddl(await openRecording(await options(slot)))).toContain('CREATE EVENT TRIGGER "syncline_ddl_rewrite_syncline" ON table_rewrite EXECUTE FUNCTION "syncline"."record_ddl_history"()');
      expect(await rewrite()).toEqual({ event: 'table_rewrite', enabled });
      expect(ddl(await openRecording(await options(slot)))).toEqual([]);
    }
    await admin.query('ALTER EVENT TRIGGER syncline_ddl_history_syncline ENABLE');
    await admin.query('ALTER EVENT TRIGGER syncline_ddl_rewrite_syncline ENABLE');
    // A rewrite with new values is recorded; VACUUM FULL, CLUSTER, SET UNLOGGED/LOGGED and a widening are not.
    await admin.query('CREATE TABLE rw (id int PRIMARY KEY, c text, code varchar(20))');
    await admin.query("ALTER TABLE rw ALTER COLUMN c TYPE text USING upper(c), ALTER COLUMN code TYPE varchar(30)");
    await admin.query('ALTER TABLE rw ALTER COLUMN code TYPE varchar(40)');
    await admin.query('VACUUM FULL rw');
    await admin.query('CLUSTER rw USING rw_pkey');
    await admin.query('ALTER TABLE rw SET UNLOGGED');
    await admin.query('ALTER TABLE rw SET LOGGED');
    await admin.query('ALTER TABLE rw ADD COLUMN r float DEFAULT random()');
    const { rows } = await admin.query("SELECT count(*)::int AS n FROM syncline.ddl_history WHERE table_name = 'rw' AND command_tag = 'table_rewrite'");
    expect(rows[0]).toEqual({ n: 2 });
    await admin.query('DROP TABLE rw');
  });

  it('captures of several slots starting together on a new state schema each get the state tables', async () => {
    const stateSchema = uniqueName('startcheck_state');
    const sources = await Promise.all([1, 2, 3].map(async (i) => PostgresSource.open(await options(uniqueName(`startcheck_race${i}`), { stateSchema }), new AbortController().signal)));
    try {
      for (const s of sources) {
        expect(s).toBeDefined();
        expect(s?.schemaVersions).toBeDefined();
        expect(s?.snapshots).toBeDefined();
      }
    } finally {
      for (const s of sources) {
        await s?.close();
        await s?.release();
      }
    }
  });

  it('a second capture of a slot waits as standby and leads once the first stops', async () => {
    const slot = uniqueName('startcheck_lead');
    const first = await PostgresSource.open(await options(slot), new AbortController().signal);
    if (!first) throw new Error('not the leader');
    let standby = false;
    const second = PostgresSource.open(await options(slot, { onStandby: () => (standby = true) }), new AbortController().signal);
    await expect.poll(() => standby, { timeout: 10_000 }).toBe(true);
    await first.close();
    await first.release();
    const led = await second;
    expect(led).toBeDefined();
    await led?.close();
    await led?.release();
  });

  it('refuses a missing publication, or one that lacks a table, with create_publication off', async () => {
    const missing = await PostgresSource.open(await options(uniqueName('startcheck_nopub'), { publication: 'startcheck_absent', createPublication: false }), new AbortController().signal).catch((e: unknown) => e);
    expect(missing).toBeInstanceOf(PrerequisiteError);
    expect((missing as Error).message).toMatch(/^publication startcheck_absent does not exist on the source\n/);
    await admin.query('CREATE PUBLICATION startcheck_partial FOR TABLE t');
    const lacking = await PostgresSource.open(
      await options(uniqueName('startcheck_lacks'), { publication: 'startcheck_partial', createPublication: false, tables: [{ schema: 'public', table: 't' }, { schema: 'public', table: 'u' }] }),
      new AbortController().signal,
    ).catch((e: unknown) => e);
    expect(lacking).toBeInstanceOf(PrerequisiteError);
    expect((lacking as Error).message).toMatch(/^publication startcheck_partial lacks table\(s\) public\.u\n/);
    // With create_publication on, the table is added and the next start finds it in place.
    const slot = uniqueName('startcheck_added');
    const o = await options(slot, { publication: 'startcheck_partial', tables: [{ schema: 'public', table: 't' }, { schema: 'public', table: 'u' }] });
    expect(ddl(await openRecording(o))).toContain('ALTER PUBLICATION "startcheck_partial" ADD TABLE "public"."u"');
    expect(ddl(await openRecording(o))).toEqual([]);
  });

  it('a role that may not create schemas uses bookkeeping created for it beforehand (as the warnings advise)', async () => {
    // Created in place by a first capture run as a superuser; the role only has rights on the tables.
    const slot = uniqueName('startcheck_limited');
    await openRecording(await options(slot));
    const role = uniqueName('startcheck_role');
    await admin.query(`CREATE ROLE ${role} LOGIN`);
    try {
      await admin.query(`GRANT USAGE ON SCHEMA syncline TO ${role}`);
      await admin.query(`GRANT SELECT, INSERT, UPDATE ON ALL TABLES IN SCHEMA syncline TO ${role}`);
      await admin.query(`GRANT USAGE ON ALL SEQUENCES IN SCHEMA syncline TO ${role}`);
      const limited = new URL(url);
      limited.username = role;
      const source = await PostgresSource.open(await options(slot, { connection: { connectionString: limited.toString() } }), new AbortController().signal);
      if (!source) throw new Error('not the leader');
      try {
        expect(source.snapshots).toBeDefined();
        expect(source.schemaVersions).toBeDefined();
      } finally {
        await source.close();
        await source.release();
      }
    } finally {
      await admin.query(`DROP OWNED BY ${role}`);
      await admin.query(`DROP ROLE ${role}`);
    }
  });
});
