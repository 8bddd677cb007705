import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runPipeline } from '../../src/api/run-pipeline.js';
import { loadConfigFile } from '../../src/config/load.js';
import { Metrics } from '../../src/metrics/metrics.js';
import { machinePg15, slotStreaming, sourceAndTarget, testLogger, uniqueName, waitFor } from '../helpers/postgres.js';

const SLOT = uniqueName('syncline_pubremoved');
const PUB = 'syncline_pubremoved_pub';

/**
 * Acceptance pass 5: `ALTER PUBLICATION ... DROP TABLE` of a configured table while capture
 * ran. The slot stopped sending the table's changes, and nothing said so: its updates and
 * deletes never reached the target while the process ran on, healthy. (The next start added
 * it back with a snapshot, which never removes the rows deleted meanwhile.) Capture now checks
 * the configured tables are still published at each heartbeat and stops with the fix.
 */
describe('a configured table removed from the publication while capture runs', () => {
  let dir: string;
  let source: pg.Client;
  let target: pg.Client;
  let urls: { sourceUrl: string; targetUrl: string };

  beforeAll(async () => {
    const server = await machinePg15();
    dir = await mkdtemp(path.join(os.tmpdir(), 'syncline-pubremoved-'));
    const pair = await sourceAndTarget(server, 'syncline_pubremoved');
    ({ source, target } = pair);
    urls = pair;
    for (const c of [source, target]) await c.query('CREATE TABLE a (id integer PRIMARY KEY, v text); CREATE TABLE b (id integer PRIMARY KEY, v text)');
    await source.query("INSERT INTO a SELECT g, 'a' FROM generate_series(1, 10) g; INSERT INTO b SELECT g, 'b' FROM generate_series(1, 10) g");
  }, 60_000);

  afterAll(async () => {
    await source?.query('SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1 AND NOT active', [SLOT]).catch(() => undefined);
    await source?.end();
    await target?.end();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('stops capture with the fix instead of dropping its changes silently', async () => {
    const file = path.join(dir, 'sync.yaml');
    await writeFile(
      file,
      `source:
  url: ${urls.sourceUrl}
  heartbeat_interval_ms: 500
  slots: [{ name: ${SLOT}, publication: ${PUB}, tables: [a, b] }]
stream: { path: ${path.join(dir, 'stream')}, partitions: 2 }
consumer: { group_id: pubremoved }
sink: { url: ${urls.targetUrl} }
monitoring: { enabled: false }
`,
    );
    const ctl = new AbortController();
    const running = runPipeline(loadConfigFile(file), 'run', await testLogger(), ctl.signal, new Metrics());
    const outcome = running.then(
      () => undefined,
      (err: unknown) => err as Error,
    );
    const count = async (t: string): Promise<number> => (await target.query<{ n: number }>(`SELECT count(*)::int AS n FROM ${t}`)).rows[0]?.n ?? -1;
    try {
      await waitFor('the snapshot applied and a streaming slot', async () => (await count('a')) === 10 && (await count('b')) === 10 && (await slotStreaming(source, SLOT)), 60_000, 100);
      await source.query(`ALTER PUBLICATION ${PUB} DROP TABLE b`);
      await source.query('DELETE FROM b WHERE id = 1');
      await source.query("INSERT INTO a VALUES (11, 'still published')");
      const settled = await Promise.race([outcome, new Promise<string>((r) => setTimeout(() => r('still running after 15 s'), 15_000))]);
      expect(settled).toBeInstanceOf(Error);
      const err = settled as Error;
      expect(err.message).toMatch(/public\.b was removed from publication/);
      expect(err.message).toMatch(/syncline repair/);
    } finally {
      ctl.abort();
      await running.catch(() => undefined);
    }
  }, 120_000);

  it('a publication dropped while capture runs: the error names the recovery, and following it brings every row', async () => {
    const slot = `${SLOT}_2`;
    const pub = `${PUB}_2`;
    const file = path.join(dir, 'sync2.yaml');
    await writeFile(
      file,
      `source:
  url: ${urls.sourceUrl}
  slots: [{ name: ${slot}, publication: ${pub}, tables: [a] }]
stream: { path: ${path.join(dir, 'stream2')}, partitions: 2 }
consumer: { group_id: pubdropped }
sink: { url: ${urls.targetUrl} }
monitoring: { enabled: false }
`,
    );
    const start = async (): Promise<Error | undefined> => {
      const ctl = new AbortController();
      const running = runPipeline(loadConfigFile(file), 'run', await testLogger(), ctl.signal, new Metrics());
      try {
        const settled = await Promise.race([running.then(() => undefined, (err: unknown) => err as Error), new Promise<Error>((r) => setTimeout(() => r(new Error('still running after 30 s')), 30_000))]);
        return settled;
      } finally {
        ctl.abort();
        await running.catch(() => undefined);
      }
    };
    try {
      const first = start();
      await waitFor('a streaming slot', () => slotStreaming(source, slot), 60_000, 100);
      await source.query(`DROP PUBLICATION ${pub}`);
      await source.query("INSERT INTO a VALUES (100, 'after the drop')");
      // The walsender fails on the first change after the drop, with "publication ... does not exist".
      const failure = (await first)?.message;
      expect(failure).toMatch(/syncline resync --force/);
      // The fix, followed while the publication is still gone, with a writer committing between
      // the new slot and the next start: resync makes the publication before the slot (a slot
      // made first cannot decode the changes before the publication exists: the same failure).
      const { resync } = await import('../../src/ops/resync.js');
      await resync(loadConfigFile(file), { force: true });
      await source.query("INSERT INTO a VALUES (101, 'between resync and run')");
      const ctl = new AbortController();
      const running = runPipeline(loadConfigFile(file), 'run', await testLogger(), ctl.signal, new Metrics());
      running.catch(() => undefined);
      try {
        await waitFor('rows 100 and 101 at the target', async () => Number((await target.query('SELECT count(*) AS n FROM a WHERE id IN (100, 101)')).rows[0]?.n) === 2, 60_000, 250);
      } finally {
        ctl.abort();
        await running.catch(() => undefined);
      }
    } finally {
      await source.query('SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1 AND NOT active', [slot]).catch(() => undefined);
    }
  }, 120_000);
});
