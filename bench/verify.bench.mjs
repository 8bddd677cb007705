// Verify of an equal table: rows/s and peak RSS of the checksum verify (dist/verify) against
// the previous whole-table merge (every key and md5 read into Node), each in its own process.
//   npm run build && node bench/verify.bench.mjs 10000000 [new|old|both] [postgres|mysql|sqlite]
//   SYNCLINE_BENCH_TABLE=pgbench node bench/verify.bench.mjs 10000000 new   (pgbench_accounts instead)
// Prints one JSON line per run. Tables live in syncline_verify14_bench_{source,target} on PG15;
// a mysql target in the MariaDB database syncline_verify14_bench (SYNCLINE_TEST_MYSQL_URL's
// server), a sqlite target in $TMPDIR/syncline_verify14_bench.db, both filled as the sinks
// would store the source's rows (UTC DATETIME(6), 1/0 booleans, DECIMAL). "old" is postgres only.
import { createHash } from 'node:crypto';
import { execFileSync, spawnSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import Database from 'better-sqlite3';
import mysql from 'mysql2/promise';
import pg from 'pg';

const N = Number(process.argv[2] ?? 1_000_000);
const mode = process.argv[3] ?? 'both';
const targetType = process.argv[4] ?? 'postgres';
const MYSQL_DB = 'syncline_verify14_bench';
const mysqlUrl = (() => { const u = new URL(process.env.SYNCLINE_TEST_MYSQL_URL ?? 'mysql://root@127.0.0.1:3306/test'); u.pathname = `/${MYSQL_DB}`; return u.toString(); })();
const sqliteFile = path.join(os.tmpdir(), 'syncline_verify14_bench.db');
const targetUrl = () => (targetType === 'mysql' ? mysqlUrl : targetType === 'sqlite' ? `sqlite://${sqliteFile}` : url(DST));
const base = process.env.SYNCLINE_TEST_PG15_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
const url = (db) => { const u = new URL(base); u.pathname = `/${db}`; return u.toString(); };
const SRC = 'syncline_verify14_bench_source';
const DST = 'syncline_verify14_bench_target';

async function q(db, sql, params) {
  const c = new pg.Client({ connectionString: url(db) });
  await c.connect();
  try { return await c.query(sql, params); } finally { await c.end(); }
}

async function prepareMysql() {
  const root = new URL(mysqlUrl); root.pathname = '/';
  const c = await mysql.createConnection({ uri: root.toString(), multipleStatements: true });
  try {
    await c.query(`CREATE DATABASE IF NOT EXISTS ${MYSQL_DB}`);
    await c.query(`USE ${MYSQL_DB}`);
    const [have] = await c.query("SELECT COUNT(*) AS n FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'bench'");
    if (Number(have[0].n) > 0 && Number((await c.query('SELECT COUNT(*) AS n FROM bench'))[0][0].n) === N) return;
    await c.query('DROP TABLE IF EXISTS bench');
    await c.query('CREATE TABLE bench (id BIGINT PRIMARY KEY, name TEXT, amount DECIMAL(12,2), at DATETIME(6), flag TINYINT(1))');
    // MariaDB's sequence engine; the same values as the source's, stored as the mysql sink stores them.
    for (let lo = 1; lo <= N; lo += 500_000) {
      const hi = Math.min(N, lo + 499_999);
      await c.query(`INSERT INTO bench SELECT seq, CONCAT('customer-', MD5(seq)), (seq % 100000) / 100, TIMESTAMP'2024-01-01 00:00:00' + INTERVAL seq SECOND, seq % 3 = 0 FROM seq_${lo}_to_${hi}`);
    }
  } finally {
    await c.end();
  }
}

function prepareSqlite() {
  const db = new Database(sqliteFile);
  try {
    db.pragma('journal_mode = WAL');
    const has = db.prepare("SELECT 1 FROM sqlite_master WHERE name = 'bench'").get();
    if (has && db.prepare('SELECT count(*) AS n FROM bench').get().n === N) return;
    db.exec('DROP TABLE IF EXISTS bench; CREATE TABLE bench (id INTEGER PRIMARY KEY, name TEXT, amount NUMERIC(12,2), at TIMESTAMPTZ, flag BOOLEAN)');
    const put = db.prepare('INSERT INTO bench VALUES (?, ?, ?, ?, ?)');
    const t0 = Date.UTC(2024, 0, 1);
    db.transaction(() => {
      for (let i = 1; i <= N; i++) {
        const at = new Date(t0 + i * 1000).toISOString().replace('T', ' ').replace(/\.\d+Z$/, '.000000');
        put.run(i, `customer-${createHash('md5').update(String(i)).digest('hex')}`, ((i % 100000) / 100).toFixed(2), at, i % 3 === 0 ? 1 : 0);
      }
    })();
  } finally {
    db.close();
  }
}

/**
 * SYNCLINE_BENCH_TABLE=pgbench: pgbench's own accounts table (int, int, int, char(84); N a
 * multiple of 100,000), made by `pgbench -i` in both databases (postgres target, mode new).
 */
const PGBENCH = process.env.SYNCLINE_BENCH_TABLE === 'pgbench';
const TABLE = PGBENCH ? 'pgbench_accounts' : 'bench';

async function preparePgbench() {
  for (const db of [SRC, DST]) {
    const exists = (await q('postgres', 'SELECT 1 FROM pg_database WHERE datname = $1', [db])).rowCount > 0;
    if (!exists) await q('postgres', `CREATE DATABASE ${db}`);
    const n = await q(db, `SELECT count(*)::int AS n FROM pg_class WHERE relname = 'pgbench_accounts'`).then(async (r) => (r.rows[0].n ? (await q(db, 'SELECT count(*)::int AS n FROM pgbench_accounts')).rows[0].n : -1));
    if (n !== N) execFileSync('pgbench', ['-i', '-q', '-s', String(N / 100_000), url(db)], { stdio: 'ignore' });
  }
}

async function prepare() {
  if (PGBENCH) return preparePgbench();
  if (targetType === 'mysql') await prepareMysql();
  if (targetType === 'sqlite') prepareSqlite();
  for (const db of targetType === 'postgres' ? [SRC, DST] : [SRC]) {
    const exists = (await q('postgres', 'SELECT 1 FROM pg_database WHERE datname = $1', [db])).rowCount > 0;
    if (!exists) await q('postgres', `CREATE DATABASE ${db}`);
    const n = await q(db, `SELECT count(*)::int AS n FROM pg_class WHERE relname = 'bench'`).then(async (r) => (r.rows[0].n ? (await q(db, 'SELECT count(*)::int AS n FROM bench')).rows[0].n : -1));
    if (n === N) continue;
    await q(db, 'DROP TABLE IF EXISTS bench');
    // ~100-byte rows of common types.
    await q(db, `CREATE TABLE bench (id bigint PRIMARY KEY, name text, amount numeric(12,2), at timestamptz, flag boolean)`);
    await q(db, `INSERT INTO bench SELECT i, 'customer-' || md5(i::text), (i % 100000) / 100.0, timestamptz '2024-01-01 00:00:00+00' + i * interval '1 second', i % 3 = 0 FROM generate_series(1, ${N}) i`);
    await q(db, 'VACUUM ANALYZE bench');
  }
}

async function child(which) {
  const started = process.hrtime.bigint();
  let differing; let rows;
  if (which === 'new') {
    const { verifyTables } = await import('../dist/verify/session.js');
    const [r] = await verifyTables([{ table: { schema: 'public', table: TABLE } }], { source: { connectionString: url(SRC) }, targetUrl: targetUrl(), targetType, parallelism: Number(process.env.PARALLELISM ?? 2) });
    differing = r.differing; rows = r.sourceRows;
  } else {
    const s = new pg.Client({ connectionString: url(SRC) });
    const t = new pg.Client({ connectionString: url(DST) });
    await s.connect(); await t.connect();
    // The previous compare.ts: both sides' key + md5 ordered by key, merged in Node.
    const side = `SELECT to_json(ARRAY[id::text])::text AS k, md5(ROW(id, name, amount, at, flag)::text) AS h FROM bench ORDER BY to_json(ARRAY[id::text])::text COLLATE "C"`;
    const [a, b] = await Promise.all([s.query(side), t.query(side)]);
    let i = 0; let j = 0; differing = 0;
    while (i < a.rows.length || j < b.rows.length) {
      const x = a.rows[i]; const y = b.rows[j];
      if (x && (!y || x.k < y.k)) { differing++; i++; } else if (y && (!x || y.k < x.k)) { differing++; j++; } else { if (x.h !== y.h) differing++; i++; j++; }
    }
    rows = a.rows.length;
    await s.end(); await t.end();
  }
  const secs = Number(process.hrtime.bigint() - started) / 1e9;
  const cpu = process.cpuUsage();
  console.log(JSON.stringify({ table: TABLE, mode: which, target: which === 'new' ? targetType : 'postgres', parallelism: which === 'new' ? Number(process.env.PARALLELISM ?? 2) : 1, rows, differing, seconds: +secs.toFixed(2), rowsPerSecond: Math.round(rows / secs), peakRssMiB: Math.round(process.resourceUsage().maxRSS / 1024), nodeCpuSeconds: +((cpu.user + cpu.system) / 1e6).toFixed(2) }));
}

if (process.env.SYNCLINE_BENCH_CHILD) await child(process.env.SYNCLINE_BENCH_CHILD);
else {
  const t0 = Date.now();
  await prepare();
  console.log(JSON.stringify({ prepared: N, seconds: (Date.now() - t0) / 1000 }));
  for (const which of mode === 'both' ? ['new', 'old'] : [mode]) {
    const cpu0 = postgresCpuSeconds();
    const r = spawnSync(process.execPath, ['--max-old-space-size=8192', fileURLToPath(import.meta.url), String(N), which, targetType], { env: { ...process.env, SYNCLINE_BENCH_CHILD: which }, encoding: 'utf8' });
    const serverCpuSeconds = +(postgresCpuSeconds() - cpu0).toFixed(2);
    if (!r.stdout) process.stdout.write(`${JSON.stringify({ mode: which, failed: r.status, stderr: r.stderr.slice(-500) })}\n`);
    // The server-side cost: CPU of every PostgreSQL process of this machine (both databases are on it).
    else process.stdout.write(`${JSON.stringify({ ...JSON.parse(r.stdout), serverCpuSeconds })}\n`);
  }
}

/**
 * CPU seconds of the machine's postgres processes, ended backends included (the postmaster
 * reaps them: its children's time). Linux /proc; 0 elsewhere.
 */
function postgresCpuSeconds() {
  let ticks = 0;
  for (const pid of (() => { try { return readdirSync('/proc'); } catch { return []; } })()) {
    if (!/^\d+$/.test(pid)) continue;
    let stat;
    try { stat = readFileSync(`/proc/${pid}/stat`, 'utf8'); } catch { continue; }
    const comm = stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')'));
    if (comm !== 'postgres') continue;
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    // Fields 14-17 (utime, stime, cutime, cstime), counted from the state field as 3.
    ticks += Number(f[11]) + Number(f[12]) + Number(f[13]) + Number(f[14]);
  }
  return ticks / 100;
}
