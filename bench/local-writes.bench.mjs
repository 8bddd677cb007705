#!/usr/bin/env node
// What conflict tracking's triggers (src/sink/postgres/local-writes.ts) cost the target's
// application: the same statements on a table without them (plain), on one the postgres sink
// tracks (tracked, one delta column), and on a partitioned tracked table (two partitions; half
// its key UPDATEs move rows to the other partition): 2000 single-row non-key UPDATE
// statements (a server-side loop: every UPDATE statement fires the statement trigger), a key
// UPDATE of every row, a non-key UPDATE of a tenth, 2000 single-row DELETE statements, a
// DELETE of every row. Three repetitions each. Beside each wall time, the server backend's CPU
// time (user + system, from /proc when the server runs on this machine: steadier than wall
// time on a loaded machine).
// Usage: npm run -s build && node bench/local-writes.bench.mjs [rows=100000]
// (SYNCLINE_BENCH_PG_URL: an admin URL of a PostgreSQL server, default 127.0.0.1:5432;
// SYNCLINE_BENCH_DIST: another build's dist directory to measure, e.g. an earlier commit's.)
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import pg from 'pg';
const dist = process.env.SYNCLINE_BENCH_DIST ? pathToFileURL(path.resolve(process.env.SYNCLINE_BENCH_DIST)).href : new URL('../dist', import.meta.url).href;
const { PostgresSink } = await import(`${dist}/sink/postgres/postgres-sink.js`);
const { builtInResolver, withDeltas } = await import(`${dist}/sink/conflicts/resolve.js`);
const N = Number(process.argv[2] ?? 100000);
const SINGLE = Math.min(2000, N / 2);
const ADMIN = process.env.SYNCLINE_BENCH_PG_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
const admin = new pg.Client({ connectionString: ADMIN });
await admin.connect();
await admin.query('DROP DATABASE IF EXISTS red_cf2_bench WITH (FORCE)');
await admin.query('CREATE DATABASE red_cf2_bench');
const url = Object.assign(new URL(ADMIN), { pathname: '/red_cf2_bench' }).toString();
const c = new pg.Client({ connectionString: url });
await c.connect();
await c.query(`CREATE TABLE plain (id int PRIMARY KEY, v text, n bigint); CREATE TABLE tracked (id int PRIMARY KEY, v text, n bigint);
  CREATE TABLE ptracked (id int PRIMARY KEY, v text, n bigint) PARTITION BY RANGE (id);
  CREATE TABLE ptracked_1 PARTITION OF ptracked FOR VALUES FROM (0) TO (${N / 2 + 1}); CREATE TABLE ptracked_2 PARTITION OF ptracked FOR VALUES FROM (${N / 2 + 1}) TO (${4 * N})`);
const sink = new PostgresSink({ url, stateSchema: 'syncline', deleteMode: 'hard', versionGate: true,
  conflicts: { strategy: 'last_write_wins', resolver: withDeltas(builtInResolver('last_write_wins')), deltaColumns: new Map([['public.tracked', ['n']]]), localSource: 'local' },
  trackedTables: [{ schema: 'public', table: 'tracked' }, { schema: 'public', table: 'ptracked' }] });
await sink.prepare();
await sink.close();
const backend = (await c.query('SELECT pg_backend_pid() AS pid')).rows[0].pid;
/** The backend's CPU time in ms (utime + stime, 10 ms ticks), or NaN when its /proc entry cannot be read. */
const cpu = () => {
  try {
    const f = readFileSync(`/proc/${backend}/stat`, 'utf8').split(') ')[1].split(' ');
    return (Number(f[11]) + Number(f[12])) * 10;
  } catch {
    return NaN;
  }
};
/** [wall ms, rows, cpu ms] of `sql`, printed as `wall ms (cpu ms)`. */
const time = async (sql) => {
  const c0 = cpu();
  const t = process.hrtime.bigint();
  const r = await c.query(sql);
  const ms = Number(process.hrtime.bigint() - t) / 1e6;
  const used = cpu() - c0;
  return [`${ms.toFixed(0)} ms${Number.isNaN(used) ? '' : ` (cpu ${used})`}`, r.rowCount];
};
const fill = async (t) => { await c.query(`TRUNCATE ${t}; INSERT INTO ${t} SELECT g, 'row ' || g, g FROM generate_series(1, ${N}) g`); await c.query(`VACUUM ANALYZE ${t}`); await c.query('TRUNCATE syncline.source_tombstones'); };
/** SINGLE statements of `sql` (with $1 the loop's i), in one server-side loop. */
const loop = (sql) => `DO $$ BEGIN FOR i IN 1..${SINGLE} LOOP ${sql.replace('$1', 'i')}; END LOOP; END $$`;
console.log(`rows ${N}; ${new Date().toISOString()}; ${dist}`);
for (let rep = 0; rep < 3; rep++) {
  for (const t of ['plain', 'tracked', 'ptracked']) {
    await fill(t);
    const [one] = await time(loop(`UPDATE ${t} SET v = 'y' WHERE id = $1 * 7`));
    const [upd, n1] = await time(`UPDATE ${t} SET id = id + ${N}`);
    const [upd1, n3] = await time(`UPDATE ${t} SET v = v || 'x' WHERE id % 10 = 0`);
    const [oneDel] = await time(loop(`DELETE FROM ${t} WHERE id = ${N} + $1 * 7`));
    const [del, n2] = await time(`DELETE FROM ${t}`);
    const tombs = (await c.query('SELECT count(*)::int AS n FROM syncline.source_tombstones')).rows[0].n;
    console.log(`${t.padEnd(9)} ${SINGLE} single-row UPDATEs: ${one}; key UPDATE of ${n1} rows: ${upd}; non-key UPDATE of ${n3}: ${upd1}; ` +
      `${SINGLE} single-row DELETEs: ${oneDel}; DELETE of ${n2} rows: ${del}; tombstones ${tombs}`);
  }
}
await c.end();
await admin.query('DROP DATABASE red_cf2_bench WITH (FORCE)');
await admin.end();
