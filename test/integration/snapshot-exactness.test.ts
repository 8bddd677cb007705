import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runPipeline } from '../../src/api/run-pipeline.js';
import { parseConfig } from '../../src/config/load.js';
import type { SynclineConfig } from '../../src/config/schema.js';
import { SnapshotStore } from '../../src/source/snapshot-store.js';
import { rowDiff, sameRows } from '../helpers/compare-rows.js';
import { machinePg15, sourceAndTarget, testLogger, waitFor, uniqueName } from '../helpers/postgres.js';

const SLOT = uniqueName('syncline_exact');

type Hook = () => Promise<void>;
const beforeHigh = new Map<string, Hook>();
/**
 * Runs `hook` right before the next high watermark of a chunk of `table` is written, i.e.
 * after the chunk was read and before its window closes: the moment a concurrent commit
 * must be seen by the window. The pipeline runs in this process, so the snapshot reader's
 * pg.Client is this module's; its `query` is wrapped once.
 */
function beforeHighWatermark(table: string, hook: Hook): void {
  beforeHigh.set(table, hook);
}
const originalQuery = pg.Client.prototype.query;
pg.Client.prototype.query = function (this: pg.Client, ...args: unknown[]): unknown {
  const [text, values] = args as [unknown, unknown];
  const content = Array.isArray(values) ? String(values[1] ?? '') : '';
  if (typeof text === 'string' && text.includes('pg_logical_emit_message') && content.includes('"mark":"high"')) {
    for (const [table, hook] of beforeHigh) {
      if (!content.includes(`"table":"public.${table}"`)) continue;
      beforeHigh.delete(table);
      return hook().then(() => (originalQuery as (...a: unknown[]) => unknown).apply(this, args));
    }
  }
  return (originalQuery as (...a: unknown[]) => unknown).apply(this, args);
} as typeof pg.Client.prototype.query;

/**
 * Snapshots that must be exact while the source is written: composite keys declared in
 * another order than the columns (F3), a TRUNCATE during a chunk's read (F4), unchanged
 * TOAST values of rows the target does not have yet (F5). Against the machine's PostgreSQL 15.
 */
describe('exact snapshots under writes (PostgreSQL 15)', () => {
  let dir: string;
  let source: pg.Client;
  let target: pg.Client;
  let sourceUrl: string;
  let targetUrl: string;
  let running: { stop: () => Promise<void> } | undefined;

  const config = (extra = ''): SynclineConfig =>
    parseConfig(
      `source:
  url: ${sourceUrl}
  slots: [{ name: ${SLOT}, publication: syncline_exact_pub, tables: [ba, toasty, trunc] }]
  snapshot_chunk_size: 2000
${extra}stream: { path: ${path.join(dir, 'stream')}, partitions: 4 }
consumer: { group_id: exact }
sink: { url: ${targetUrl} }
monitoring: { enabled: false }
`,
      {},
    );

  const start = async (role: 'run' | 'apply' = 'run', from?: string): Promise<{ stop: () => Promise<void> }> => {
    const ctl = new AbortController();
    const p = runPipeline(config(), role, await testLogger(), ctl.signal, undefined, from);
    p.catch(() => undefined);
    return {
      stop: async () => {
        ctl.abort();
        await p;
      },
    };
  };

  beforeAll(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'syncline-exact-'));
    ({ source, target, sourceUrl, targetUrl } = await sourceAndTarget(await machinePg15(), 'syncline_exact'));
    for (const c of [source, target]) {
      // The key is declared (b, a): streamed changes and snapshot rows must name rows alike.
      await c.query('CREATE TABLE ba (a integer, b integer, v text, PRIMARY KEY (b, a))');
      await c.query('CREATE TABLE toasty (id integer PRIMARY KEY, n integer NOT NULL, big text)');
      await c.query('ALTER TABLE toasty ALTER COLUMN big SET STORAGE EXTERNAL');
      await c.query('CREATE TABLE trunc (id integer PRIMARY KEY, filler text)');
    }
    await source.query("INSERT INTO ba SELECT g, 100000 + g, 'v' || g FROM generate_series(1, 20000) g");
    await source.query("INSERT INTO toasty SELECT g, 0, repeat(md5(g::text), 128) FROM generate_series(1, 3000) g");
  }, 60_000);

  afterAll(async () => {
    await running?.stop();
    await source?.end();
    await target?.end();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('the initial snapshot under updates leaves composite-key and TOASTed rows exact (F3, F5)', async () => {
    running = await start();
    const jobs = async (): Promise<string[]> =>
      (await source.query<{ status: string }>('SELECT status FROM syncline.snapshots').catch(() => ({ rows: [] }))).rows.map((r) => r.status);
    let i = 0;
    let during = 0;
    // Updates across both tables while they are read in chunks; toasty's leave big unchanged.
    await waitFor('the initial snapshots to finish', async () => {
      i++;
      await source.query('UPDATE ba SET v = $2 WHERE a = $1', [1 + ((i * 7919) % 20000), `u${i}`]);
      await source.query('UPDATE toasty SET n = n + 1 WHERE id = $1', [1 + ((i * 104729) % 3000)]);
      const s = await jobs();
      if (s.includes('running')) during++;
      return s.length === 3 && s.every((x) => x === 'done');
    }, 120_000, 0);
    expect(during).toBeGreaterThan(10);
    await waitFor('ba equal', () => sameRows(source, target, 'ba'), 60_000, 300);
    await waitFor('toasty equal', () => sameRows(source, target, 'toasty'), 60_000, 300);
    const nulls = await target.query('SELECT count(*)::int AS n FROM toasty WHERE big IS NULL');
    expect(nulls.rows[0]?.n).toBe(0);
  }, 180_000);

  it('a key-changing UPDATE that leaves a TOASTed column unchanged brings the value under the new key (F5)', async () => {
    await source.query('UPDATE toasty SET id = id + 100000 WHERE id IN (1, 2, 3)');
    await waitFor('toasty equal after the key change', () => sameRows(source, target, 'toasty'), 30_000, 200);
    const { rows } = await target.query<{ id: number; len: number }>('SELECT id, length(big) AS len FROM toasty WHERE id > 100000 ORDER BY id');
    expect(rows).toEqual([{ id: 100001, len: 4096 }, { id: 100002, len: 4096 }, { id: 100003, len: 4096 }]);
  }, 60_000);

  it('deleted composite-key rows stay deleted when the whole stream is replayed (F3 tombstones)', async () => {
    await source.query('DELETE FROM ba WHERE a <= 50');
    await waitFor('deletes applied', async () => (await target.query('SELECT count(*)::int AS n FROM ba WHERE a <= 50')).rows[0]?.n === 0, 30_000, 200);
    await running?.stop();
    const applied = async (): Promise<string | undefined> =>
      (await target.query<{ n: string }>("SELECT sum(next_offset)::text AS n FROM syncline.positions WHERE group_id = 'exact'")).rows[0]?.n;
    const end = await applied();
    running = await start('apply', 'beginning');
    // Nothing is captured meanwhile: the replay has passed everything once it is back there.
    await waitFor('the replay to start', async () => (await applied()) !== end, 30_000, 20);
    await waitFor('the replay to reach the end', async () => (await applied()) === end, 60_000, 200);
    await running.stop();
    running = undefined;
    const diff = await rowDiff(source, target, 'ba');
    expect(diff.extra).toEqual([]);
    expect(diff.missing).toEqual([]);
    // One canonical key everywhere: every record of a row names it the same way, READ
    // rows and streamed changes alike, so they share a partition and a tombstone.
    const forms = new Map<string, Set<string>>();
    for (const r of await streamRecords()) {
      const c = JSON.parse(r.value.toString()) as { table: string; op: string; key: Record<string, string> };
      if (c.table !== 'ba' || c.op === 'TRUNCATE') continue;
      const identity = Object.entries(c.key).sort(([x], [y]) => x.localeCompare(y)).map(([k, v]) => `${k}=${v}`).join(',');
      const set = forms.get(identity) ?? new Set();
      set.add(`${JSON.stringify(c.key)} @${r.partition}`);
      forms.set(identity, set);
    }
    expect(forms.size).toBe(20000);
    expect([...forms.values()].filter((f) => f.size > 1).slice(0, 3).map((f) => [...f])).toEqual([]);
  }, 120_000);

  it('a TRUNCATE committed while a chunk is read empties the table at the target (F4)', async () => {
    running = await start();
    await source.query("INSERT INTO trunc SELECT g, 'x' || g FROM generate_series(1, 1000) g");
    await waitFor('trunc streamed', async () => (await target.query('SELECT count(*)::int AS n FROM trunc')).rows[0]?.n === 1000, 60_000, 200);
    const store = new SnapshotStore(source, 'syncline', SLOT);
    // The chunk has been read; the TRUNCATE commits before its high watermark.
    beforeHighWatermark('trunc', async () => void (await source.query('TRUNCATE trunc')));
    await store.request({ schema: 'public', table: 'trunc' });
    await waitFor('snapshot done', async () => (await store.all()).every((j) => j.status === 'done'), 60_000, 200);
    await source.query("INSERT INTO trunc VALUES (1, 'after')");
    await waitFor('trunc equal', () => sameRows(source, target, 'trunc'), 30_000, 200);
  }, 120_000);

  it('an UPDATE committed after a composite-key chunk was read, before its high watermark, is not overwritten (F3)', async () => {
    const store = new SnapshotStore(source, 'syncline', SLOT);
    beforeHighWatermark('ba', async () => void (await source.query("UPDATE ba SET v = 'late' WHERE a BETWEEN 60 AND 70")));
    await store.request({ schema: 'public', table: 'ba' });
    await waitFor('snapshot done', async () => (await store.all()).every((j) => j.status === 'done'), 60_000, 200);
    await waitFor('ba equal', () => sameRows(source, target, 'ba'), 30_000, 200).catch(async (err: unknown) => {
      throw new Error(`${String(err)}: ${JSON.stringify(await rowDiff(source, target, 'ba', 3))}`);
    });
  }, 120_000);

  /** Every record in the embedded stream, read by a throwaway group. */
  async function streamRecords(): Promise<{ partition: number; value: Buffer }[]> {
    const { openEmbeddedStream } = await import('../../src/stream/embedded/embedded-stream.js');
    const stream = await openEmbeddedStream({ path: path.join(dir, 'stream'), partitions: 4, retentionHours: 168 });
    try {
      const ends = await stream.endOffsets();
      const consumer = await stream.consumer('exact-reader', { startPositions: async (ps) => new Map(ps.map((p) => [p, 0n])) });
      const out: { partition: number; value: Buffer }[] = [];
      const total = [...ends.values()].reduce((a, b) => a + b, 0n);
      while (BigInt(out.length) < total) {
        const batch = await consumer.poll(10_000, 200);
        if (batch.length === 0) break;
        out.push(...batch.map((r) => ({ partition: r.partition, value: r.value })));
      }
      await consumer.close();
      return out;
    } finally {
      await stream.close();
    }
  }
});
