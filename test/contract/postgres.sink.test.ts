import pg from 'pg';
import { describe, expect, it } from 'vitest';
import { PrerequisiteError, SynclineError } from '../../src/core/errors.js';
import { PostgresSink } from '../../src/sink/postgres/postgres-sink.js';
import { freshDatabase, machinePg15, waitFor } from '../helpers/postgres.js';
import { ChangeFactory, REJECT_VALUE, describeSinkContract, describeSoftDeleteContract } from './sink-contract.js';

describeSinkContract('postgres (PostgreSQL 15)', async () => {
  const server = await machinePg15();
  const url = await freshDatabase(server, 'syncline_sinkc_pg');
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  const sink = new PostgresSink({ url, stateSchema: 'syncline', deleteMode: 'hard', versionGate: true });
  return {
    sink,
    storesPositions: true,
    missingTableIsPrerequisite: true,
    async createTable(table) {
      await client.query(
        `CREATE TABLE public.${pg.escapeIdentifier(table)} (id text PRIMARY KEY, v text CHECK (v IS DISTINCT FROM ${pg.escapeLiteral(REJECT_VALUE)}), n text)`,
      );
    },
    async readRow(table, key) {
      const { rows } = await client.query<{ id: string; v: string | null; n: string | null }>(
        `SELECT id, v, n FROM public.${pg.escapeIdentifier(table)} WHERE id = $1`,
        [key.id],
      );
      return rows[0];
    },
    async close() {
      await sink.close();
      await client.end();
    },
  };
});

// The reference semantics of delete_mode: soft, which the mysql and sqlite sinks share.
describeSoftDeleteContract('postgres (PostgreSQL 15)', async () => {
  const server = await machinePg15();
  const url = await freshDatabase(server, 'syncline_sinkc_pg_soft');
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  const sink = new PostgresSink({ url, stateSchema: 'syncline', deleteMode: 'soft', versionGate: true });
  type Stored = { id: string; v: string | null; n: string | null; deletedAt: string | null };
  const readStored = async (table: string, key: Record<string, string>): Promise<Stored | undefined> => {
    const { rows: cols } = await client.query("SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass($1) AND attname = '_deleted_at'", [`public.${pg.escapeIdentifier(table)}`]);
    const deletedAt = cols.length > 0 ? `to_char(_deleted_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US')` : 'NULL::text';
    const { rows } = await client.query<Stored>(`SELECT id, v, n, ${deletedAt} AS "deletedAt" FROM public.${pg.escapeIdentifier(table)} WHERE id = $1`, [key.id]);
    return rows[0];
  };
  return {
    sink,
    storesPositions: true,
    missingTableIsPrerequisite: true,
    async createTable(table) {
      await client.query(`CREATE TABLE public.${pg.escapeIdentifier(table)} (id text PRIMARY KEY, v text CHECK (v IS DISTINCT FROM ${pg.escapeLiteral(REJECT_VALUE)}), n text)`);
    },
    async readRow(table, key) {
      const r = await readStored(table, key);
      return r === undefined || r.deletedAt !== null ? undefined : { id: r.id, v: r.v, n: r.n };
    },
    readStored,
    async close() {
      await sink.close();
      await client.end();
    },
  };
});

// sink.copy_threshold: 1 forces every upsert through COPY into a staging table and the merge;
// the same contract holds (version gate, tombstones, truncations, positions, rollback).
describeSinkContract('postgres (PostgreSQL 15, COPY staging)', async () => {
  const server = await machinePg15();
  const url = await freshDatabase(server, 'syncline_sinkc_pg_copy');
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  const sink = new PostgresSink({ url, stateSchema: 'syncline', deleteMode: 'hard', versionGate: true, copyThreshold: 1 });
  return {
    sink,
    storesPositions: true,
    missingTableIsPrerequisite: true,
    async createTable(table) {
      await client.query(
        `CREATE TABLE public.${pg.escapeIdentifier(table)} (id text PRIMARY KEY, v text CHECK (v IS DISTINCT FROM ${pg.escapeLiteral(REJECT_VALUE)}), n text)`,
      );
    },
    async readRow(table, key) {
      const { rows } = await client.query<{ id: string; v: string | null; n: string | null }>(
        `SELECT id, v, n FROM public.${pg.escapeIdentifier(table)} WHERE id = $1`,
        [key.id],
      );
      return rows[0];
    },
    async close() {
      await sink.close();
      await client.end();
    },
  };
});

describe('postgres sink: the server ends the connection during a batch', () => {
  it('fails the batch as retriable (no unhandled error event), and the next batch applies on a new connection', async () => {
    const server = await machinePg15();
    const url = await freshDatabase(server, 'syncline_sink_terminated');
    const admin = new pg.Client({ connectionString: url });
    await admin.connect();
    const sink = new PostgresSink({ url, stateSchema: 'syncline', deleteMode: 'hard', versionGate: true, poolSize: 1 });
    try {
      await sink.prepare();
      await admin.query('CREATE TABLE slow (id text PRIMARY KEY, v text, n text)');
      // Every row written waits, so the batch is in the server when its connection is ended.
      await admin.query(`CREATE FUNCTION slow_row() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN PERFORM pg_sleep(0.5); RETURN NEW; END $$`);
      await admin.query('CREATE TRIGGER slow_row BEFORE INSERT ON slow FOR EACH ROW EXECUTE FUNCTION slow_row()');
      const f = new ChangeFactory();
      const batch = sink.apply([f.insert('slow', 'a', 1, 'x')], new Map(), 'g');
      const failed = batch.then(() => undefined, (e: unknown) => e);
      await waitFor('the batch waiting in the trigger', async () => (await admin.query("SELECT 1 FROM pg_stat_activity WHERE query LIKE 'INSERT INTO%slow%' AND pid <> pg_backend_pid()")).rowCount === 1, 10_000, 20);
      await admin.query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query LIKE 'INSERT INTO%slow%' AND pid <> pg_backend_pid()");
      const err = await failed;
      expect(err).toBeInstanceOf(SynclineError);
      expect((err as SynclineError).retriable).toBe(true);
      await admin.query('DROP TRIGGER slow_row ON slow');
      expect(await sink.apply([f.insert('slow', 'a', 1, 'x')], new Map(), 'g')).toMatchObject({ applied: 1 });
    } finally {
      await sink.close();
      await admin.end();
    }
  });
});

describe('postgres sink: a target table whose primary key is another than the source key', () => {
  it('holds the table with a fix that works on a table that has a key (drop it, then add the source one)', async () => {
    const server = await machinePg15();
    const url = await freshDatabase(server, 'syncline_sink_other_key');
    const admin = new pg.Client({ connectionString: url });
    await admin.connect();
    const sink = new PostgresSink({ url, stateSchema: 'syncline', deleteMode: 'hard', versionGate: true });
    try {
      await sink.prepare();
      await admin.query('CREATE TABLE other_key (id text NOT NULL, v text PRIMARY KEY, n text)');
      const err = await sink.apply([new ChangeFactory().insert('other_key', 'a', 1, 'x')], new Map(), 'g').then(() => undefined, (e: unknown) => e);
      expect(err).toBeInstanceOf(PrerequisiteError);
      const fix = (err as PrerequisiteError).fix;
      expect(fix).toBe('give the target the same primary key: ALTER TABLE "public"."other_key" DROP CONSTRAINT <its primary key constraint>, ADD PRIMARY KEY ("id")');
      // The fix as a person runs it (the constraint named) applies, and the table then takes the change.
      await admin.query(fix.replace(/^give the target the same primary key: /, '').replace('<its primary key constraint>', 'other_key_pkey'));
      expect(await sink.apply([new ChangeFactory().insert('other_key', 'a', 1, 'x')], new Map(), 'g')).toMatchObject({ applied: 1 });
    } finally {
      await sink.close();
      await admin.end();
    }
  });
});
