/**
 * Property: whatever at-least-once delivery does to the stream, a sink ends where applying
 * the source's changes once would leave it.
 *
 * fast-check generates source transactions on a small keyed table (inserts, updates, deletes,
 * key changes as DELETE + INSERT in one transaction, TRUNCATE) and a keyless one (inserts,
 * updates and deletes of whole rows with duplicates, TRUNCATE, snapshots: a reset then READ
 * rows), versioned as capture versions them (commit LSN per transaction, seq from 1; a
 * snapshot in a version context of its own), and an in-memory model of both tables. The
 * changes go into per-key queues, the finest partitioning the stream's ordering promise allows
 * (`partitionKeyOf`: each keyed row's own queue, the keyed table's TRUNCATEs one queue, all of
 * the keyless table's changes one queue), and are delivered in batches that interleave the
 * queues arbitrarily, repeat changes within a batch and re-deliver earlier ranges (a consumer
 * restarting from older offsets), until every change was delivered at least once. The
 * target then holds exactly the model's rows, and every batch accounts for each of its
 * changes (applied + stale + superseded = batch size).
 */
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import Database from 'better-sqlite3';
import fc from 'fast-check';
import mysql from 'mysql2/promise';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { partitionKeyOf, type ChangeEvent } from '../../src/core/change.js';
import { MysqlSink } from '../../src/sink/mysql/mysql-sink.js';
import { quoteMysqlIdent } from '../../src/sink/mysql/mysql-table.js';
import { PostgresSink } from '../../src/sink/postgres/postgres-sink.js';
import type { Sink } from '../../src/sink/sink.js';
import { SqliteSink, quoteSqliteIdent } from '../../src/sink/sqlite/sqlite-sink.js';
import { MYSQL_ADMIN_URL, mysqlAdmin } from '../helpers/mysql.js';
import { freshDatabase, machinePg15, uniqueName } from '../helpers/postgres.js';
import { ChangeFactory, KeylessChangeFactory, sortedRows, type KeylessRow } from './sink-contract.js';

/** Runs per sink; each run is a fresh pair of tables. Keep a run of all three under ~20 s each. */
const NUM_RUNS = Number(process.env.SYNCLINE_PROPERTY_RUNS ?? 30);

interface PropertyHarness {
  sink: Sink;
  /** `(id text primary key, v text, n text)` */
  createKeyed(table: string): Promise<void>;
  /** `(id text, v text, n text)`, no key */
  createKeyless(table: string): Promise<void>;
  /** Every row's id, v, n. */
  readRows(table: string): Promise<KeylessRow[]>;
  close(): Promise<void>;
}

// ---- the source: generated intents, turned into changes by replaying them on the model ----

const KEYS = ['k0', 'k1', 'k2', 'k3'];
/** Few values, so duplicates happen; some differ only in case or trailing space, or are empty vs NULL. */
const value = fc.constantFrom<string | null>('a', 'A', 'a ', '', null, 'b');
const keylessRow = fc.record({
  id: fc.constantFrom<string | null>('x', 'X', null),
  v: fc.constantFrom<string | null>('a', 'A', 'a ', null),
  n: fc.constantFrom<string | null>(null, ''),
});

type Intent =
  | { t: 'kput'; id: number; v: string | null }
  | { t: 'kdel'; pick: number }
  | { t: 'kmove'; pick: number; to: number; v: string | null }
  | { t: 'ktrunc' }
  | { t: 'lins'; row: KeylessRow }
  | { t: 'lupd'; pick: number; row: KeylessRow }
  | { t: 'ldel'; pick: number }
  | { t: 'ltrunc' }
  | { t: 'lsnap' };

const intent: fc.Arbitrary<Intent> = fc.oneof(
  { weight: 6, arbitrary: fc.record({ t: fc.constant('kput' as const), id: fc.nat({ max: KEYS.length - 1 }), v: value }) },
  { weight: 3, arbitrary: fc.record({ t: fc.constant('kdel' as const), pick: fc.nat() }) },
  { weight: 2, arbitrary: fc.record({ t: fc.constant('kmove' as const), pick: fc.nat(), to: fc.nat({ max: KEYS.length - 1 }), v: value }) },
  { weight: 1, arbitrary: fc.constant({ t: 'ktrunc' as const }) },
  { weight: 6, arbitrary: fc.record({ t: fc.constant('lins' as const), row: keylessRow }) },
  { weight: 3, arbitrary: fc.record({ t: fc.constant('lupd' as const), pick: fc.nat(), row: keylessRow }) },
  { weight: 3, arbitrary: fc.record({ t: fc.constant('ldel' as const), pick: fc.nat() }) },
  { weight: 1, arbitrary: fc.constant({ t: 'ltrunc' as const }) },
  { weight: 1, arbitrary: fc.constant({ t: 'lsnap' as const }) },
);

interface Source {
  changes: ChangeEvent[];
  keyed: Map<string, KeylessRow>;
  keyless: KeylessRow[];
}

/**
 * The changes capture would publish for `txns` (each a source transaction of intents; an
 * intent that does not fit the current state, e.g. a delete of an empty table, is dropped),
 * and the tables' final content. With `initialSnapshot`, the keyless table's stream opens
 * with its (empty) initial snapshot, after which a missing row is drift rather than stale.
 */
function source(txns: Intent[][], initialSnapshot: boolean, keyedTable: string, keylessTable: string): Source {
  const kf = new ChangeFactory();
  const lf = new KeylessChangeFactory();
  const changes: ChangeEvent[] = [];
  const keyed = new Map<string, KeylessRow>();
  let keyless: KeylessRow[] = [];
  let lsn = 0x100;
  let seq = 0;
  const begin = (): void => {
    lsn += 0x10;
    seq = 0;
  };
  const ver = (): { lsn: number; seq: number } => ({ lsn, seq: ++seq });
  const snapshot = (): void => {
    begin();
    changes.push(lf.reset(keylessTable, ver()));
    for (const row of keyless) changes.push(lf.read(keylessTable, ver(), row));
    begin();
  };
  if (initialSnapshot) snapshot();
  for (const txn of txns) {
    begin();
    for (const i of txn) {
      const ids = [...keyed.keys()];
      switch (i.t) {
        case 'kput': {
          const id = KEYS[i.id] as string;
          const row = { id, v: i.v, n: null };
          changes.push(kf.event(keyed.has(id) ? 'UPDATE' : 'INSERT', keyedTable, id, ver(), row));
          keyed.set(id, row);
          break;
        }
        case 'kdel': {
          const id = ids[i.pick % Math.max(ids.length, 1)];
          if (id === undefined) break;
          changes.push(kf.delete(keyedTable, id, ver()));
          keyed.delete(id);
          break;
        }
        case 'kmove': {
          // An UPDATE that changes the primary key: DELETE of the old key, INSERT of the new.
          const from = ids[i.pick % Math.max(ids.length, 1)];
          const to = KEYS[i.to] as string;
          if (from === undefined || keyed.has(to)) break;
          changes.push(kf.delete(keyedTable, from, ver()));
          keyed.delete(from);
          const row = { id: to, v: i.v, n: 'moved' };
          changes.push(kf.event('INSERT', keyedTable, to, ver(), row));
          keyed.set(to, row);
          break;
        }
        case 'ktrunc':
          changes.push(kf.truncate(keyedTable, ver()));
          keyed.clear();
          break;
        case 'lins':
          changes.push(lf.insert(keylessTable, ver(), i.row));
          keyless.push(i.row);
          break;
        case 'lupd': {
          if (keyless.length === 0) break;
          const at = i.pick % keyless.length;
          changes.push(lf.update(keylessTable, ver(), keyless[at] as KeylessRow, i.row));
          keyless[at] = i.row;
          break;
        }
        case 'ldel': {
          if (keyless.length === 0) break;
          const at = i.pick % keyless.length;
          changes.push(lf.delete(keylessTable, ver(), keyless[at] as KeylessRow));
          keyless.splice(at, 1);
          break;
        }
        case 'ltrunc':
          changes.push(lf.truncate(keylessTable, ver()));
          keyless = [];
          break;
        case 'lsnap':
          // A snapshot is not part of a source transaction: it has a version context of its own.
          snapshot();
          break;
      }
    }
  }
  return { changes, keyed, keyless };
}

// ---- delivery: at-least-once, per-queue order, replays ----

/** mulberry32: a small seeded PRNG, so a failing delivery is reproduced by fast-check's seed. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * Batches that deliver every change of `changes` at least once: each takes a few ranges of
 * the per-key queues (a range starts at or before where its queue's delivery got to: never
 * skipping a change, sometimes re-delivering earlier ones), sometimes twice, and interleaves
 * the queues at random, each queue's changes in the order taken.
 */
function deliveries(changes: readonly ChangeEvent[], seed: number): ChangeEvent[][] {
  const rnd = prng(seed);
  const int = (n: number): number => Math.floor(rnd() * n);
  const byKey = new Map<string, ChangeEvent[]>();
  for (const c of changes) {
    const k = partitionKeyOf(c);
    const q = byKey.get(k);
    if (q) q.push(c);
    else byKey.set(k, [c]);
  }
  const queues = [...byKey.values()];
  if (queues.length === 0) return []; // nothing to deliver (or to pick a queue from to replay)
  const delivered = queues.map(() => 0);
  const batches: ChangeEvent[][] = [];
  const pending = (): number[] => queues.map((_, i) => i).filter((i) => (delivered[i] as number) < (queues[i] as ChangeEvent[]).length);
  while (pending().length > 0 || (batches.length < 60 && rnd() < 0.2)) {
    const taken = new Map<number, ChangeEvent[]>();
    const picks = 1 + int(4);
    for (let p = 0; p < picks; p++) {
      const open = pending();
      const q = open.length > 0 && rnd() < 0.85 ? (open[int(open.length)] as number) : int(queues.length);
      const queue = queues[q] as ChangeEvent[];
      const done = delivered[q] as number;
      // A replay starts anywhere up to where delivery got to; a fresh read starts there.
      let start = rnd() < 0.25 ? int(done + 1) : done;
      if (start >= queue.length) start = int(queue.length);
      const end = Math.min(queue.length, start + 1 + int(5));
      const range = queue.slice(start, end);
      const list = taken.get(q) ?? [];
      list.push(...range);
      if (rnd() < 0.15) list.push(...range); // the same changes twice in one batch
      taken.set(q, list);
      delivered[q] = Math.max(done, end);
    }
    const lists = [...taken.values()];
    const batch: ChangeEvent[] = [];
    for (;;) {
      const open = lists.filter((l) => l.length > 0);
      if (open.length === 0) break;
      batch.push((open[int(open.length)] as ChangeEvent[]).shift() as ChangeEvent);
    }
    batches.push(batch);
  }
  return batches;
}

// ---- the property, per sink ----

function describeSinkProperty(name: string, factory: () => Promise<PropertyHarness>): void {
  describe(`Sink property, at-least-once delivery converges: ${name}`, () => {
    let h: PropertyHarness;
    let n = 0;
    const run = Math.random().toString(36).slice(2, 8);

    beforeAll(async () => {
      h = await factory();
      await h.sink.prepare();
    }, 120_000);

    afterAll(async () => {
      await h?.close();
    });

    it('a keyed and a keyless table end as the source left them, under duplicates, replays and any per-key interleaving', async () => {
      await fc.assert(
        fc.asyncProperty(
          fc.array(fc.array(intent, { minLength: 1, maxLength: 4 }), { minLength: 1, maxLength: 20 }),
          fc.boolean(),
          fc.integer(),
          async (txns, initialSnapshot, seed) => {
            n++;
            const keyedTable = `pk_${run}_${n}`;
            const keylessTable = `pl_${run}_${n}`;
            await h.createKeyed(keyedTable);
            await h.createKeyless(keylessTable);
            const src = source(txns, initialSnapshot, keyedTable, keylessTable);
            for (const batch of deliveries(src.changes, seed)) {
              const out = await h.sink.apply(batch, new Map(), `prop-${run}`);
              expect(out.applied + out.stale + out.superseded).toBe(batch.length);
            }
            expect(sortedRows(await h.readRows(keyedTable))).toEqual(sortedRows([...src.keyed.values()]));
            expect(sortedRows(await h.readRows(keylessTable))).toEqual(sortedRows(src.keyless));
          },
        ),
        { numRuns: NUM_RUNS },
      );
    }, 180_000);
  });
}

describeSinkProperty('postgres (PostgreSQL 15)', async () => {
  const server = await machinePg15();
  const url = await freshDatabase(server, 'syncline_ms_prop_pg');
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  const sink = new PostgresSink({ url, stateSchema: 'syncline', deleteMode: 'hard', versionGate: true });
  const t = (table: string): string => `public.${pg.escapeIdentifier(table)}`;
  return {
    sink,
    async createKeyed(table) {
      await client.query(`CREATE TABLE ${t(table)} (id text PRIMARY KEY, v text, n text)`);
    },
    async createKeyless(table) {
      await client.query(`CREATE TABLE ${t(table)} (id text, v text, n text)`);
    },
    async readRows(table) {
      return (await client.query<KeylessRow>(`SELECT id, v, n FROM ${t(table)}`)).rows;
    },
    async close() {
      await sink.close();
      await client.end();
    },
  };
});

describeSinkProperty('mysql (MariaDB)', async () => {
  const database = uniqueName('syncline_ms_prop');
  const admin = await mysqlAdmin();
  await admin.query(`DROP DATABASE IF EXISTS ${quoteMysqlIdent(database)}`);
  // Case-insensitive, PAD SPACE default collation: rows must still be matched exactly.
  await admin.query(`CREATE DATABASE ${quoteMysqlIdent(database)} CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci`);
  await admin.query(`USE ${quoteMysqlIdent(database)}`);
  const url = new URL(MYSQL_ADMIN_URL);
  url.pathname = `/${database}`;
  const sink = new MysqlSink({ url: url.toString(), stateSchema: 'syncline', versionGate: true });
  return {
    sink,
    async createKeyed(table) {
      await admin.query(`CREATE TABLE ${quoteMysqlIdent(table)} (id VARCHAR(64) PRIMARY KEY, v TEXT, n TEXT)`);
    },
    async createKeyless(table) {
      await admin.query(`CREATE TABLE ${quoteMysqlIdent(table)} (id VARCHAR(64), v TEXT, n TEXT)`);
    },
    async readRows(table) {
      const [rows] = await admin.query<(mysql.RowDataPacket & KeylessRow)[]>(`SELECT id, v, n FROM ${quoteMysqlIdent(table)}`);
      return rows.map((r) => ({ id: r.id, v: r.v, n: r.n }));
    },
    async close() {
      await sink.close();
      await admin.query(`DROP DATABASE IF EXISTS ${quoteMysqlIdent(database)}`);
      await admin.end();
    },
  };
});

describeSinkProperty('sqlite', async () => {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'syncline-prop-sqlite-'));
  const file = path.join(dir, 'target.db');
  const sink = new SqliteSink({ url: file, stateSchema: 'syncline', versionGate: true });
  let db: Database.Database | undefined;
  const conn = (): Database.Database => (db ??= new Database(file));
  return {
    sink,
    async createKeyed(table) {
      conn().exec(`CREATE TABLE ${quoteSqliteIdent(table)} (id TEXT PRIMARY KEY, v TEXT, n TEXT)`);
    },
    async createKeyless(table) {
      conn().exec(`CREATE TABLE ${quoteSqliteIdent(table)} (id TEXT COLLATE NOCASE, v TEXT, n TEXT)`);
    },
    async readRows(table) {
      return conn().prepare(`SELECT id, v, n FROM ${quoteSqliteIdent(table)}`).all() as KeylessRow[];
    },
    async close() {
      await sink.close();
      db?.close();
      await rm(dir, { recursive: true, force: true });
    },
  };
});
