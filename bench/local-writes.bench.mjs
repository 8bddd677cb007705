#!/usr/bin/env node
// What conflict tracking's triggers (src/sink/postgres/local-writes.ts) cost the target's
// application: the same statements on a table without them (plain) and on one the postgres
// sink tracks (tracked, one delta column): a key UPDATE of every row (the per-row key-change
// trigger), a non-key UPDATE of a tenth (no trigger fires), a DELETE of every row (the
// statement trigger, one insert from its transition table); and a partitioned tracked table
// (two partitions; its delete trigger is per row, and half its key UPDATEs move rows to the
// other partition). Three repetitions each.
// Usage: npm run -s build && node bench/local-writes.bench.mjs [rows=100000]
// (SYNCLINE_BENCH_PG_URL: an admin URL of a PostgreSQL server, default 127.0.0.1:5432.)
import pg from 'pg';
import { PostgresSink } from '../dist/sink/postgres/postgres-sink.js';
import { builtInResolver, withDeltas } from '../dist/sink/conflicts/resolve.js';
const N = Number(process.argv[2] ?? 100000);
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
const time = async (sql) => { const t = process.hrtime.bigint(); const r = await c.query(sql); return [Number(process.hrtime.bigint() - t) / 1e6, r.rowCount]; };
const fill = async (t) => { await c.query(`TRUNCATE ${t}; INSERT INTO ${t} SELECT g, 'row ' || g, g FROM generate_series(1, ${N}) g`); await c.query(`VACUUM ANALYZE ${t}`); await c.query('TRUNCATE syncline.source_tombstones'); };
for (let rep = 0; rep < 3; rep++) {
  for (const t of ['plain', 'tracked', 'ptracked']) {
    await fill(t);
    const [upd, n1] = await time(`UPDATE ${t} SET id = id + ${N}`);
    const [upd1, n3] = await time(`UPDATE ${t} SET v = v || 'x' WHERE id % 10 = 0`);
    const [del, n2] = await time(`DELETE FROM ${t}`);
    const tombs = (await c.query('SELECT count(*)::int AS n FROM syncline.source_tombstones')).rows[0].n;
    console.log(`${t.padEnd(9)} key UPDATE of ${n1} rows: ${upd.toFixed(0)} ms; non-key UPDATE of ${n3}: ${upd1.toFixed(0)} ms; DELETE of ${n2} rows: ${del.toFixed(0)} ms; tombstones ${tombs}`);
  }
}
await c.end();
await admin.query('DROP DATABASE red_cf2_bench WITH (FORCE)');
await admin.end();
