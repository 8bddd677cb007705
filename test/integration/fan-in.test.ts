import { execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { promisify } from 'node:util';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Pipeline } from '../../src/index.js';
import { embeddedPg17, freshDatabase, machinePg15, waitFor, type PgServer } from '../helpers/postgres.js';
import { direction, dropDatabases, dropSlot, execSql, fanInPriorityExpected, fanInWrites, FAN_IN_ITEMS, rowsOf } from '../helpers/many-writers.js';
import { CLI, ensureBuilt } from '../helpers/cli.js';

const PID = process.pid;
const SOURCES = [1, 2, 3].map((i) => `fanin_s${i}_${PID}`);
const TARGET = `syncline_fanin_target_${PID}`;

/**
 * Fan-in on the machine's PostgreSQL 15: three source databases (distinct source names) into
 * one target table, each source with its own rows and all three writing ten shared keys.
 * Versions are compared only within a source; a write to a row another source wrote is a
 * conflict, decided by the strategy and recorded.
 */
const SERVERS: [string, () => Promise<PgServer>][] = [
  ['PostgreSQL 15', machinePg15],
  ['PostgreSQL 17', () => embeddedPg17('logical')],
];

describe.each(SERVERS)('fan-in: three sources into one target (%s, embedded streams)', (_, start) => {
  let server: PgServer;
  let dir: string;
  let urls: string[] = [];
  let targetUrl: string;
  const pipelines: Pipeline[] = [];

  beforeAll(async () => {
    server = await start();
    urls = [];
    for (const s of SOURCES) {
      const url = await freshDatabase(server, `syncline_${s}`);
      await execSql(url, FAN_IN_ITEMS);
      urls.push(url);
    }
    targetUrl = await freshDatabase(server, TARGET);
    dir = await mkdtemp(path.join(os.tmpdir(), 'syncline-fanin-'));
  }, 120_000);

  afterAll(async () => {
    for (const p of pipelines) await p.stop().catch(() => undefined);
    for (const [i, s] of SOURCES.entries()) await dropSlot(urls[i] as string, s).catch(() => undefined);
    await dropDatabases(server.url('postgres'), [...SOURCES.map((s) => `syncline_${s}`), TARGET]).catch(() => undefined);
    await server?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  }, 60_000);

  /** Starts one pipeline per source into the target with `sink` keys; stops them after `fn`. */
  async function withPipelines(sink: Record<string, unknown>, fn: () => Promise<void>, suffix: string, extra: Record<string, unknown> = {}): Promise<void> {
    const started = SOURCES.map((s, i) => direction({ name: s, sourceUrl: urls[i] as string, sinkUrl: targetUrl, dir: path.join(dir, suffix), tables: ['items'], sink, ...extra }));
    pipelines.push(...started);
    try {
      for (const p of started) await p.start();
      await fn();
    } finally {
      for (const p of started) await p.stop();
    }
  }

  it('source_priority: own keys land as written, shared keys keep the first-listed source whatever the LSNs', async () => {
    await execSql(targetUrl, FAN_IN_ITEMS);
    // Priority s2, s1, s3; source 3 writes the shared keys last and often (its LSNs grow largest).
    await withPipelines({ conflict_strategy: 'source_priority', source_priority: [SOURCES[1], SOURCES[0], SOURCES[2]] }, async () => {
      await fanInWrites(urls);
      const expected = fanInPriorityExpected();
      const held = (): Promise<string> => rowsOf(targetUrl, 'SELECT id, name, qty FROM items ORDER BY id');
      const differences = async (): Promise<string> => {
        const rows = JSON.parse(await held()) as unknown[];
        const wrong = expected.filter((e) => !rows.some((r) => JSON.stringify(r) === JSON.stringify(e)));
        const conflicts = await rowsOf(targetUrl, `SELECT row_key, winner, incoming_source, stored_source, incoming_version, stored_version FROM syncline.conflicts ORDER BY id`).catch(String);
        return JSON.stringify({ rows: rows.length, missingOrWrong: wrong, got: rows.filter((r) => (r as { id: number }).id >= 100), conflicts: JSON.parse(conflicts) as unknown });
      };
      await waitFor('the target holds every source row and the shared keys of s2', async () => (await held()) === JSON.stringify(expected), 60_000, 250, differences);
      // A delete is a write too: s3 may not delete s2's row; s1 deletes its own.
      await execSql(urls[2] as string, 'DELETE FROM items WHERE id = 100');
      await execSql(urls[0] as string, 'DELETE FROM items WHERE id = 1');
      await waitFor('own delete applied, lower-priority delete refused', async () => (await rowsOf(targetUrl, 'SELECT id FROM items WHERE id IN (1, 100) ORDER BY id')) === JSON.stringify([{ id: 100 }]), 60_000, 250);
      const refused = await rowsOf(targetUrl, `SELECT winner, incoming_source FROM syncline.conflicts WHERE row_key = '["100"]' AND incoming_version = 'null'::jsonb`);
      expect(refused).toBe(JSON.stringify([{ winner: 'stored', incoming_source: SOURCES[2] }]));
    }, 'priority');
    const rows = JSON.parse(await rowsOf(targetUrl, `SELECT DISTINCT _syncline_source AS s FROM items WHERE id >= 100`)) as { s: string }[];
    expect(rows).toEqual([{ s: SOURCES[1] }]);
    // Every cross-source write to a shared key is recorded; own keys have none.
    const conflicts = JSON.parse(
      await rowsOf(targetUrl, `SELECT count(*)::int AS n, count(*) FILTER (WHERE (row_key::jsonb->>0)::int < 100)::int AS own, count(DISTINCT winner)::int AS winners FROM syncline.conflicts`),
    ) as { n: number; own: number; winners: number }[];
    expect(conflicts[0]?.n).toBeGreaterThan(0);
    expect(conflicts[0]?.own).toBe(0);
    const stored = JSON.parse(await rowsOf(targetUrl, `SELECT DISTINCT incoming_source AS s FROM syncline.conflicts WHERE winner = 'incoming' AND stored_source <> 'local'`)) as { s: string }[];
    // Only s2 ever takes a shared key from another source (s1 only from s3).
    expect(stored.map((r) => r.s).every((s) => s === SOURCES[1] || s === SOURCES[0])).toBe(true);

    // `syncline conflicts list` shows them, newest first, with both versions and the winner.
    ensureBuilt();
    const file = path.join(dir, 'conflicts.yaml');
    await writeFile(file, `source:\n  url: ${urls[0]}\n  slots: [{ name: x, publication: x }]\nsink:\n  url: ${targetUrl}\n`);
    const { stdout } = await promisify(execFile)(process.execPath, [CLI, 'conflicts', 'list', '-c', file, '--table', 'items', '--limit', '3', '--json']);
    const listed = JSON.parse(stdout) as { table: string; winner: string; loser: string; strategy: string; stored: unknown; incoming: unknown }[];
    expect(listed).toHaveLength(3);
    expect(listed.every((e) => e.table === 'public.items' && e.strategy === 'source_priority' && e.stored !== null && 'incoming' in e)).toBe(true);
    const text = await promisify(execFile)(process.execPath, [CLI, 'conflicts', 'list', '-c', file, '--limit', '1']);
    expect(text.stdout).toMatch(/public\.items \["10\d"\] {2}source_priority: fanin_s\d_\d+ won over fanin_s\d_\d+/);
  }, 120_000);

  it('last_write_wins: the shared keys end with the source that committed last, whatever the apply order', async () => {
    await execSql(targetUrl, 'DROP TABLE items; TRUNCATE syncline.conflicts, syncline.positions, syncline.tombstones, syncline.source_tombstones');
    await execSql(targetUrl, FAN_IN_ITEMS);
    for (const url of urls) await execSql(url, 'TRUNCATE items');
    await withPipelines({ conflict_strategy: 'last_write_wins' }, async () => {
      // s3 first, then s1, then s2: s2's is the last write of each shared key.
      for (const i of [2, 0, 1]) {
        await execSql(urls[i] as string, `INSERT INTO items SELECT g, $1, 0 FROM generate_series(200, 204) g`, [`s${i + 1}`]);
        await new Promise((r) => setTimeout(r, 50));
      }
      await waitFor('shared keys of the last writer', async () => (await rowsOf(targetUrl, `SELECT DISTINCT name FROM items`)) === JSON.stringify([{ name: 's2' }]), 60_000, 250);
      // s1 writes again later: now it is the last writer.
      await execSql(urls[0] as string, `UPDATE items SET name = 's1-again' WHERE id = 200`);
      await waitFor('a later write of another source wins', async () => (await rowsOf(targetUrl, `SELECT name FROM items WHERE id = 200`)) === JSON.stringify([{ name: 's1-again' }]), 60_000, 250);
      // A later delete of another source wins too, and its tombstone keeps the row away.
      await execSql(urls[2] as string, 'DELETE FROM items WHERE id = 201');
      await waitFor('a later delete of another source wins', async () => (await rowsOf(targetUrl, `SELECT id FROM items WHERE id = 201`)) === '[]', 60_000, 250);
    }, 'lww');
    const winners = JSON.parse(await rowsOf(targetUrl, `SELECT count(*)::int AS n FROM syncline.conflicts WHERE strategy = 'last_write_wins'`)) as { n: number }[];
    expect(winners[0]?.n).toBeGreaterThanOrEqual(11);
  }, 120_000);

  it('sink.writers: a source writing a table it does not own is dead-lettered (NOT_OWNER); doctor warns of two writers without a strategy', async () => {
    await execSql(targetUrl, 'DROP TABLE items; TRUNCATE syncline.conflicts, syncline.positions, syncline.tombstones, syncline.source_tombstones');
    await execSql(targetUrl, FAN_IN_ITEMS);
    for (const url of urls) await execSql(url, 'TRUNCATE items');
    const writers = { [SOURCES[0] as string]: ['items'], [SOURCES[1] as string]: ['public.items'] };
    await withPipelines({ writers }, async () => {
      for (const [i, url] of urls.entries()) await execSql(url, `INSERT INTO items VALUES ($1, $2, 0)`, [300 + i, `s${i + 1}`]);
      await waitFor('the owners rows applied and the third dead-lettered', async () => {
        const applied = await rowsOf(targetUrl, 'SELECT id FROM items ORDER BY id');
        // s3's TRUNCATE (of the previous test's rows) and its INSERT.
        const letters = await rowsOf(targetUrl, `SELECT DISTINCT source, error_code, change->>'op' AS op FROM syncline.dead_letter ORDER BY 3`).catch(() => '[]');
        return (
          applied === JSON.stringify([{ id: 300 }, { id: 301 }]) &&
          letters === JSON.stringify(['INSERT', 'TRUNCATE'].map((op) => ({ source: SOURCES[2], error_code: 'NOT_OWNER', op })))
        );
      }, 60_000, 250);
    }, 'writers', { deadLetters: true });

    ensureBuilt();
    const file = path.join(dir, 'writers.yaml');
    await writeFile(
      file,
      `source:\n  name: ${SOURCES[0]}\n  url: ${urls[0]}\n  slots: [{ name: ${SOURCES[0]}_slot, publication: ${SOURCES[0]}_pub, tables: [items] }]\n` +
        `stream: { broker: embedded, path: ${path.join(dir, 'writers', SOURCES[0] as string)} }\n` +
        `sink:\n  url: ${targetUrl}\n  writers: { ${SOURCES[0]}: [items], ${SOURCES[2]}: [items] }\n`,
    );
    const r = await promisify(execFile)(process.execPath, [CLI, 'doctor', '-c', file, '--json']).catch((e: { stdout: string }) => e);
    const report = JSON.parse(r.stdout) as { checks: { name: string; status: string; detail: string }[] };
    const writersCheck = report.checks.find((c) => c.name === 'sink writers');
    expect(writersCheck?.status).toBe('warn');
    expect(writersCheck?.detail).toMatch(/public\.items is written by fanin_s1_\d+, fanin_s3_\d+ without a conflict strategy/);
  }, 120_000);
});
