import { spawnSync } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runPipeline } from '../../src/cli/run-command.js';
import { loadConfigFile } from '../../src/config/load.js';
import { createLogger, silentLogger } from '../../src/log/logger.js';
import { Metrics } from '../../src/metrics/metrics.js';
import { machinePg15, waitFor, slotStreaming, sourceAndTarget } from '../helpers/postgres.js';

const CLI = path.resolve('dist/cli/main.js');

describe('poison changes: isolated, dead-lettered in row order, replayed after the fix', () => {
  let dir: string;
  let configFile: string;
  let source: pg.Client;
  let target: pg.Client;

  beforeAll(async () => {
    const server = await machinePg15();
    dir = await mkdtemp(path.join(os.tmpdir(), 'syncline-dlq-'));
    const pair = await sourceAndTarget(server, 'syncline_dlq');
    ({ source, target } = pair);
    const { sourceUrl, targetUrl } = pair;
    await source.query('CREATE TABLE poison (id integer PRIMARY KEY, v integer NOT NULL, note text)');
    // The target refuses v = 13: a permanent error (check_violation) for those changes only.
    await target.query('CREATE TABLE poison (id integer PRIMARY KEY, v integer NOT NULL CONSTRAINT no_thirteen CHECK (v <> 13), note text)');
    configFile = path.join(dir, 'sync.yaml');
    await writeFile(
      configFile,
      `source:
  url: ${sourceUrl}
  slots: [{ name: syncline_dlq, publication: syncline_dlq_pub, tables: [poison] }]
stream: { path: ${path.join(dir, 'stream')}, partitions: 2 }
consumer: { group_id: dlq, retry: { backoff_base_ms: 10, backoff_max_ms: 100 } }
sink: { url: ${targetUrl} }
monitoring: { enabled: false }
`,
    );
  }, 60_000);

  afterAll(async () => {
    await source?.end();
    await target?.end();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  function cli(...args: string[]): { status: number | null; out: string; err: string } {
    const r = spawnSync(process.execPath, [CLI, ...args, '-c', configFile], { encoding: 'utf8' });
    return { status: r.status, out: r.stdout, err: r.stderr };
  }

  /** Rows in the dead-letter table; 0 until apply has created it. */
  async function deadLetters(): Promise<number> {
    try {
      return (await target.query<{ n: number }>('SELECT count(*)::int AS n FROM syncline.dead_letter')).rows[0]?.n ?? 0;
    } catch {
      return 0; // apply has not created the table yet
    }
  }

  it('one poison row in a batch of 1,000 does not block the other 999; its later change follows it', async () => {
    const metrics = new Metrics();
    const ctl = new AbortController();
    const running = runPipeline(loadConfigFile(configFile), 'run', process.env.DLQ_DEBUG ? createLogger('debug') : silentLogger(), ctl.signal, metrics);
    running.catch(() => undefined);
    await waitFor('slot active', async () => (await slotStreaming(source, 'syncline_dlq')));
    await source.query("INSERT INTO poison SELECT g, CASE WHEN g = 500 THEN 13 ELSE g * 2 END, 'n' || g FROM generate_series(1, 1000) g");
    await waitFor('the poison insert dead-lettered', async () => (await deadLetters()) === 1, 30_000);
    await source.query('UPDATE poison SET v = 14 WHERE id = 500'); // must not overtake the dead-lettered insert
    await source.query('UPDATE poison SET v = -1 WHERE id = 501');
    await waitFor('999 rows applied', async () => (await target.query('SELECT count(*)::int AS n FROM poison')).rows[0]?.n === 999, 30_000);
    await waitFor('both changes of row 500 dead-lettered', async () => (await deadLetters()) === 2, 30_000);
    await waitFor('row 501 updated', async () => (await target.query('SELECT v FROM poison WHERE id = 501')).rows[0]?.v === -1, 10_000);
    expect((await target.query('SELECT count(*)::int AS n FROM poison WHERE id = 500')).rows[0]?.n).toBe(0);
    await waitFor('sync_deadletter_count = 2', async () => (await metrics.registry.getSingleMetric('sync_deadletter_count')?.get())?.values[0]?.value === 2, 10_000);
    ctl.abort();
    await running;

    const list = cli('dlq', 'list', '--json');
    expect(list.status).toBe(0);
    const entries = JSON.parse(list.out) as { id: string; op: string; error_code: string; error: string; attempts: number; commit_lsn: string; stream_offset: string }[];
    expect(entries.map((e) => e.op)).toEqual(['INSERT', 'UPDATE']);
    expect(entries[0]?.error).toMatch(/no_thirteen/);
    expect(entries[0]?.error_code).toBe('SINK_23514');
    expect(entries[1]?.error_code).toBe('BLOCKED_BY_EARLIER');
    expect(entries[0]?.commit_lsn).toMatch(/^[0-9A-F]+\/[0-9A-F]+$/);
    const show = cli('dlq', 'show', entries[0]?.id ?? '', '--json');
    expect(JSON.parse(show.out).change).toMatchObject({ table: 'poison', op: 'INSERT', key: { id: '500' }, payload: { v: '13' } });
    expect(cli('dlq', 'list', '--table', 'other', '--json').out.trim()).toBe('[]');
    expect(JSON.parse(cli('dlq', 'list', '--error', 'no_thirteen', '--json').out)).toHaveLength(1);

    // Replaying before the fix fails again and keeps both (the update is held behind the insert).
    const early = cli('dlq', 'replay', '--json');
    expect(early.status).toBe(1);
    expect(JSON.parse(early.out)).toMatchObject({ replayed: 0, held: [entries[1]?.id] });

    // Fix the cause, replay: both leave the queue and the row ends as at the source.
    await target.query('ALTER TABLE poison DROP CONSTRAINT no_thirteen');
    const replay = cli('dlq', 'replay', '--json');
    expect(replay.status).toBe(0);
    expect(JSON.parse(replay.out)).toMatchObject({ replayed: 2, failed: [] });
    expect((await target.query('SELECT v FROM poison WHERE id = 500')).rows[0]?.v).toBe(14);
    expect(JSON.parse(cli('dlq', 'list', '--json').out)).toEqual([]);
  }, 120_000);

  it('purge needs a filter and removes what it matches', async () => {
    await target.query("INSERT INTO syncline.dead_letter (source, table_name, row_key, raw, error, error_code, attempts, stream_partition, stream_offset) VALUES ('s', 'public.poison', '[1]', 'garbage', 'not JSON', 'EVENT_MALFORMED', 1, 0, 123456)");
    expect(cli('dlq', 'purge').status).toBe(2);
    const purge = cli('dlq', 'purge', '--error', 'EVENT_MALFORMED', '--json');
    expect(purge.status).toBe(0);
    expect(JSON.parse(purge.out)).toEqual({ purged: 1 });
  });
});
