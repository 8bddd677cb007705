import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { addColumn, ConfigError, createPipeline, dropTables, maskColumns, renameColumns, type ChangeEvent, type DeadLetter, type Transform } from '../../src/index.js';
import { MemorySink } from '../../src/testing/index.js';
import { openEmbeddedStream } from '../../src/stream/embedded/embedded-stream.js';
import { PostgresDeadLetterQueue } from '../../src/dlq/postgres-dead-letter-queue.js';
import { freshDatabase, machinePg15, waitFor, uniqueName } from '../helpers/postgres.js';

const SLOT = uniqueName('syncline_lib11_api');

/**
 * The library API end to end against the machine's PostgreSQL 15: createPipeline with a plain
 * object config, a custom sink (MemorySink) and a transform chain; dropped changes still move
 * the positions, a throwing transform dead-letters its change only, events and status report it.
 */
describe('createPipeline: custom sink, transforms, dead letters, events (PostgreSQL 15, embedded stream)', () => {
  let dir: string;
  let sourceUrl: string;
  let dlqUrl: string;
  let source: pg.Client;

  beforeAll(async () => {
    const server = await machinePg15();
    sourceUrl = await freshDatabase(server, 'syncline_lib11_api_source');
    dlqUrl = await freshDatabase(server, 'syncline_lib11_api_dlq');
    source = new pg.Client({ connectionString: sourceUrl });
    await source.connect();
    await source.query('CREATE TABLE items (id integer PRIMARY KEY, name text NOT NULL, secret text); CREATE TABLE audit (id serial PRIMARY KEY, what text)');
    dir = await mkdtemp(path.join(os.tmpdir(), 'syncline-lib11-'));
  });

  afterAll(async () => {
    await source?.query('SELECT pg_drop_replication_slot($1) FROM pg_replication_slots WHERE slot_name = $1 AND NOT active', [SLOT]).catch(() => undefined);
    await source?.end();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('rejects an invalid plain-object config with every problem and its path', () => {
    let err: unknown;
    try {
      createPipeline({ config: { source: { slots: [] }, sink: { type: 'nope' as 'postgres' }, stream: { partitions: 0 } } });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(ConfigError);
    const issues = (err as ConfigError).issues.join('\n');
    expect(issues).toMatch(/^source\.slots: /m);
    expect(issues).toMatch(/^sink\.type: /m);
    expect(issues).toMatch(/^stream\.partitions: /m);
  });

  it('applies transformed changes to a custom sink; dropped ones advance positions; a throwing transform dead-letters one change', async () => {
    const sink = new MemorySink();
    const poison: Transform = (c) => {
      if (c.table === 'items' && c.key.id === '13') throw new Error('13 is unlucky');
      return c;
    };
    const applied: ChangeEvent[] = [];
    const letters: DeadLetter[] = [];
    const pipeline = createPipeline({
      config: {
        source: { url: sourceUrl, slots: [{ name: SLOT, publication: `${SLOT}_pub`, tables: ['items', 'audit'] }], heartbeat_interval_ms: 1000, snapshot: 'never' },
        stream: { broker: 'embedded', path: path.join(dir, 'stream'), partitions: 3 },
        consumer: { group_id: 'lib', batch_wait_ms: 5, retry: { backoff_base_ms: 10, backoff_max_ms: 50 } },
        dead_letter: { url: dlqUrl },
        monitoring: { enabled: false },
      },
      sink,
      transforms: [
        poison,
        dropTables('audit'),
        renameColumns({ items: { id: 'item_id' } }),
        maskColumns({ 'public.items': ['secret'] }),
        addColumn('items', 'name_length', (c) => (c.payload?.name == null ? null : String(c.payload.name.length))),
      ],
      role: 'run',
    });
    pipeline.on('applied', (b) => applied.push(...b.changes));
    pipeline.on('deadLettered', (l) => letters.push(...l));
    expect(pipeline.status().state).toBe('idle');
    await pipeline.start();
    try {
      expect(pipeline.status()).toMatchObject({ state: 'running', capture: 'streaming', apply: 'consuming' });
      // start() resolved once the server accepted START_REPLICATION: a walsender holds the
      // slot already, with no waiting, and what is committed from now on is captured.
      const held = await source.query<{ active: boolean; active_pid: number | null }>('SELECT active, active_pid FROM pg_replication_slots WHERE slot_name = $1', [SLOT]);
      expect(held.rows[0]).toMatchObject({ active: true, active_pid: expect.any(Number) });
      await source.query("INSERT INTO items SELECT g, 'name' || g, 'secret' || g FROM generate_series(1, 20) g");
      await source.query("INSERT INTO audit (what) SELECT 'a' || g FROM generate_series(1, 30) g");
      await source.query("UPDATE items SET name = 'renamed' WHERE id = 2");
      await source.query('DELETE FROM items WHERE id = 3');
      await waitFor('19 items applied and the poison dead-lettered', async () => sink.rows('items').length === 18 && sink.row('items', { item_id: '2' })?.name === 'renamed' && letters.length === 1, 30_000);

      expect(sink.row('items', { item_id: '1' })).toEqual({ item_id: '1', name: 'name1', secret: '***', name_length: '5' });
      expect(sink.row('items', { item_id: '13' })).toBeUndefined();
      expect(sink.row('items', { item_id: '3' })).toBeUndefined();
      expect(sink.rows('audit')).toEqual([]);
      expect(applied.every((c) => c.table === 'items' && 'item_id' in c.key && !('id' in c.key))).toBe(true);
      // The dead letter keeps the change as captured (not transformed), with the transform's reason.
      expect(letters[0]).toMatchObject({ errorCode: 'TRANSFORM_FAILED', change: { table: 'items', key: { id: '13' } } });
      expect(letters[0]?.error).toMatch(/#1 \(poison\).*13 is unlucky/);
      const dlq = new PostgresDeadLetterQueue(dlqUrl, 'syncline', SLOT);
      try {
        expect((await dlq.depth()).count).toBe(1);
      } finally {
        await dlq.close();
      }
      // Every change of the 30 audit rows was dropped, and the positions still passed them all.
      await waitFor('status counts the dropped audit changes', async () => pipeline.status().dropped === 30, 10_000);
      expect(pipeline.status()).toMatchObject({ state: 'running', deadLettered: 1 });
      // 19 inserts, an update and a delete; a change folded into a newer one of its row in the
      // same batch (item 2's insert and update, item 3's insert and delete) is not counted.
      const appliedCount = pipeline.status().applied;
      expect(appliedCount).toBeGreaterThanOrEqual(19);
      expect(appliedCount).toBeLessThanOrEqual(21);
      // A replay from the library goes through the pipeline's transforms: the poison fails again and stays.
      const replay = await pipeline.replayDeadLetters();
      expect(replay).toMatchObject({ replayed: 0, failed: [{ error: expect.stringMatching(/13 is unlucky/) }] });
      expect(sink.row('items', { item_id: '13' })).toBeUndefined();
    } finally {
      await pipeline.stop();
    }
    expect(pipeline.status()).toMatchObject({ state: 'stopped', capture: 'stopped', apply: 'stopped' });
    const stream = await openEmbeddedStream({ path: path.join(dir, 'stream'), partitions: 3 });
    try {
      const ends = await stream.endOffsets();
      const total = [...ends.values()].reduce((a, b) => a + b, 0n);
      expect(total).toBe(52n); // 20 + 30 + 1 + 1 changes
      const positions = await sink.positions('lib');
      for (const [p, end] of ends) if (end > 0n) expect(positions.get(p)).toBe(end);
    } finally {
      await stream.close();
    }
  });
});
