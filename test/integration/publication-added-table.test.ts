import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runPipeline } from '../../src/api/run-pipeline.js';
import { loadConfigFile } from '../../src/config/load.js';
import { Metrics } from '../../src/metrics/metrics.js';
import { compareTable } from '../../src/verify/compare.js';
import { machinePg15, testLogger, waitFor, slotStreaming, sourceAndTarget, uniqueName } from '../helpers/postgres.js';

const SLOT = uniqueName('syncline_addtable');

/**
 * A table added to `source.slots[].tables` after the slot was made: capture adds it to the
 * publication at its next start, and the slot sends its changes from then on. Its rows from
 * before used to be left out without a word (verify found them missing); with
 * `source.snapshot: initial` they are read by a snapshot.
 */
describe('a table added to the configured tables of an existing slot', () => {
  let dir: string;
  let source: pg.Client;
  let target: pg.Client;
  let urls: { sourceUrl: string; targetUrl: string };

  beforeAll(async () => {
    const server = await machinePg15();
    dir = await mkdtemp(path.join(os.tmpdir(), 'syncline-addtable-'));
    const pair = await sourceAndTarget(server, 'syncline_addtable');
    ({ source, target } = pair);
    urls = pair;
    for (const c of [source, target]) await c.query('CREATE TABLE a (id integer PRIMARY KEY, v text); CREATE TABLE b (id integer PRIMARY KEY, v text)');
    await source.query("INSERT INTO a SELECT g, 'a' FROM generate_series(1, 50) g; INSERT INTO b SELECT g, 'b' FROM generate_series(1, 70) g");
  }, 60_000);

  afterAll(async () => {
    await source?.query('SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1 AND NOT active', [SLOT]).catch(() => undefined);
    await source?.end();
    await target?.end();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  async function config(tables: string): Promise<string> {
    const file = path.join(dir, 'sync.yaml');
    await writeFile(
      file,
      `source:
  url: ${urls.sourceUrl}
  slots: [{ name: ${SLOT}, publication: syncline_addtable_pub, tables: [${tables}] }]
stream: { path: ${path.join(dir, 'stream')}, partitions: 2 }
consumer: { group_id: addtable }
sink: { url: ${urls.targetUrl} }
monitoring: { enabled: false }
`,
    );
    return file;
  }

  async function runUntil(file: string, done: () => Promise<boolean>): Promise<void> {
    const ctl = new AbortController();
    const running = runPipeline(loadConfigFile(file), 'run', await testLogger(), ctl.signal, new Metrics());
    running.catch(() => undefined);
    try {
      await waitFor('the pipeline', done, 60_000, 100);
    } finally {
      ctl.abort();
      await running;
    }
  }

  const count = async (t: string): Promise<number> => (await target.query(`SELECT count(*)::int AS n FROM ${t}`)).rows[0]?.n;

  it('reads its existing rows by a snapshot at the next start', async () => {
    await runUntil(await config('a'), async () => (await slotStreaming(source, SLOT)) && (await count('a')) === 50);
    // Written while b is not published: in no change the slot sends.
    await source.query("INSERT INTO b VALUES (1001, 'while not published')");
    await runUntil(await config('a, b'), async () => {
      if (await slotStreaming(source, SLOT)) await source.query("INSERT INTO b VALUES (1002, 'published') ON CONFLICT DO NOTHING");
      return (await count('b')) === 72;
    });
    expect((await compareTable(source, target, { schema: 'public', table: 'b' })).differing).toBe(0);
    expect((await compareTable(source, target, { schema: 'public', table: 'a' })).differing).toBe(0);
  }, 180_000);
});
