/**
 * Red team 2: partitions attached to a published partitioned table mid-stream. ATTACH
 * PARTITION makes the partition's rows rows of the table without a change in the WAL, so the
 * stream never carries them; before, the target lacked them silently (`syncline run` on
 * PostgreSQL 15: verify named the 400 rows of an attached partition missing while every
 * later change flowed). Capture now compares the table's partitions with those it recorded at
 * every start and heartbeat and queues a snapshot of the table when one appeared.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { runPipeline } from '../../src/api/run-pipeline.js';
import { loadConfigFile } from '../../src/config/load.js';
import { Metrics } from '../../src/metrics/metrics.js';
import { rowDiff } from '../helpers/compare-rows.js';
import { machinePg15, slotStreaming, sourceAndTarget, testLogger, uniqueName, waitFor } from '../helpers/postgres.js';

const open: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const close of open.splice(0)) await close();
});

describe('red team 2: partitions attached mid-stream (PostgreSQL 15)', () => {
  it('the rows of a partition attached while streaming (and of one attached while capture was down) reach the target', async () => {
    const prefix = 'rt2_part';
    const server = await machinePg15();
    const dir = await mkdtemp(path.join(os.tmpdir(), `${prefix}-`));
    const slot = uniqueName(prefix);
    const { source, target, sourceUrl, targetUrl } = await sourceAndTarget(server, prefix);
    await source.query(`CREATE TABLE meas (id int, region int, v text, PRIMARY KEY (id, region)) PARTITION BY LIST (region);
      CREATE TABLE meas_1 PARTITION OF meas FOR VALUES IN (1);
      CREATE TABLE meas_2 PARTITION OF meas FOR VALUES IN (2);
      INSERT INTO meas SELECT g, 1 + g % 2, 'v' || g FROM generate_series(1, 200) g;`);
    await target.query('CREATE TABLE meas (id int, region int, v text, PRIMARY KEY (id, region))');
    const configFile = path.join(dir, 'sync.yaml');
    await writeFile(
      configFile,
      `source:
  url: ${sourceUrl}
  heartbeat_interval_ms: 300
  slots: [{ name: ${slot}, publication: ${prefix}_pub, tables: [meas] }]
stream: { path: ${path.join(dir, 'stream')}, partitions: 4 }
consumer: { group_id: rt, retry: { backoff_base_ms: 10, backoff_max_ms: 100 } }
sink: { url: ${targetUrl} }
monitoring: { enabled: false }
`,
    );
    let ctl = new AbortController();
    // An object, not the promise itself: an async function would wait for a returned promise.
    const start = async (): Promise<{ done: Promise<void> }> => {
      ctl = new AbortController();
      const running = runPipeline(loadConfigFile(configFile), 'run', await testLogger(), ctl.signal, new Metrics());
      let failure: unknown;
      running.catch((err: unknown) => (failure = err));
      await waitFor('slot streaming', async () => failure !== undefined || (await slotStreaming(source, slot)), 30_000);
      if (failure) throw failure;
      return { done: running };
    };
    let running = await start();
    open.push(async () => {
      ctl.abort();
      await running.done.catch(() => undefined);
      await source.query('SELECT pg_drop_replication_slot($1) FROM pg_replication_slots WHERE slot_name = $1 AND NOT active', [slot]).catch(() => undefined);
      await source.end();
      await target.end();
      await rm(dir, { recursive: true, force: true });
    });
    let last: Awaited<ReturnType<typeof rowDiff>> | undefined;
    const converges = (what: string): Promise<void> =>
      waitFor(
        what,
        async () => {
          last = await rowDiff(source, target, 'meas', 5);
          return last.missing.length === 0 && last.extra.length === 0;
        },
        30_000,
        200,
        () => JSON.stringify(last),
      );
    await converges('initial snapshot');

    await source.query(`CREATE TABLE meas_3 (id int, region int, v text, PRIMARY KEY (id, region));
      INSERT INTO meas_3 SELECT g, 3, 'three' || g FROM generate_series(1, 300) g;
      ALTER TABLE meas ATTACH PARTITION meas_3 FOR VALUES IN (3);
      INSERT INTO meas VALUES (1000, 3, 'after the attach');
      UPDATE meas SET v = 'updated' WHERE id = 7 AND region = 3`);
    await converges('rows of the partition attached while streaming');
    expect(Number((await target.query("SELECT count(*) AS n FROM meas WHERE region = 3")).rows[0].n)).toBe(301);

    ctl.abort();
    await running.done.catch(() => undefined);
    await source.query(`CREATE TABLE meas_4 (id int, region int, v text, PRIMARY KEY (id, region));
      INSERT INTO meas_4 SELECT g, 4, 'four' || g FROM generate_series(1, 150) g;
      ALTER TABLE meas ATTACH PARTITION meas_4 FOR VALUES IN (4)`);
    running = await start();
    await converges('rows of the partition attached while capture was down');
    expect(Number((await target.query("SELECT count(*) AS n FROM meas WHERE region = 4")).rows[0].n)).toBe(150);
  }, 120_000);
});
