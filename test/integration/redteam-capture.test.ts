/**
 * Red team 3 (capture and apply against what real schemas do): each case runs the whole
 * pipeline (runPipeline, embedded stream, PostgreSQL 15 → PostgreSQL 15) on tables the way
 * applications define them, and compares every row of source and target.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type pg from 'pg';
import { afterEach, describe, expect, it } from 'vitest';
import { runPipeline } from '../../src/api/run-pipeline.js';
import { loadConfigFile } from '../../src/config/load.js';
import { Metrics } from '../../src/metrics/metrics.js';
import { rowDiff } from '../helpers/compare-rows.js';
import { machinePg15, slotStreaming, sourceAndTarget, testLogger, uniqueName, waitFor } from '../helpers/postgres.js';

interface Pipeline {
  source: pg.Client;
  target: pg.Client;
  slot: string;
  stop(): Promise<void>;
}

const open: (() => Promise<void>)[] = [];

afterEach(async () => {
  for (const close of open.splice(0)) await close();
});

/** A fresh source and target with `ddl` run on both (`targetDdl` at the target when given), then `syncline run` streaming. */
async function pipeline(prefix: string, tables: string[], ddl: string, targetDdl = ddl, sinkExtra = ''): Promise<Pipeline> {
  const server = await machinePg15();
  const dir = await mkdtemp(path.join(os.tmpdir(), `${prefix}-`));
  const slot = uniqueName(prefix);
  const pair = await sourceAndTarget(server, prefix);
  const { source, target } = pair;
  await source.query(ddl);
  await target.query(targetDdl);
  const configFile = path.join(dir, 'sync.yaml');
  await writeFile(
    configFile,
    `source:
  url: ${pair.sourceUrl}
  slots: [{ name: ${slot}, publication: ${prefix}_pub, tables: [${tables.join(', ')}] }]
stream: { path: ${path.join(dir, 'stream')}, partitions: 4 }
consumer: { group_id: rt, retry: { backoff_base_ms: 10, backoff_max_ms: 100, held_table_interval_ms: 500 } }
sink: { url: ${pair.targetUrl}${sinkExtra} }
monitoring: { enabled: false }
`,
  );
  const ctl = new AbortController();
  const running = runPipeline(loadConfigFile(configFile), 'run', await testLogger(), ctl.signal, new Metrics());
  let failure: unknown;
  running.catch((err: unknown) => (failure = err));
  const stop = async (): Promise<void> => {
    ctl.abort();
    await running.catch(() => undefined);
    await source.query('SELECT pg_drop_replication_slot($1) FROM pg_replication_slots WHERE slot_name = $1 AND NOT active', [slot]).catch(() => undefined);
    await source.end();
    await target.end();
    await rm(dir, { recursive: true, force: true });
  };
  open.push(stop);
  await waitFor('slot streaming', async () => failure !== undefined || (await slotStreaming(source, slot)), 30_000);
  if (failure) throw failure;
  return { source, target, slot, stop };
}

/** Waits until `table` holds the same rows on both sides (every column of the source, as text). */
async function converges(p: Pipeline, table: string, timeoutMs = 30_000): Promise<void> {
  let last: Awaited<ReturnType<typeof rowDiff>> | undefined;
  await waitFor(
    `${table} equal at the target`,
    async () => {
      // The target may lack a column the source added until apply met it.
      last = await rowDiff(p.source, p.target, table, 5).catch(() => undefined);
      return last !== undefined && last.missing.length === 0 && last.extra.length === 0;
    },
    timeoutMs,
    200,
    () => JSON.stringify(last),
  );
}

describe('red team 3: capture and apply against real schemas (PostgreSQL 15)', () => {
  it('ADD COLUMN with a DEFAULT (constant and volatile, NOT NULL) mid-stream: the rows that existed before it get the value at the target too', async () => {
    // The DDL writes no row change to the WAL: a constant default is kept in the catalog
    // (attmissingval), a volatile one rewrites the table, and logical decoding sees neither.
    const p = await pipeline('sl_rt3_adddef', ['items'], 'CREATE TABLE items (id integer PRIMARY KEY, v text)');
    await p.source.query(`INSERT INTO items SELECT g, 'v' || g FROM generate_series(1, 500) g`);
    await converges(p, 'items');
    await p.source.query('ALTER TABLE items ADD COLUMN flag boolean NOT NULL DEFAULT false');
    await p.source.query(`ALTER TABLE items ADD COLUMN created timestamptz NOT NULL DEFAULT clock_timestamp()`);
    await p.source.query('ALTER TABLE items ADD COLUMN note text');
    await p.source.query(`INSERT INTO items (id, v) VALUES (1000, 'after')`);
    await p.source.query(`UPDATE items SET v = 'touched' WHERE id = 1`);
    await converges(p, 'items');
    expect((await p.target.query('SELECT count(*)::int AS n FROM items WHERE flag IS NULL OR created IS NULL')).rows[0]?.n).toBe(0);
  }, 90_000);

  it('ALTER COLUMN ... TYPE ... USING an expression mid-stream: the converted values of the rows before it reach the target too', async () => {
    // A widening (int4 -> int8) the target follows under schema_evolution: full, but USING
    // changed every value, and the rewrite is not in the WAL.
    const p = await pipeline('sl_rt3_using', ['prices'], 'CREATE TABLE prices (id integer PRIMARY KEY, cents integer)', undefined, ', schema_evolution: full');
    await p.source.query('INSERT INTO prices SELECT g, g * 100 FROM generate_series(1, 300) g');
    await converges(p, 'prices');
    await p.source.query('ALTER TABLE prices ALTER COLUMN cents TYPE bigint USING cents * 10');
    await p.source.query('INSERT INTO prices VALUES (1000, 5)');
    await converges(p, 'prices');
  }, 90_000);

  it('a target whose key is GENERATED ALWAYS AS IDENTITY (as pg_dump --schema-only writes it) takes the rows', async () => {
    const ddl = 'CREATE TABLE accounts (id integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY, name text)';
    const p = await pipeline('sl_rt3_ident', ['accounts'], ddl);
    await p.source.query(`INSERT INTO accounts (name) SELECT 'n' || g FROM generate_series(1, 50) g`);
    await converges(p, 'accounts');
    await p.source.query(`UPDATE accounts SET name = 'renamed' WHERE id <= 5`);
    await p.source.query('DELETE FROM accounts WHERE id > 45');
    // Enough rows for the COPY staging path (sink.copy_threshold, default 1000) too.
    await p.source.query(`INSERT INTO accounts (name) SELECT 'bulk' || g FROM generate_series(1, 2000) g`);
    await converges(p, 'accounts');
  }, 90_000);

  it('a DEFERRABLE primary key shifted in one statement (UPDATE t SET id = id + 1) keeps every row: two rows share a key inside the statement', async () => {
    // A deferrable key is no replica identity, so such a table replicates its UPDATEs and
    // DELETEs with REPLICA IDENTITY FULL; the target's key cannot be deferrable (ON CONFLICT).
    const p = await pipeline(
      'sl_rt3_defer',
      ['positions', 'slots'],
      `CREATE TABLE positions (list integer, pos integer, item text, PRIMARY KEY (list, pos) DEFERRABLE INITIALLY IMMEDIATE);
       ALTER TABLE positions REPLICA IDENTITY FULL;
       CREATE TABLE slots (n integer PRIMARY KEY DEFERRABLE INITIALLY DEFERRED);
       ALTER TABLE slots REPLICA IDENTITY FULL`,
      `CREATE TABLE positions (list integer, pos integer, item text, PRIMARY KEY (list, pos));
       CREATE TABLE slots (n integer PRIMARY KEY)`,
    );
    await p.source.query(`INSERT INTO positions SELECT l, g, 'item' || l || '.' || g FROM generate_series(1, 3) l, generate_series(1, 20) g`);
    await p.source.query('INSERT INTO slots SELECT generate_series(1, 20)');
    await converges(p, 'positions');
    await converges(p, 'slots');
    // Make room at the front of list 1 (every position moves up), in list 2 insert in the middle.
    await p.source.query('UPDATE positions SET pos = pos + 1 WHERE list = 1');
    await p.source.query(`INSERT INTO positions VALUES (1, 1, 'first')`);
    await p.source.query('BEGIN');
    await p.source.query('UPDATE positions SET pos = pos + 1 WHERE list = 2 AND pos >= 10');
    await p.source.query(`INSERT INTO positions VALUES (2, 10, 'middle')`);
    await p.source.query('COMMIT');
    // Keys only, checked at commit: two statements pass through the same keys.
    await p.source.query('BEGIN');
    await p.source.query('UPDATE slots SET n = n + 100');
    await p.source.query('UPDATE slots SET n = n - 99');
    await p.source.query('COMMIT');
    // An insert and a delete of the same key in one transaction is still a delete.
    await p.source.query('BEGIN');
    await p.source.query(`INSERT INTO positions VALUES (3, 100, 'gone')`);
    await p.source.query('DELETE FROM positions WHERE list = 3 AND pos = 100');
    await p.source.query('COMMIT');
    await converges(p, 'positions');
    await converges(p, 'slots');
    expect((await p.target.query('SELECT count(*)::int AS n FROM positions')).rows[0]?.n).toBe(62);
  }, 90_000);

  it('a target whose primary key is DEFERRABLE (made like the source) holds the table with the fix instead of dead-lettering every change as a poison; fixed, it flows', async () => {
    const ddl = `CREATE TABLE marks (id integer PRIMARY KEY DEFERRABLE, v text); ALTER TABLE marks REPLICA IDENTITY FULL`;
    const p = await pipeline('sl_rt3_defertarget', ['marks'], ddl, 'CREATE TABLE marks (id integer, v text, CONSTRAINT marks_pkey PRIMARY KEY (id) DEFERRABLE)');
    await p.source.query(`INSERT INTO marks SELECT g, 'v' || g FROM generate_series(1, 30) g`);
    await waitFor('the table held', async () => {
      const { rows } = await p.target.query<{ codes: string[] | null }>(`SELECT array_agg(DISTINCT error_code) AS codes FROM syncline.dead_letter`).catch(() => ({ rows: [] as { codes: string[] | null }[] }));
      return (rows[0]?.codes ?? []).length > 0;
    });
    const { rows } = await p.target.query<{ error_code: string; error: string }>('SELECT DISTINCT error_code, error FROM syncline.dead_letter');
    expect(rows.map((r) => r.error_code)).toEqual(['TABLE_BLOCKED']);
    expect(rows[0]?.error).toMatch(/DEFERRABLE primary key/);
    await p.target.query('ALTER TABLE marks DROP CONSTRAINT marks_pkey, ADD PRIMARY KEY (id)');
    await p.source.query(`UPDATE marks SET v = 'after' WHERE id <= 3`);
    await converges(p, 'marks');
  }, 90_000);
});
