// Does pgoutput's `binary` option help? Measures what the server spends decoding and sending
// the same WAL as text vs binary column values: two slots created before N inserts (in
// 1k-row transactions) of a row of common types, each drained to /dev/null by pg_recvlogical
// (protocol 2, no streaming), in alternating order, several rounds.
//
//   node bench/pgoutput-binary.bench.mjs [rows=500000] [admin-url]
//
// Binary values would also have to be turned back into text by syncline for the JSON change
// event and the text-mode sinks, per type, in JavaScript; the server's text output is that
// conversion done in C. So binary mode could only pay if the server were clearly faster.
import { execFileSync } from 'node:child_process';
import { statSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';

const ROWS = Number(process.argv[2] ?? 500_000);
const ADMIN = process.argv[3] ?? process.env.SYNCLINE_BENCH_PG_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
const DB = 'syncline_bench_binary';
const ROUNDS = 3;
const urlOf = (db) => {
  const u = new URL(ADMIN);
  u.pathname = `/${db}`;
  return u.toString();
};
async function query(url, sql, params) {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  try {
    return await c.query(sql, params);
  } finally {
    await c.end();
  }
}

await query(ADMIN, 'SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = $1', [DB]);
await query(ADMIN, `DROP DATABASE IF EXISTS ${DB} WITH (FORCE)`);
await query(ADMIN, `CREATE DATABASE ${DB}`);
const url = urlOf(DB);
await query(url, `CREATE TABLE t (id bigint PRIMARY KEY, qty integer, price numeric(12,2), ratio float8, at timestamptz,
  code uuid, name text, tags text[], doc jsonb)`);
await query(url, 'CREATE PUBLICATION bin_pub FOR TABLE t');
const slots = ['bin_text', 'bin_binary'];
for (const s of slots) for (let r = 0; r < ROUNDS; r++) await query(url, "SELECT pg_create_logical_replication_slot($1, 'pgoutput')", [`${s}_${r}`]);
const c = new pg.Client({ connectionString: url });
await c.connect();
for (let i = 0; i < ROWS; i += 1000) {
  await c.query(
    `INSERT INTO t SELECT g, g % 1000, (g * 1.25)::numeric(12,2), g / 7.0, now() + g * interval '1 second',
       md5(g::text)::uuid, 'name ' || g, ARRAY['a' || g, 'b'], jsonb_build_object('g', g, 'h', 'x')
       FROM generate_series($1::bigint, $2::bigint) g`,
    [i + 1, Math.min(i + 1000, ROWS)],
  );
}
const end = (await c.query('SELECT pg_current_wal_lsn()::text AS l')).rows[0].l;
await c.end();

const u = new URL(url);
const out = path.join(os.tmpdir(), `pgoutput-binary-${process.pid}.out`);
function drain(slot, binary) {
  rmSync(out, { force: true });
  const t0 = performance.now();
  execFileSync('pg_recvlogical', [
    '-h', u.hostname, '-p', u.port || '5432', '-U', decodeURIComponent(u.username || 'postgres'), '-d', DB,
    '--start', '-S', slot, '-E', end, '--no-loop', '-f', out,
    '-o', 'proto_version=2', '-o', 'publication_names=bin_pub', '-o', `binary=${binary}`,
  ]);
  const seconds = (performance.now() - t0) / 1000;
  const bytes = statSync(out).size;
  rmSync(out, { force: true });
  return { seconds, bytes };
}
const results = { text: [], binary: [] };
for (let r = 0; r < ROUNDS; r++) {
  const order = r % 2 === 0 ? ['text', 'binary'] : ['binary', 'text'];
  for (const mode of order) results[mode].push(drain(`bin_${mode}_${r}`, mode === 'binary'));
}
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const report = {};
for (const mode of ['text', 'binary']) {
  const s = median(results[mode].map((x) => x.seconds));
  report[mode] = { median_seconds: Number(s.toFixed(2)), rows_per_second: Math.round(ROWS / s), mib: Number((results[mode][0].bytes / 2 ** 20).toFixed(1)) };
}
console.log(JSON.stringify({ bench: 'pgoutput-binary', rows: ROWS, ...report }));
for (const s of slots) for (let r = 0; r < ROUNDS; r++) await query(url, 'SELECT pg_drop_replication_slot($1)', [`${s}_${r}`]);
await query(ADMIN, `DROP DATABASE IF EXISTS ${DB} WITH (FORCE)`);
