import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import Database from 'better-sqlite3';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLI, ensureBuilt, ROOT } from '../helpers/cli.js';
import type { DoctorCheck, DoctorReport } from '../../src/doctor/doctor.js';
import { freshMysqlDatabase } from '../helpers/mysql.js';
import { embeddedPg17, freshDatabase, machinePg15, withClient, type PgServer, uniqueName } from '../helpers/postgres.js';

const BAD_SLOT = uniqueName('syncline_ops_doctor_bad');
const OK_SLOT = uniqueName('syncline_ops_doctor_ok');

function doctor(configFile: string, json = true): { status: number | null; stdout: string; stderr: string; report: DoctorReport } {
  const r = spawnSync(process.execPath, [CLI, 'doctor', '-c', configFile, ...(json ? ['--json'] : [])], { cwd: ROOT, encoding: 'utf8', timeout: 60_000 });
  let report: DoctorReport = { ok: false, checks: [] };
  if (json) report = JSON.parse(r.stdout) as DoctorReport;
  return { status: r.status, stdout: r.stdout, stderr: r.stderr, report };
}

function check(report: DoctorReport, name: string): DoctorCheck {
  const c = report.checks.find((x) => x.name === name);
  if (!c) throw new Error(`no check named ${name} in ${JSON.stringify(report.checks.map((x) => x.name))}`);
  return c;
}

/** The URL with a password, to prove none is printed (trust auth ignores it). */
function withPassword(url: string): string {
  const u = new URL(url);
  u.password = 's3cretpw';
  return u.toString();
}

describe('syncline doctor', () => {
  let pg15: PgServer;
  let dir: string;

  beforeAll(async () => {
    ensureBuilt();
    pg15 = await machinePg15();
    dir = await mkdtemp(path.join(os.tmpdir(), 'syncline-ops-doctor-'));
  }, 120_000);

  afterAll(async () => {
    await withClient(pg15.url('postgres'), (c) =>
      c.query('SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = ANY($1) AND NOT active', [[BAD_SLOT, OK_SLOT]]),
    );
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  async function writeConfig(name: string, text: string): Promise<string> {
    const file = path.join(dir, name);
    await writeFile(file, text);
    return file;
  }

  it('names a missing publication, a table without key or replica identity, and a target key mismatch, each with its fix; exit 1', async () => {
    const src = await freshDatabase(pg15, 'syncline_ops_doctor_bad');
    const tgt = await freshDatabase(pg15, 'syncline_ops_doctor_bad_tgt');
    await withClient(src, (c) => c.query('CREATE TABLE items (id int PRIMARY KEY, v text); CREATE TABLE nokey (a int, b text)'));
    await withClient(tgt, (c) => c.query('CREATE TABLE items (id int, v text NOT NULL, PRIMARY KEY (id, v))'));
    const file = await writeConfig(
      'bad.yaml',
      `source:
  url: ${withPassword(src)}
  slots: [{ name: ${BAD_SLOT}, publication: syncline_ops_doctor_pub, tables: [items, nokey], create_publication: false }]
stream: { path: ${path.join(dir, 'stream-bad')} }
sink: { url: ${withPassword(tgt)} }
`,
    );
    const r = doctor(file);
    expect(r.status).toBe(1);
    expect(r.report.ok).toBe(false);
    expect(r.stdout).not.toContain('s3cretpw');

    const pub = check(r.report, 'publication syncline_ops_doctor_pub');
    expect(pub.status).toBe('fail');
    expect(pub.detail).toMatch(/does not exist/);
    expect(pub.fix).toContain('CREATE PUBLICATION "syncline_ops_doctor_pub" FOR TABLE "public"."items", "public"."nokey" WITH (publish_via_partition_root = true);');

    const nokey = check(r.report, 'source table public.nokey');
    expect(nokey.status).toBe('warn');
    expect(nokey.detail).toMatch(/no primary key and REPLICA IDENTITY DEFAULT: its INSERTs are replicated, but PostgreSQL rejects its UPDATEs and DELETEs/);
    expect(nokey.fix).toContain('add a primary key');
    expect(nokey.fix).toContain('ALTER TABLE "public"."nokey" REPLICA IDENTITY FULL;');

    expect(check(r.report, 'source table public.items')).toMatchObject({ status: 'ok', detail: 'primary key (id)' });
    const target = check(r.report, 'sink table public.items');
    expect(target.status).toBe('fail');
    expect(target.detail).toBe("primary key (id, v) differs from the source's (id)");
    expect(target.fix).toBe('ALTER TABLE "public"."items" DROP CONSTRAINT "items_pkey", ADD PRIMARY KEY ("id");');
    expect(check(r.report, 'sink table public.nokey')).toMatchObject({ status: 'fail', detail: 'does not exist in the sink database' });

    for (const name of ['source reachable', 'wal_level', 'max_replication_slots', 'max_wal_senders', 'replication privilege', 'stream (embedded)', 'sink reachable', 'dead-letter queue']) {
      expect(check(r.report, name).status, name).toBe('ok');
    }
    expect(check(r.report, `slot ${BAD_SLOT}`)).toMatchObject({ status: 'ok', detail: expect.stringMatching(/will create it/) });
    // Read-only: doctor created neither the publication nor the slot nor the stream directory.
    await withClient(src, async (c) => {
      expect((await c.query("SELECT 1 FROM pg_publication WHERE pubname = 'syncline_ops_doctor_pub'")).rowCount).toBe(0);
      expect((await c.query('SELECT 1 FROM pg_replication_slots WHERE slot_name = $1', [BAD_SLOT])).rowCount).toBe(0);
    });
    expect(existsSync(path.join(dir, 'stream-bad'))).toBe(false);

    // The text form names the same problems with their fixes.
    const text = doctor(file, false);
    expect(text.status).toBe(1);
    expect(text.stdout).toMatch(/warn\s+source table public\.nokey\s+has no primary key/);
    expect(text.stdout).toMatch(/fix: add a primary key .* REPLICA IDENTITY FULL;/);
    expect(text.stdout).toMatch(/FAIL\s+publication syncline_ops_doctor_pub/);
    expect(text.stdout).toMatch(/failed: fix the failures above/);
    expect(text.stdout).not.toContain('s3cretpw');
  });

  it('a healthy setup (existing publication and slot) exits 0; a publication syncline will create is a warning', async () => {
    const src = await freshDatabase(pg15, 'syncline_ops_doctor_ok');
    const tgt = await freshDatabase(pg15, 'syncline_ops_doctor_ok_tgt');
    await withClient(src, async (c) => {
      await c.query('CREATE TABLE items (id int PRIMARY KEY, v text); CREATE TABLE "Full Row" (a int, b text)');
      await c.query('ALTER TABLE "Full Row" REPLICA IDENTITY FULL');
      await c.query('CREATE PUBLICATION syncline_ops_doctor_pub FOR TABLE items, "Full Row"');
      await c.query("SELECT pg_create_logical_replication_slot($1, 'pgoutput')", [OK_SLOT]);
    });
    await withClient(tgt, (c) => c.query('CREATE TABLE items (id int PRIMARY KEY, v text); CREATE TABLE "Full Row" (a int, b text)'));
    const config = (pub: string): string => `source:
  url: ${withPassword(src)}
  slots: [{ name: ${OK_SLOT}, publication: ${pub}, tables: [items, '"Full Row"'] }]
stream: { path: ${path.join(dir, 'stream-ok')} }
sink: { url: ${tgt} }
`;
    const r = doctor(await writeConfig('ok.yaml', config('syncline_ops_doctor_pub')));
    expect(r.stderr).toBe('');
    expect(r.report.checks.filter((c) => c.status !== 'ok')).toEqual([]);
    expect(r.report.ok).toBe(true);
    expect(r.status).toBe(0);
    expect(check(r.report, 'source table public.Full Row').detail).toBe('REPLICA IDENTITY FULL, no primary key: replicated as a multiset of whole rows');
    expect(check(r.report, 'sink table public.Full Row')).toMatchObject({ status: 'ok', detail: expect.stringMatching(/multiset of whole rows \(no key needed\)/) });
    expect(check(r.report, `slot ${OK_SLOT}`).detail).toMatch(/^exists, inactive; confirmed [0-9A-F]+\/[0-9A-F]+, retains \d+(\.\d)? (B|KiB|MiB) of WAL \(wal_status reserved\)$/);
    expect(check(r.report, 'publication syncline_ops_doctor_pub').detail).toBe('exists with 2 table(s), including every configured one');

    const warn = doctor(await writeConfig('ok-newpub.yaml', config('syncline_ops_doctor_newpub')));
    expect(warn.status).toBe(0);
    expect(check(warn.report, 'publication syncline_ops_doctor_newpub')).toMatchObject({ status: 'warn', detail: expect.stringMatching(/syncline will create it/) });
  });

  it('a target table syncline will create (sink.create_tables, schema_evolution: full) is not a failure; without, the fix fits a keyless table', async () => {
    const src = await freshDatabase(pg15, 'syncline_ops_doctor_create');
    const tgt = await freshDatabase(pg15, 'syncline_ops_doctor_create_tgt');
    // pgbench's shape: a keyed table and an insert-only one without a key (pgbench_history).
    await withClient(src, (c) => c.query('CREATE TABLE acc (aid int PRIMARY KEY, v text); CREATE TABLE hist (aid int, delta int)'));
    const config = (name: string, sink: string): Promise<string> =>
      writeConfig(
        name,
        `source:
  url: ${src}
  slots: [{ name: syncline_ops_doctor_create, publication: syncline_ops_doctor_create_pub, tables: [acc, hist] }]
stream: { path: ${path.join(dir, 'stream-create')} }
sink: { url: ${tgt}, ${sink} }
`,
      );
    for (const sink of ['create_tables: true', 'schema_evolution: full']) {
      const r = doctor(await config('create.yaml', sink));
      const setting = sink === 'create_tables: true' ? 'sink.create_tables' : 'sink.schema_evolution: full';
      expect(check(r.report, 'sink table public.acc'), sink).toMatchObject({ status: 'ok', detail: `does not exist yet; syncline will create it from the source's definition with PRIMARY KEY ("aid") (${setting})` });
      expect(check(r.report, 'sink table public.hist'), sink).toMatchObject({ status: 'ok', detail: expect.stringMatching(/will create it .*keyless: no primary key/) });
    }
    const r = doctor(await config('no-create.yaml', 'create_tables: false'));
    expect(r.status).toBe(1);
    expect(check(r.report, 'sink table public.acc')).toMatchObject({ status: 'fail', detail: 'does not exist in the sink database', fix: expect.stringMatching(/PRIMARY KEY \("aid"\), or set sink\.create_tables: true$/) });
    expect(check(r.report, 'sink table public.hist')).toMatchObject({ status: 'fail', fix: expect.stringMatching(/and no primary key \(keyless at the source/) });
    await withClient(tgt, async (c) => expect((await c.query("SELECT 1 FROM pg_class WHERE relname IN ('acc', 'hist')")).rowCount).toBe(0));
  });

  it('an unreachable source fails without printing the password; an invalid config exits 2', async () => {
    const file = await writeConfig(
      'down.yaml',
      `source:
  url: postgres://postgres:s3cretpw@127.0.0.1:1/nowhere
  slots: [{ name: syncline_ops_doctor_down, publication: p }]
stream: { broker: nats, url: nats://127.0.0.1:1 }
sink: { url: postgres://postgres:s3cretpw@127.0.0.1:1/nowhere }
`,
    );
    const r = doctor(file);
    expect(r.status).toBe(1);
    expect(check(r.report, 'source reachable')).toMatchObject({ status: 'fail', detail: expect.stringMatching(/ECONNREFUSED/), fix: expect.stringMatching(/source\.url/) });
    expect(check(r.report, 'stream (nats)')).toMatchObject({ status: 'fail', detail: expect.stringMatching(/127\.0\.0\.1:1 \(connect ECONNREFUSED/) });
    expect(check(r.report, 'sink reachable').status).toBe('fail');
    expect(check(r.report, 'dead-letter queue')).toMatchObject({ status: 'fail', fix: expect.stringMatching(/dead_letter\.url/) });
    expect(r.stdout).not.toContain('s3cretpw');

    const bad = await writeConfig('invalid.yaml', 'source: { slots: [] }\nbogus: 1\n');
    const inv = doctor(bad);
    expect(inv.status).toBe(2);
    expect(check(inv.report, 'config')).toMatchObject({ status: 'fail', detail: expect.stringMatching(/bogus/) });
    expect(doctor(bad, false).status).toBe(2);
  });

  it('checks mysql and sqlite sinks table by table with fixes in their own SQL, and a redis sink is reachable', async () => {
    const src = await freshDatabase(pg15, 'syncline_ops_doctor_dialects');
    await withClient(src, (c) =>
      c.query(`CREATE TABLE items (id int PRIMARY KEY, v text); CREATE TABLE "Odd Name" (a int PRIMARY KEY, b text);
               CREATE TABLE nocol (id int PRIMARY KEY, w text); CREATE TABLE bag (x int, y text); ALTER TABLE bag REPLICA IDENTITY FULL;
               CREATE TABLE absent (id int PRIMARY KEY); CREATE TABLE codes (code text PRIMARY KEY); CREATE TABLE exact (code text PRIMARY KEY)`),
    );
    const my = await freshMysqlDatabase('syncline_ops_doctor_my');
    const sqliteFile = path.join(dir, 'doctor.db');
    try {
      await my.admin.query('CREATE TABLE items (id int, v varchar(10) NOT NULL, PRIMARY KEY (id, v))');
      await my.admin.query('CREATE TABLE `Odd Name` (a int PRIMARY KEY, b text)');
      await my.admin.query('CREATE TABLE nocol (id int PRIMARY KEY)');
      await my.admin.query('CREATE TABLE bag (x int PRIMARY KEY, y text)');
      await my.admin.query('CREATE TABLE codes (code varchar(20) COLLATE utf8mb4_general_ci PRIMARY KEY) CHARSET utf8mb4');
      await my.admin.query('CREATE TABLE exact (code varchar(20) COLLATE utf8mb4_nopad_bin PRIMARY KEY) CHARSET utf8mb4');
      const lite = new Database(sqliteFile);
      lite.exec('CREATE TABLE items (id int, v text, PRIMARY KEY (v, id)); CREATE TABLE "Odd Name" (a int PRIMARY KEY, b text); CREATE TABLE nocol (id int); CREATE TABLE bag (x int, y text)');
      lite.close();
      const config = (sink: string, extra = ''): string => `source:
  url: ${src}
  slots: [{ name: syncline_ops_doctor_dialects, publication: syncline_ops_doctor_dialects_pub, tables: [items, '"Odd Name"', nocol, bag, absent, codes, exact] }]
stream: { path: ${path.join(dir, 'stream-dialects')} }
sink: { url: '${sink}'${extra} }
dead_letter: { url: ${src} }
`;
      const mysqlRun = doctor(await writeConfig('mysql.yaml', config(withPassword(my.url).replace('s3cretpw', ''), ', type: mysql')));
      expect(mysqlRun.status).toBe(1);
      expect(check(mysqlRun.report, 'sink reachable')).toMatchObject({ status: 'ok', detail: expect.stringMatching(/^root@127\.0\.0\.1:3306\/syncline_ops_doctor_my \(MySQL /) });
      expect(check(mysqlRun.report, 'sink table public.items')).toMatchObject({
        status: 'fail',
        detail: "primary key (id, v) differs from the source's (id)",
        fix: 'ALTER TABLE `items` DROP PRIMARY KEY, ADD PRIMARY KEY (`id`);',
      });
      expect(check(mysqlRun.report, 'sink table public.Odd Name')).toMatchObject({ status: 'ok', detail: 'exists with primary key (a)' });
      expect(check(mysqlRun.report, 'sink table public.nocol')).toMatchObject({ status: 'fail', fix: 'ALTER TABLE `nocol` ADD COLUMN `w` <type as at the source>;' });
      expect(check(mysqlRun.report, 'sink table public.bag')).toMatchObject({ status: 'warn', fix: 'ALTER TABLE `bag` DROP PRIMARY KEY;' });
      // A text key under a collation that calls 'a' and 'A' (or 'b' and 'b ') equal: two source rows, one target row.
      expect(check(mysqlRun.report, 'sink table public.codes')).toMatchObject({
        status: 'warn',
        detail: expect.stringContaining('code (utf8mb4_general_ci) under a collation that calls different texts equal'),
        fix: 'ALTER TABLE `codes` MODIFY `code` varchar(20) COLLATE utf8mb4_nopad_bin NOT NULL; (MySQL 8: utf8mb4_0900_bin)',
      });
      expect(check(mysqlRun.report, 'sink table public.exact')).toMatchObject({ status: 'ok', detail: 'exists with primary key (code)' });
      expect(check(mysqlRun.report, 'sink table public.absent')).toMatchObject({ status: 'fail', detail: 'does not exist in the sink database', fix: expect.stringMatching(/sink\.schema_evolution: full$/) });
      // schema_evolution full: the sink creates a missing table itself.
      const evolving = doctor(await writeConfig('mysql-full.yaml', config(my.url, ', type: mysql, schema_evolution: full')));
      expect(check(evolving.report, 'sink table public.absent')).toMatchObject({ status: 'ok', detail: 'does not exist yet; syncline will create it from the source\'s definition with PRIMARY KEY (`id`) (sink.schema_evolution: full)' });

      const liteRun = doctor(await writeConfig('sqlite.yaml', config(`sqlite://${sqliteFile}`, ', type: sqlite')));
      expect(liteRun.status).toBe(1);
      expect(check(liteRun.report, 'sink reachable')).toMatchObject({ status: 'ok', detail: expect.stringContaining(sqliteFile) });
      expect(check(liteRun.report, 'sink table public.items')).toMatchObject({ status: 'fail', detail: "primary key (v, id) differs from the source's (id)", fix: expect.stringMatching(/^rebuild "items" with PRIMARY KEY \("id"\)/) });
      expect(check(liteRun.report, 'sink table public.Odd Name').status).toBe('ok');
      expect(check(liteRun.report, 'sink table public.nocol')).toMatchObject({ status: 'fail', detail: 'has no primary key: syncline upserts by key' });
      expect(check(liteRun.report, 'sink table public.bag')).toMatchObject({ status: 'ok', detail: expect.stringMatching(/multiset/) });
      const missingFile = doctor(await writeConfig('sqlite-none.yaml', config(`sqlite://${path.join(dir, 'none.db')}`, ', type: sqlite')));
      expect(check(missingFile.report, 'sink reachable')).toMatchObject({ status: 'fail', detail: expect.stringMatching(/none\.db/) });

      const redisRun = doctor(await writeConfig('redis.yaml', config('redis://127.0.0.1:6379', ', type: redis')));
      expect(check(redisRun.report, 'sink reachable')).toMatchObject({ status: 'ok', detail: expect.stringMatching(/\(Redis \d/) });
      const redisDown = doctor(await writeConfig('redis-down.yaml', config('redis://:s3cretpw@127.0.0.1:1', ', type: redis')));
      expect(check(redisDown.report, 'sink reachable')).toMatchObject({ status: 'fail', detail: expect.stringMatching(/ECONNREFUSED/) });
      expect(redisDown.stdout).not.toContain('s3cretpw');
    } finally {
      await my.drop();
    }
  });

  describe('on PostgreSQL 17 with wal_level=replica', () => {
    let replica: PgServer;
    beforeAll(async () => {
      replica = await embeddedPg17('replica');
    }, 120_000);
    afterAll(async () => {
      await replica?.stop();
    });

    it('names wal_level and the fix; exit 1', async () => {
      const url = await freshDatabase(replica, 'syncline_ops_doctor');
      const c = new pg.Client({ connectionString: url });
      await c.connect();
      await c.query('CREATE TABLE items (id int PRIMARY KEY)');
      await c.end();
      const r = doctor(
        await writeConfig(
          'replica.yaml',
          `source:
  url: ${url}
  slots: [{ name: syncline_ops_doctor, publication: syncline_ops_doctor_pub, tables: [items] }]
stream: { path: ${path.join(dir, 'stream-17')} }
sink: { url: ${url} }
`,
        ),
      );
      expect(r.status).toBe(1);
      const wal = check(r.report, 'wal_level');
      expect(wal).toMatchObject({ status: 'fail', detail: "wal_level is 'replica'; logical decoding needs 'logical'" });
      expect(wal.fix).toMatch(/^ALTER SYSTEM SET wal_level = logical; then restart PostgreSQL/);
      expect(r.report.checks.filter((x) => x.status === 'fail').map((x) => x.name)).toEqual(['wal_level']);
      expect(r.stdout).not.toContain(':test@');
    });
  });
});
