import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sourceConnection } from '../../src/compose/source-connection.js';
import { parseConfig } from '../../src/config/load.js';
import { runDoctor } from '../../src/doctor/doctor.js';
import { embeddedPg17, type PgServer } from '../helpers/postgres.js';

/**
 * Acceptance pass 5: for a lost slot doctor said to drop it ("syncline creates a new slot on
 * start") and reload the target, while capture's own error names `syncline resync` (then run
 * and repair). Followed, doctor's advice now ends in capture refusing the dropped slot (it
 * streamed from it before): doctor names the same recovery as capture.
 */
describe('doctor on a lost slot (PostgreSQL 17)', () => {
  let server: PgServer;
  let source: pg.Client;

  beforeAll(async () => {
    server = await embeddedPg17('logical', ['-c', 'max_slot_wal_keep_size=1MB']);
    const admin = new pg.Client({ connectionString: server.url('postgres') });
    await admin.connect();
    await admin.query('CREATE DATABASE lost_doctor');
    await admin.end();
    source = new pg.Client({ connectionString: server.url('lost_doctor') });
    await source.connect();
    await source.query('CREATE TABLE t (id integer PRIMARY KEY, v text)');
    await source.query("SELECT pg_create_logical_replication_slot('lost_doctor_slot', 'pgoutput')");
    for (let i = 0; i < 4; i++) {
      await source.query("INSERT INTO t SELECT g, repeat('x', 500) FROM generate_series($1::int * 10000, $1::int * 10000 + 4000) g", [i]);
      await source.query('SELECT pg_switch_wal()');
    }
    await source.query('CHECKPOINT');
  }, 120_000);

  afterAll(async () => {
    await source?.query("SELECT pg_drop_replication_slot('lost_doctor_slot')").catch(() => undefined);
    await source?.end();
    await server?.stop();
  });

  it('names syncline resync as the fix', async () => {
    const { rows } = await source.query<{ wal_status: string }>("SELECT wal_status FROM pg_replication_slots WHERE slot_name = 'lost_doctor_slot'");
    expect(rows[0]?.wal_status).toBe('lost');
    const config = parseConfig(`source:
  url: ${server.url('lost_doctor')}
  slots: [{ name: lost_doctor_slot, publication: lost_doctor_pub, tables: [t] }]
sink: { url: ${server.url('lost_doctor')} }
monitoring: { enabled: false }
`);
    const report = await runDoctor(config, sourceConnection(config));
    expect(report.checks.find((c) => c.name === 'slot lost_doctor_slot')).toMatchObject({ status: 'fail', fix: expect.stringMatching(/syncline resync .*syncline repair/) });
  });
});
