import { execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runPipeline, type Role } from '../../src/api/run-pipeline.js';
import { loadConfigFile } from '../../src/config/load.js';
import { Metrics } from '../../src/metrics/metrics.js';
import { compareTable } from '../../src/verify/compare.js';
import { machinePg15, testLogger, waitFor, slotStreaming, sourceAndTarget, uniqueName } from '../helpers/postgres.js';

const SLOT = uniqueName('syncline_replay');

const CLI = path.resolve('dist/cli/main.js');

async function counter(metrics: Metrics, name: string): Promise<number> {
  const m = await metrics.registry.getSingleMetric(name)?.get();
  return (m?.values ?? []).reduce((s, v) => s + v.value, 0);
}

describe('TRUNCATE parked in the dead-letter queue; replay with apply --from', () => {
  let dir: string;
  let configFile: string;
  let source: pg.Client;
  let target: pg.Client;

  beforeAll(async () => {
    const server = await machinePg15();
    dir = await mkdtemp(path.join(os.tmpdir(), 'syncline-replay-'));
    const pair = await sourceAndTarget(server, 'syncline_replay');
    ({ source, target } = pair);
    const { sourceUrl, targetUrl } = pair;
    for (const c of [source, target]) await c.query('CREATE TABLE events (id integer PRIMARY KEY, body text)');
    configFile = path.join(dir, 'sync.yaml');
    await writeFile(
      configFile,
      `source:
  url: ${sourceUrl}
  slots: [{ name: ${SLOT}, publication: syncline_replay_pub, tables: [events] }]
  snapshot: never # the replays count applied and stale events exactly; a first snapshot running late (busy machine) would publish rows the first run never applied, or resume after the --from mark
stream: { path: ${path.join(dir, 'stream')}, partitions: 3 }
consumer: { group_id: replay }
sink: { url: ${targetUrl}, truncate: dead_letter, stale_audit: true }
monitoring: { enabled: false }
`,
    );
  }, 60_000);

  afterAll(async () => {
    await source?.end();
    await target?.end();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  async function runUntil(role: Role, done: (m: Metrics) => Promise<boolean>, from?: string): Promise<Metrics> {
    const metrics = new Metrics();
    const ctl = new AbortController();
    const running = runPipeline(loadConfigFile(configFile), role, await testLogger(), ctl.signal, metrics, from);
    running.catch(() => undefined);
    await waitFor(`${role} to finish its work`, () => done(metrics), 60_000, 100);
    ctl.abort();
    await running;
    return metrics;
  }

  const count = async (): Promise<number> => (await target.query('SELECT count(*)::int AS n FROM events')).rows[0]?.n;

  it('a TRUNCATE with sink.truncate: dead_letter is parked; replaying it removes only older rows', async () => {
    let truncatedAt = 0;
    await runUntil('run', async () => {
      if (truncatedAt === 0 && (await slotStreaming(source, SLOT))) {
        await source.query("INSERT INTO events SELECT g, 'before' FROM generate_series(1, 300) g");
        await source.query('TRUNCATE events');
        truncatedAt = Date.now();
        await source.query("INSERT INTO events SELECT g, 'after' FROM generate_series(1001, 1100) g");
      }
      return truncatedAt > 0 && (await count()) === 400;
    });
    const parked = JSON.parse((await promisify(execFile)(process.execPath, [CLI, 'dlq', 'list', '--json', '-c', configFile], { encoding: 'utf8' })).stdout) as { op: string; error_code: string }[];
    expect(parked).toEqual([expect.objectContaining({ op: 'TRUNCATE', error_code: 'TRUNCATE_PARKED' })]);
    await promisify(execFile)(process.execPath, [CLI, 'dlq', 'replay', '-c', configFile], { encoding: 'utf8' });
    expect(await count()).toBe(100);
    expect((await compareTable(source, target, { schema: 'public', table: 'events' })).differing).toBe(0);
  }, 120_000);

  it('apply --from beginning replays everything and changes nothing; --from a time replays only what came after', async () => {
    const before = (await target.query('SELECT id, body, _syncline_lsn::text, _syncline_seq FROM events ORDER BY id')).rows;
    const all = await runUntil('apply', async (m) => (await counter(m, 'sync_events_consumed_total')) >= 401, 'beginning');
    expect(await counter(all, 'sync_events_applied_total')).toBe(0);
    // Every replayed upsert was rejected by the gate and recorded with both versions.
    const audit = (await target.query(
      "SELECT count(*)::int AS n, count(*) FILTER (WHERE stored_lsn IS NULL OR (stored_lsn, stored_seq) >= (incoming_lsn, incoming_seq))::int AS older FROM syncline.stale_audit WHERE op IN ('INSERT', 'READ')",
    )).rows[0];
    expect(audit?.n).toBeGreaterThanOrEqual(400);
    expect(audit?.older).toBe(audit?.n);
    expect((await target.query('SELECT id, body, _syncline_lsn::text, _syncline_seq FROM events ORDER BY id')).rows).toEqual(before);

    const mark = new Date().toISOString();
    await new Promise((r) => setTimeout(r, 50));
    await runUntil('run', async () => {
      if ((await source.query('SELECT count(*)::int AS n FROM events WHERE id > 5000')).rows[0]?.n === 0) {
        await source.query("INSERT INTO events SELECT g, 'late' FROM generate_series(5001, 5020) g");
      }
      return (await count()) === 120;
    });
    // Stopped by now (runUntil waits for it): the counts are final.
    const fromTime = await runUntil('apply', async (m) => (await counter(m, 'sync_events_consumed_total')) >= 20, mark);
    expect(await counter(fromTime, 'sync_events_consumed_total')).toBe(20);
    expect(await counter(fromTime, 'sync_events_stale_total')).toBe(20);
  }, 120_000);
});
