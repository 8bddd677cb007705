#!/usr/bin/env node
// Records the raw pgoutput messages a real server sends for a scripted workload, as hex,
// into test/fixtures/pgoutput-v<N>.json. The decoder's unit tests replay them.
// Usage: npm run build && node scripts/capture-pgoutput-fixtures.mjs [url] [protoVersion]
import { writeFileSync } from 'node:fs';
import pg from 'pg';
import { ReplicationStream } from '../dist/source/replication-stream.js';
import { parseReplicationFrame } from '../dist/pgoutput/replication-frames.js';

const adminUrl = process.argv[2] ?? 'postgres://postgres@127.0.0.1:5432/postgres';
const proto = Number(process.argv[3] ?? '1');
const dbName = 'syncline_fixture';
const admin = new pg.Client({ connectionString: adminUrl });
await admin.connect();
await admin.query("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = 'fixture_slot'");
await admin.query(`DROP DATABASE IF EXISTS ${dbName} WITH (FORCE)`);
await admin.query(`CREATE DATABASE ${dbName}`);
const server = (await admin.query("SELECT current_setting('server_version_num') AS v")).rows[0].v;
await admin.end();

const url = new URL(adminUrl);
url.pathname = `/${dbName}`;
const db = new pg.Client({ connectionString: url.toString() });
await db.connect();
await db.query(`
  CREATE TABLE fx (id integer PRIMARY KEY, t text, n numeric, b bytea, big text, arr int[], ts timestamptz);
  CREATE TABLE fx_full (a integer, b text);
  ALTER TABLE fx_full REPLICA IDENTITY FULL;
  CREATE PUBLICATION fixture_pub FOR TABLE fx, fx_full;`);
await db.query("SELECT pg_create_logical_replication_slot('fixture_slot', 'pgoutput')");
// Incompressible enough to be stored out of line (TOASTed), so an UPDATE that leaves it
// alone sends it as 'u' (unchanged).
const big = (await db.query("SELECT string_agg(md5(i::text), '') AS s FROM generate_series(1, 300) i")).rows[0].s;
await db.query(`INSERT INTO fx VALUES (1, 'one', 1.50, '\\x00ff', $1, '{{1,2},{3,NULL}}', '2026-01-02 03:04:05.123456+00')`, [big]);
await db.query("INSERT INTO fx (id, t, n) VALUES (2, NULL, 'NaN')");
await db.query("UPDATE fx SET t = 'uno' WHERE id = 1"); // big is TOASTed and unchanged: sent as 'u'
await db.query('UPDATE fx SET id = 3 WHERE id = 2'); // key change: old key sent
await db.query("INSERT INTO fx_full VALUES (10, 'ten')");
await db.query("UPDATE fx_full SET b = 'TEN' WHERE a = 10"); // full old row sent
await db.query('DELETE FROM fx WHERE id = 3');
await db.query('DELETE FROM fx_full WHERE a = 10');
await db.query('BEGIN; INSERT INTO fx (id, t) VALUES (4, $$quote ' + "'" + ' "x"$$); SELECT pg_logical_emit_message(true, $$tx$$, $$in-tx$$); COMMIT');
await db.query('TRUNCATE fx_full');
await db.query("SELECT pg_logical_emit_message(false, 'fixture.end', 'done')");
await db.end();

const messages = [];
const stream = new ReplicationStream({
  connection: { connectionString: url.toString() },
  slot: 'fixture_slot',
  publication: 'fixture_pub',
  protocolVersion: proto,
  messages: true,
});
let finished;
const done = new Promise((r) => (finished = r));
void stream.start((chunk) => {
  const frame = parseReplicationFrame(chunk);
  if (frame.tag !== 'xlog') return;
  const body = chunk.subarray(frame.dataOffset);
  messages.push(body.toString('hex'));
  if (body[0] === 0x4d && body.includes(Buffer.from('fixture.end'))) finished();
});
await Promise.race([done, new Promise((_, rej) => setTimeout(() => rej(new Error('timeout')), 15000))]);
await stream.close();
const out = `test/fixtures/pgoutput-v${proto}.json`;
writeFileSync(out, JSON.stringify({ server_version_num: Number(server), proto_version: proto, big_length: big.length, messages }, null, 1) + '\n');
console.log(`wrote ${messages.length} messages to ${out}`);

const cleanup = new pg.Client({ connectionString: adminUrl });
await cleanup.connect();
await cleanup.query("SELECT pg_drop_replication_slot('fixture_slot')");
await cleanup.query(`DROP DATABASE ${dbName} WITH (FORCE)`);
await cleanup.end();
