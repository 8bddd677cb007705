import { execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { promisify } from 'node:util';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Pipeline } from '../../src/index.js';
import { freshDatabase, machinePg15, waitFor, type PgServer } from '../helpers/postgres.js';
import { direction, dropDatabases, dropSlot, execSql, fanInPriorityExpected, fanInWrites } from '../helpers/many-writers.js';
import { freshMysqlDatabase, mysqlRows, type MysqlTestDatabase } from '../helpers/mysql.js';
import { CLI, ensureBuilt } from '../helpers/cli.js';
import { uniqueName } from '../helpers/unique.js';

const BASES = [1, 2, 3].map((i) => `mfanin_s${i}`);
/** Source names, also their databases' (freshDatabase makes the same unique name of a base). */
const SOURCES = BASES.map((b) => uniqueName(b));
const ITEMS = 'CREATE TABLE items (id INT PRIMARY KEY, name VARCHAR(100) NOT NULL, qty INT NOT NULL)';

/**
 * Fan-in into MariaDB: three PostgreSQL 15 source databases (distinct source names) into one
 * MySQL-protocol target table, each source with its own rows and all three writing shared
 * keys. As with a postgres sink (fan-in.test.ts), versions are compared only within a source;
 * a write to a row another source wrote is a conflict, decided by the strategy and recorded
 * in `syncline_conflicts`.
 */
describe('fan-in: three PostgreSQL sources into one MariaDB database (embedded streams)', () => {
  let server: PgServer;
  let dir: string;
  const urls: string[] = [];
  let target: MysqlTestDatabase;
  const pipelines: Pipeline[] = [];

  beforeAll(async () => {
    server = await machinePg15();
    for (const b of BASES) {
      const url = await freshDatabase(server, b);
      await execSql(url, 'CREATE TABLE items (id integer PRIMARY KEY, name text NOT NULL, qty integer NOT NULL)');
      urls.push(url);
    }
    target = await freshMysqlDatabase(uniqueName('syncline_mfanin'));
    dir = await mkdtemp(path.join(os.tmpdir(), 'syncline-mfanin-'));
  }, 120_000);

  afterAll(async () => {
    for (const p of pipelines) await p.stop().catch(() => undefined);
    for (const [i, s] of SOURCES.entries()) await dropSlot(urls[i] as string, s).catch(() => undefined);
    await dropDatabases(server.url('postgres'), SOURCES).catch(() => undefined);
    await target?.drop();
    if (dir) await rm(dir, { recursive: true, force: true });
  }, 60_000);

  /** One pipeline per source into the MariaDB target with `sink` keys; stopped after `fn`. */
  async function withPipelines(sink: Record<string, unknown>, fn: () => Promise<void>, suffix: string): Promise<void> {
    const started = SOURCES.map((s, i) => direction({ name: s, sourceUrl: urls[i] as string, sinkUrl: target.url, dir: path.join(dir, suffix), tables: ['items'], sink: { type: 'mysql', ...sink } }));
    pipelines.push(...started);
    try {
      for (const p of started) await p.start();
      await fn();
    } finally {
      for (const p of started) await p.stop();
    }
  }

  const held = async (sql = 'SELECT id, name, qty FROM items ORDER BY id'): Promise<string> => JSON.stringify(await mysqlRows(target.admin, sql));

  it('source_priority: own keys land as written, shared keys keep the first-listed source whatever the LSNs; conflicts list reads them', async () => {
    await target.admin.query(ITEMS);
    // Priority s2, s1, s3; source 3 writes the shared keys last and often (its LSNs grow largest).
    await withPipelines({ conflict_strategy: 'source_priority', source_priority: [SOURCES[1], SOURCES[0], SOURCES[2]] }, async () => {
      await fanInWrites(urls);
      const expected = JSON.stringify(fanInPriorityExpected());
      await waitFor('the target holds every source row and the shared keys of s2', async () => (await held()) === expected, 90_000, 250, () => held('SELECT id, name, qty, _syncline_source FROM items WHERE id >= 100'));
      // A delete is a write too: s3 may not delete s2's row; s1 deletes its own.
      await execSql(urls[2] as string, 'DELETE FROM items WHERE id = 100');
      await execSql(urls[0] as string, 'DELETE FROM items WHERE id = 1');
      await waitFor('own delete applied, lower-priority delete refused', async () => (await held('SELECT id FROM items WHERE id IN (1, 100) ORDER BY id')) === JSON.stringify([{ id: 100 }]), 60_000, 250);
      await waitFor('the refused delete recorded', async () =>
        (await held(`SELECT winner, incoming_source FROM syncline_conflicts WHERE row_key = '["100"]' AND incoming_version = 'null'`)) === JSON.stringify([{ winner: 'stored', incoming_source: SOURCES[2] }]), 30_000, 250);
    }, 'priority');
    expect(await mysqlRows(target.admin, 'SELECT DISTINCT _syncline_source AS s FROM items WHERE id >= 100')).toEqual([{ s: SOURCES[1] }]);
    // Every cross-source write to a shared key is recorded; own keys have none.
    const [counts] = await mysqlRows<{ n: number; own: string }>(target.admin, `SELECT COUNT(*) AS n, CAST(COALESCE(SUM(CAST(JSON_VALUE(row_key, '$[0]') AS UNSIGNED) < 100), 0) AS CHAR) AS own FROM syncline_conflicts`);
    expect(Number(counts?.n)).toBeGreaterThan(0);
    expect(counts?.own).toBe('0');
    // Only s2 ever takes a shared key from another source (s1 only from s3).
    const takers = await mysqlRows<{ s: string }>(target.admin, `SELECT DISTINCT incoming_source AS s FROM syncline_conflicts WHERE winner = 'incoming' AND stored_source <> 'local'`);
    expect(takers.every((r) => r.s === SOURCES[1] || r.s === SOURCES[0])).toBe(true);

    // `syncline conflicts list` reads a mysql sink's conflicts, newest first, with both versions and the winner.
    ensureBuilt();
    const file = path.join(dir, 'conflicts.yaml');
    await writeFile(file, `source:\n  url: ${urls[0]}\n  slots: [{ name: x, publication: x }]\nsink:\n  type: mysql\n  url: ${target.url}\n`);
    const { stdout } = await promisify(execFile)(process.execPath, [CLI, 'conflicts', 'list', '-c', file, '--table', 'items', '--limit', '3', '--json']);
    const listed = JSON.parse(stdout) as { table: string; strategy: string; stored: unknown; incoming: unknown; incomingLsn: string; detectedAt: string }[];
    expect(listed).toHaveLength(3);
    expect(listed.every((e) => e.table === 'public.items' && e.strategy === 'source_priority' && e.stored !== null && 'incoming' in e && /^[0-9A-F]+\/[0-9A-F]+$/.test(e.incomingLsn))).toBe(true);
    const text = await promisify(execFile)(process.execPath, [CLI, 'conflicts', 'list', '-c', file, '--limit', '1']);
    expect(text.stdout).toMatch(/public\.items \["10\d"\] {2}source_priority: mfanin_s\d_\S+ won over mfanin_s\d_\S+/);
  }, 180_000);

  it('last_write_wins: the shared keys end with the source that committed last, whatever the apply order', async () => {
    await target.admin.query('DROP TABLE items');
    await target.admin.query(ITEMS);
    for (const t of ['syncline_conflicts', 'syncline_positions', 'syncline_tombstones', 'syncline_source_tombstones']) await target.admin.query(`TRUNCATE ${t}`);
    for (const url of urls) await execSql(url, 'TRUNCATE items');
    await withPipelines({ conflict_strategy: 'last_write_wins' }, async () => {
      // s3 first, then s1, then s2: s2's is the last write of each shared key.
      for (const i of [2, 0, 1]) {
        await execSql(urls[i] as string, `INSERT INTO items SELECT g, $1, 0 FROM generate_series(200, 204) g`, [`s${i + 1}`]);
        await new Promise((r) => setTimeout(r, 50));
      }
      await waitFor('shared keys of the last writer', async () => (await held('SELECT DISTINCT name FROM items')) === JSON.stringify([{ name: 's2' }]), 60_000, 250, () => held());
      // s1 writes again later: now it is the last writer.
      await execSql(urls[0] as string, `UPDATE items SET name = 's1-again' WHERE id = 200`);
      await waitFor('a later write of another source wins', async () => (await held('SELECT name FROM items WHERE id = 200')) === JSON.stringify([{ name: 's1-again' }]), 60_000, 250);
      // A later delete of another source wins too, and its tombstone keeps the row away.
      await execSql(urls[2] as string, 'DELETE FROM items WHERE id = 201');
      await waitFor('a later delete of another source wins', async () => (await held('SELECT id FROM items WHERE id = 201')) === '[]', 60_000, 250);
    }, 'lww');
    expect(JSON.parse(await held('SELECT id, name FROM items ORDER BY id'))).toEqual([{ id: 200, name: 's1-again' }, ...[202, 203, 204].map((id) => ({ id, name: 's2' }))]);
    const [n] = await mysqlRows<{ n: number }>(target.admin, `SELECT COUNT(*) AS n FROM syncline_conflicts WHERE strategy = 'last_write_wins'`);
    expect(Number(n?.n)).toBeGreaterThanOrEqual(11);
  }, 180_000);
});
