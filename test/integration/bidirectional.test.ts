import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Pipeline } from '../../src/index.js';
import { embeddedPg17, freshDatabase, machinePg15, waitFor, type PgServer } from '../helpers/postgres.js';
import { captured, createAccounts, direction, dropDatabases, dropSlot, range, rowsOf, updateRounds } from '../helpers/many-writers.js';

const PID = process.pid;
const A = `bidi_a_${PID}`;
const B = `bidi_b_${PID}`;
const ROWS = 'SELECT id, name, hits::text, updated_at::text FROM accounts ORDER BY id';

/**
 * Active-active between two databases of the machine's PostgreSQL 15: A→B and B→A, each sink
 * tagging its writes with a replication origin and each capture skipping them (the Origin
 * message, filtered in capture on 15). Both sides update disjoint rows and the same rows at
 * once; last_write_wins on the application's `updated_at` and a delta counter make them
 * converge, and traffic stops when the writes stop (no change comes back).
 */
const SERVERS: [string, () => Promise<PgServer>][] = [
  ['PostgreSQL 15: the Origin message filtered in capture', machinePg15],
  ["PostgreSQL 17: pgoutput origin 'none'", () => embeddedPg17('logical')],
];

describe.each(SERVERS)('bidirectional without loops (%s, embedded streams)', (_, start) => {
  let server: PgServer;
  let dir: string;
  let aUrl: string;
  let bUrl: string;
  const pipelines: Pipeline[] = [];

  beforeAll(async () => {
    server = await start();
    aUrl = await freshDatabase(server, `syncline_${A}`);
    bUrl = await freshDatabase(server, `syncline_${B}`);
    for (const url of [aUrl, bUrl]) await createAccounts(url, 100);
    dir = await mkdtemp(path.join(os.tmpdir(), 'syncline-bidi-'));
  }, 120_000);

  afterAll(async () => {
    for (const p of pipelines) await p.stop().catch(() => undefined);
    if (aUrl) await dropSlot(aUrl, A, [`from_${A}`, `from_${B}`]).catch(() => undefined);
    if (bUrl) await dropSlot(bUrl, B).catch(() => undefined);
    await dropDatabases(server.url('postgres'), [`syncline_${A}`, `syncline_${B}`]).catch(() => undefined);
    await server?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  }, 60_000);

  it('converges after concurrent updates of disjoint and the same rows, and stops when writes stop', async () => {
    const sinkKeys = { conflict_strategy: 'last_write_wins', lww_column: 'updated_at', delta_columns: { accounts: ['hits'] } };
    const ab = direction({ name: A, sourceUrl: aUrl, sinkUrl: bUrl, dir, tables: ['accounts'], source: { skip_origins: true }, sink: { ...sinkKeys, origin: `from_${A}`, local_source: B } });
    const ba = direction({ name: B, sourceUrl: bUrl, sinkUrl: aUrl, dir, tables: ['accounts'], source: { skip_origins: true }, sink: { ...sinkKeys, origin: `from_${B}`, local_source: A } });
    pipelines.push(ab, ba);
    await ab.start();
    await ba.start();

    // Each side: 25 rounds over its own 40 rows and the 20 shared ones, as fast as it can.
    const rounds = 25;
    let increments = 0;
    const pause = async (r: number): Promise<void> => {
      if (r % 5 === 0) await new Promise((resolve) => setTimeout(resolve, 20));
    };
    const [onA, onB] = await Promise.all([updateRounds(aUrl, 'a', range(21, 60), rounds, pause), updateRounds(bUrl, 'b', range(61, 100), rounds, pause)]);
    increments = onA + onB;

    await waitFor('both databases identical', async () => (await rowsOf(aUrl, ROWS)) === (await rowsOf(bUrl, ROWS)), 90_000, 250);
    const rows = JSON.parse(await rowsOf(aUrl, ROWS)) as { id: number; name: string; hits: string }[];
    // Every increment of both sides counts once, on both sides (delta merge of concurrent updates).
    expect(rows.reduce((sum, r) => sum + Number(r.hits), 0)).toBe(increments);
    // Disjoint rows end as their only writer left them.
    expect(rows.filter((r) => r.id >= 21 && r.id <= 60).every((r) => r.name.startsWith('a-'))).toBe(true);
    expect(rows.filter((r) => r.id >= 61).every((r) => r.name.startsWith('b-'))).toBe(true);

    // No loop: each capture saw exactly its own side's row changes, none of the sink's writes.
    await waitFor('captures caught up', async () => (await captured(ab)) === onA && (await captured(ba)) === onB, 30_000);
    const before = [await captured(ab), await captured(ba), ab.status().applied, ba.status().applied];
    await new Promise((r) => setTimeout(r, 3000));
    expect([await captured(ab), await captured(ba), ab.status().applied, ba.status().applied]).toEqual(before);

    // The shared rows were updated on both sides at once: conflicts were recorded on both.
    for (const url of [aUrl, bUrl]) {
      const conflicts = JSON.parse(await rowsOf(url, `SELECT count(*)::int AS n, count(*) FILTER (WHERE row_key::jsonb->>0 IN (${range(1, 20).map((i) => `'${i}'`).join(',')}))::int AS shared FROM syncline.conflicts WHERE strategy = 'last_write_wins'`)) as { n: number; shared: number }[];
      expect(conflicts[0]?.shared).toBeGreaterThan(0);
    }
    const text = await ab.metrics.registry.metrics();
    expect(text).toMatch(/sync_conflicts_total\{table="public\.accounts",strategy="last_write_wins"\} [1-9]/);
  }, 180_000);
});
