import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runPipeline, type Role } from '../../src/api/run-pipeline.js';
import { parseConfig } from '../../src/config/load.js';
import { parseTableName } from '../../src/core/sql.js';
import { silentLogger } from '../../src/log/logger.js';
import { Metrics } from '../../src/metrics/metrics.js';
import { compareTable } from '../../src/verify/compare.js';
import { embeddedPg17, freePort, machinePg15, waitFor, type PgServer, slotStreaming, sourceAndTarget, uniqueName } from '../helpers/postgres.js';
import { Workload, WORKLOAD_DDL, WORKLOAD_TABLES } from '../helpers/workload.js';

const SLOT = uniqueName('syncline_it');

async function counter(metrics: Metrics, name: string): Promise<number> {
  const m = await metrics.registry.getSingleMetric(name)?.get();
  return (m?.values ?? []).reduce((s, v) => s + v.value, 0);
}

for (const [label, startServer] of [
  ['PostgreSQL 15 (machine)', machinePg15],
  ['PostgreSQL 17 (embedded)', embeddedPg17],
] as const) {
  describe(`pipeline on ${label}`, () => {
    let server: PgServer;
    let dir: string;
    let source: pg.Client;
    let target: pg.Client;
    let configText: string;
    const tables = WORKLOAD_TABLES.map((t) => parseTableName(t));

    beforeAll(async () => {
      server = await startServer();
      dir = await mkdtemp(path.join(os.tmpdir(), 'syncline-it-'));
      const pair = await sourceAndTarget(server, 'syncline_it');
      ({ source, target } = pair);
      const { sourceUrl, targetUrl } = pair;
      await source.query(WORKLOAD_DDL);
      await target.query(WORKLOAD_DDL);
      configText = `source:
  url: ${sourceUrl}
  slots: [{ name: ${SLOT}, publication: syncline_it_pub, tables: ['items', '"Mixed Case"'] }]
  snapshot: never # the replay test counts applied events (0); a first snapshot running late (busy machine) would leave rows in the stream that the replay applies
stream: { broker: embedded, path: ${path.join(dir, 'stream')}, partitions: 4 }
consumer: { group_id: it, retry: { backoff_base_ms: 20, backoff_max_ms: 200 } }
sink: { url: ${targetUrl} }
monitoring: { port: PORT }
`;
    }, 120_000);

    afterAll(async () => {
      await source?.end();
      await target?.end();
      await server?.stop();
      if (dir) await rm(dir, { recursive: true, force: true });
    });

    function start(role: Role, metrics: Metrics, port = 0): { stop: () => Promise<void>; done: Promise<void> } {
      const config = parseConfig(configText.replace('PORT', String(port)), {});
      const ctl = new AbortController();
      const done = runPipeline(config, role, silentLogger(), ctl.signal, metrics);
      done.catch(() => undefined);
      return { done, stop: async () => { ctl.abort(); await done; } };
    }

    /** The sink's stored stream positions: next offset per partition. */
    async function positions(): Promise<Map<number, bigint>> {
      const { rows } = await target.query<{ p: number; o: string }>('SELECT stream_partition AS p, next_offset::text AS o FROM syncline.positions');
      return new Map(rows.map((r) => [r.p, BigInt(r.o)]));
    }

    /** Whether apply has committed every partition up to `end` (a replay is done when it reaches the first run's positions). */
    async function reached(end: ReadonlyMap<number, bigint>): Promise<boolean> {
      const now = await positions();
      return end.size > 0 && [...end].every(([p, o]) => (now.get(p) ?? -1n) >= o);
    }

    async function converged(): Promise<boolean> {
      const drift = await Promise.all(tables.map((t) => compareTable(source, target, t)));
      return drift.every((d) => d.differing === 0 && d.sourceRows === d.targetRows);
    }

    it('streams mixed changes, key changes and TRUNCATE; serves /metrics', async () => {
      const metrics = new Metrics();
      const port = await freePort();
      const p = start('run', metrics, port);
      await waitFor('slot active', async () => (await slotStreaming(source, SLOT)));
      const w = new Workload(source);
      for (let i = 0; i < 200; i++) await w.transaction();
      await source.query('TRUNCATE "Mixed Case"');
      await source.query(`INSERT INTO "Mixed Case" ("Key", "Value") VALUES ('after-truncate', '{"a":1}')`);
      await waitFor('target equals source', converged, 60_000, 250);
      const { rows } = await target.query('SELECT "Key" FROM "Mixed Case"');
      expect(rows).toEqual([{ Key: 'after-truncate' }]);

      const body = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
      for (const name of ['sync_lag_seconds', 'sync_duplicate_rate', 'sync_deadletter_count', 'sync_events_captured_total', 'sync_events_applied_total', 'sync_events_stale_total', 'sync_apply_batch_duration_seconds_bucket', 'sync_capture_lsn']) {
        expect(body).toContain(name);
      }
      expect(await counter(metrics, 'sync_events_captured_total')).toBeGreaterThanOrEqual(w.changes);
      await p.stop();
    });

    it('replaying the whole stream changes nothing at the target and counts the changes as stale', async () => {
      const before = await target.query('SELECT id, val, amount, _syncline_lsn::text, _syncline_seq FROM items ORDER BY id');
      // The first run applied the whole stream: its positions are the stream's end.
      const end = await positions();
      // Forget the sink's positions: apply starts again from offset 0 of every partition.
      await target.query('DELETE FROM syncline.positions');
      const metrics = new Metrics();
      const p = start('apply', metrics);
      const total = await counter(metrics, 'sync_events_consumed_total');
      expect(total).toBe(0);
      await waitFor('the replay to reach the end of the stream', () => reached(end), 30_000);
      expect(await counter(metrics, 'sync_events_consumed_total')).toBeGreaterThan(1000);
      await p.stop();
      const after = await target.query('SELECT id, val, amount, _syncline_lsn::text, _syncline_seq FROM items ORDER BY id');
      expect(after.rows).toEqual(before.rows);
      expect(await converged()).toBe(true);
      expect(await counter(metrics, 'sync_events_applied_total')).toBe(0);
      expect(await counter(metrics, 'sync_events_stale_total')).toBeGreaterThan(0);
      const rate = (await metrics.registry.getSingleMetric('sync_duplicate_rate')?.get())?.values[0]?.value ?? 0;
      expect(rate).toBeGreaterThan(0.5);
    });

    it('a replayed older insert does not resurrect a deleted row (tombstone)', async () => {
      const metrics = new Metrics();
      const p = start('run', metrics);
      await source.query(`INSERT INTO items (id, grp) VALUES (999999, 1)`);
      await source.query('DELETE FROM items WHERE id = 999999');
      await waitFor('target equals source', converged, 30_000, 200);
      await p.stop();
      const end = await positions();
      await target.query('DELETE FROM syncline.positions');
      const replay = start('apply', new Metrics());
      await waitFor('the replay to reach the end of the stream', () => reached(end), 30_000);
      await replay.stop();
      const { rows } = await target.query('SELECT count(*)::int AS n FROM items WHERE id = 999999');
      expect(rows[0]?.n).toBe(0);
      expect(await converged()).toBe(true);
    });
  });
}
