// Verify of an equal table: rows/s and peak RSS of the checksum verify (dist/verify) against
// the previous whole-table merge (every key and md5 read into Node), each in its own process.
//   npm run build && node bench/verify.bench.mjs 10000000 [new|old|both]
// Prints one JSON line per run. Tables live in syncline_verify14_bench_{source,target} on PG15.
import { execFileSync, spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import pg from 'pg';

const N = Number(process.argv[2] ?? 1_000_000);
const mode = process.argv[3] ?? 'both';
const base = process.env.SYNCLINE_TEST_PG15_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
const url = (db) => { const u = new URL(base); u.pathname = `/${db}`; return u.toString(); };
const SRC = 'syncline_verify14_bench_source';
const DST = 'syncline_verify14_bench_target';

async function q(db, sql, params) {
  const c = new pg.Client({ connectionString: url(db) });
  await c.connect();
  try { return await c.query(sql, params); } finally { await c.end(); }
}

async function prepare() {
  for (const db of [SRC, DST]) {
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
  const s = new pg.Client({ connectionString: url(SRC) });
  const t = new pg.Client({ connectionString: url(DST) });
  await s.connect(); await t.connect();
  let differing; let rows;
  if (which === 'new') {
    const { verifyTables } = await import('../dist/verify/session.js');
    await s.end(); await t.end();
    const [r] = await verifyTables([{ table: { schema: 'public', table: 'bench' } }], { source: { connectionString: url(SRC) }, targetUrl: url(DST), parallelism: Number(process.env.PARALLELISM ?? 2) });
    differing = r.differing; rows = r.sourceRows;
  } else {
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
  console.log(JSON.stringify({ mode: which, parallelism: which === 'new' ? Number(process.env.PARALLELISM ?? 2) : 1, rows, differing, seconds: +secs.toFixed(2), rowsPerSecond: Math.round(rows / secs), peakRssMiB: Math.round(process.resourceUsage().maxRSS / 1024), nodeCpuSeconds: +((cpu.user + cpu.system) / 1e6).toFixed(2) }));
}

if (process.env.SYNCLINE_BENCH_CHILD) await child(process.env.SYNCLINE_BENCH_CHILD);
else {
  const t0 = Date.now();
  await prepare();
  console.log(JSON.stringify({ prepared: N, seconds: (Date.now() - t0) / 1000 }));
  for (const which of mode === 'both' ? ['new', 'old'] : [mode]) {
    const r = spawnSync(process.execPath, ['--max-old-space-size=8192', fileURLToPath(import.meta.url), String(N)], { env: { ...process.env, SYNCLINE_BENCH_CHILD: which }, encoding: 'utf8' });
    process.stdout.write(r.stdout || `${JSON.stringify({ mode: which, failed: r.status, stderr: r.stderr.slice(-500) })}\n`);
  }
}
void execFileSync;
