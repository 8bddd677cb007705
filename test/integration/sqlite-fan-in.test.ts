import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import Database from 'better-sqlite3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Pipeline } from '../../src/index.js';
import { freshDatabase, machinePg15, waitFor, type PgServer } from '../helpers/postgres.js';
import { direction, dropDatabases, dropSlot, execSql, fanInPriorityExpected, fanInWrites, FAN_IN_ITEMS } from '../helpers/many-writers.js';
import { ensureBuilt, runCli } from '../helpers/cli.js';
import { uniqueName } from '../helpers/unique.js';

const SOURCES = [1, 2, 3].map((i) => uniqueName(`sqfanin_s${i}`));

/** Rows of `sql` on the SQLite file, as JSON text (a connection of its own: WAL lets it read while the sinks write). */
function sqliteRows(file: string, sql: string): string {
  const db = new Database(file, { readonly: true });
  try {
    return JSON.stringify(db.prepare(sql).all());
  } finally {
    db.close();
  }
}

/**
 * Fan-in into SQLite: three PostgreSQL 15 source databases (distinct source names), one
 * pipeline each, all applying into one SQLite file with conflict tracking. Each source has
 * its own rows and all three write ten shared keys; a write to a row another source wrote is
 * a conflict, decided by the strategy and recorded in `syncline_conflicts`.
 */
describe('fan-in: three PostgreSQL sources into one SQLite file (PostgreSQL 15, embedded streams)', () => {
  let server: PgServer;
  let dir: string;
  const urls: string[] = [];
  const pipelines: Pipeline[] = [];

  beforeAll(async () => {
    server = await machinePg15();
    for (const s of SOURCES) {
      const url = await freshDatabase(server, s);
      await execSql(url, FAN_IN_ITEMS);
      urls.push(url);
    }
    dir = await mkdtemp(path.join(os.tmpdir(), 'syncline-sqlite-fanin-'));
  }, 120_000);

  afterAll(async () => {
    for (const p of pipelines) await p.stop().catch(() => undefined);
    for (const [i, s] of SOURCES.entries()) await dropSlot(urls[i] as string, s).catch(() => undefined);
    await dropDatabases(server.url('postgres'), urls.map((u) => new URL(u).pathname.slice(1))).catch(() => undefined);
    if (dir) await rm(dir, { recursive: true, force: true });
  }, 60_000);

  /** A fresh SQLite target file with the items table. */
  function target(name: string): string {
    const file = path.join(dir, `${name}.db`);
    const db = new Database(file);
    db.exec('CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL, qty INTEGER NOT NULL)');
    db.close();
    return file;
  }

  /** Starts one pipeline per source into the SQLite file with `sink` keys; stops them after `fn`. */
  async function withPipelines(file: string, sink: Record<string, unknown>, fn: () => Promise<void>, suffix: string): Promise<void> {
    const started = SOURCES.map((s, i) => direction({ name: s, sourceUrl: urls[i] as string, sinkUrl: file, dir: path.join(dir, suffix), tables: ['items'], sink: { type: 'sqlite', ...sink } }));
    pipelines.push(...started);
    try {
      for (const p of started) await p.start();
      await fn();
    } finally {
      for (const p of started) await p.stop();
    }
  }

  it('source_priority: own keys land as written, shared keys keep the first-listed source whatever the LSNs; conflicts list reads them', async () => {
    const file = target('priority');
    await withPipelines(file, { conflict_strategy: 'source_priority', source_priority: [SOURCES[1], SOURCES[0], SOURCES[2]] }, async () => {
      await fanInWrites(urls);
      const expected = JSON.stringify(fanInPriorityExpected());
      const held = (): string => sqliteRows(file, 'SELECT id, name, qty FROM items ORDER BY id');
      const differences = async (): Promise<string> =>
        JSON.stringify({ shared: JSON.parse(sqliteRows(file, 'SELECT * FROM items WHERE id >= 100')) as unknown, conflicts: JSON.parse(sqliteRows(file, 'SELECT row_key, winner, incoming_source, stored_source FROM syncline_conflicts ORDER BY id')) as unknown });
      await waitFor('the target holds every source row and the shared keys of s2', async () => held() === expected, 60_000, 250, differences);
      // A delete is a write too: s3 may not delete s2's row; s1 deletes its own.
      await execSql(urls[2] as string, 'DELETE FROM items WHERE id = 100');
      await execSql(urls[0] as string, 'DELETE FROM items WHERE id = 1');
      await waitFor('own delete applied, lower-priority delete refused', async () => sqliteRows(file, 'SELECT id FROM items WHERE id IN (1, 100) ORDER BY id') === JSON.stringify([{ id: 100 }]), 60_000, 250);
      await waitFor('the refused delete recorded', async () =>
        sqliteRows(file, `SELECT winner, incoming_source FROM syncline_conflicts WHERE row_key = '["100"]' AND incoming_version = 'null'`) === JSON.stringify([{ winner: 'stored', incoming_source: SOURCES[2] }]), 30_000, 250);
    }, 'priority');
    expect(JSON.parse(sqliteRows(file, 'SELECT DISTINCT _syncline_source AS s FROM items WHERE id >= 100'))).toEqual([{ s: SOURCES[1] }]);
    expect(JSON.parse(sqliteRows(file, 'SELECT row_key, source FROM syncline_source_tombstones ORDER BY row_key'))).toEqual([{ row_key: '["1"]', source: SOURCES[0] }]);
    // Every cross-source write to a shared key is recorded, each change once; own keys have none.
    const [counts] = JSON.parse(
      sqliteRows(file, `SELECT count(*) AS n, count(DISTINCT row_key || incoming_source || incoming_lsn || '/' || incoming_seq) AS distinct_changes,
                               coalesce(sum(CAST(json_extract(row_key, '$[0]') AS INTEGER) < 100), 0) AS own FROM syncline_conflicts`),
    ) as { n: number; distinct_changes: number; own: number }[];
    expect(counts?.n).toBeGreaterThan(0);
    expect(counts?.distinct_changes).toBe(counts?.n);
    expect(counts?.own).toBe(0);
    // Only s2 ever takes a shared key from another source (s1 only from s3).
    const takers = JSON.parse(sqliteRows(file, `SELECT DISTINCT incoming_source AS s FROM syncline_conflicts WHERE winner = 'incoming'`)) as { s: string }[];
    expect(takers.every((r) => r.s === SOURCES[1] || r.s === SOURCES[0])).toBe(true);

    // `syncline conflicts list` reads the SQLite sink: newest first, both versions and the winner.
    ensureBuilt();
    const config = path.join(dir, 'conflicts.yaml');
    await writeFile(config, `source:\n  url: ${urls[0]}\n  slots: [{ name: x, publication: x }]\nsink:\n  type: sqlite\n  url: ${file}\n`);
    const json = await runCli('conflicts', 'list', '-c', config, '--table', 'items', '--limit', '3', '--json');
    expect(json.code).toBe(0);
    const listed = JSON.parse(json.stdout) as { id: number; table: string; winner: string; loser: string; strategy: string; incomingLsn: string; stored: unknown; incoming: unknown }[];
    expect(listed).toHaveLength(3);
    expect(listed.every((e) => e.table === 'public.items' && e.strategy === 'source_priority' && e.stored !== null && typeof e.stored === 'object' && 'incoming' in e && /^[0-9A-F]+\/[0-9A-F]+$/.test(e.incomingLsn))).toBe(true);
    expect(listed.map((e) => e.id)).toEqual([...listed.map((e) => e.id)].sort((a, b) => b - a));
    // The newest: s3's refused delete of key 100.
    expect(listed[0]).toMatchObject({ winner: SOURCES[1], loser: SOURCES[2], incoming: null });
    const text = await runCli('conflicts', 'list', '-c', config, '--limit', '1');
    expect(text.code).toBe(0);
    expect(text.stdout).toMatch(/public\.items \["100"\] {2}source_priority: sqfanin_s2_\w+ won over sqfanin_s3_\w+/);
    // A sqlite sink that never recorded a conflict (here: no file yet) lists none.
    const empty = path.join(dir, 'empty.yaml');
    await writeFile(empty, `source:\n  url: ${urls[0]}\n  slots: [{ name: x, publication: x }]\nsink:\n  type: sqlite\n  url: ${path.join(dir, 'none.db')}\n`);
    expect(await runCli('conflicts', 'list', '-c', empty)).toMatchObject({ code: 0, stdout: 'no conflicts recorded\n' });
  }, 120_000);

  it('last_write_wins: the shared keys end with the source that committed last, whatever the apply order; a later delete of another source wins', async () => {
    const file = target('lww');
    await withPipelines(file, { conflict_strategy: 'last_write_wins' }, async () => {
      // s3 first, then s1, then s2: s2's is the last write of each shared key.
      for (const i of [2, 0, 1]) {
        await execSql(urls[i] as string, `INSERT INTO items SELECT g, $1, 0 FROM generate_series(200, 204) g`, [`s${i + 1}`]);
        await new Promise((r) => setTimeout(r, 50));
      }
      await waitFor('shared keys of the last writer', async () => sqliteRows(file, 'SELECT DISTINCT name FROM items') === JSON.stringify([{ name: 's2' }]), 60_000, 250);
      // s1 writes again later: now it is the last writer.
      await execSql(urls[0] as string, `UPDATE items SET name = 's1-again' WHERE id = 200`);
      await waitFor('a later write of another source wins', async () => sqliteRows(file, 'SELECT name FROM items WHERE id = 200') === JSON.stringify([{ name: 's1-again' }]), 60_000, 250);
      // A later delete of another source wins too, and its tombstone keeps the row away.
      await execSql(urls[2] as string, 'DELETE FROM items WHERE id = 201');
      await waitFor('a later delete of another source wins', async () => sqliteRows(file, 'SELECT id FROM items WHERE id = 201') === '[]', 60_000, 250);
    }, 'lww');
    expect(JSON.parse(sqliteRows(file, 'SELECT id, name, _syncline_source AS s FROM items ORDER BY id'))).toEqual([
      { id: 200, name: 's1-again', s: SOURCES[0] },
      ...[202, 203, 204].map((id) => ({ id, name: 's2', s: SOURCES[1] })),
    ]);
    const [recorded] = JSON.parse(sqliteRows(file, `SELECT count(*) AS n FROM syncline_conflicts WHERE strategy = 'last_write_wins'`)) as { n: number }[];
    // Ten shared inserts of the two later sources at least (each overwrote or lost to another), the update and the delete.
    expect(recorded?.n).toBeGreaterThanOrEqual(11);
  }, 120_000);
});
