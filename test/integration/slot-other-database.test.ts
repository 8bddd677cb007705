import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runPipeline } from '../../src/api/run-pipeline.js';
import { loadConfigFile } from '../../src/config/load.js';
import { Metrics } from '../../src/metrics/metrics.js';
import { resync } from '../../src/ops/resync.js';
import { machinePg15, slotStreaming, sourceAndTarget, testLogger, uniqueName, waitFor } from '../helpers/postgres.js';

const SLOT = uniqueName('syncline_slotother');

/**
 * Slot names are the server's, not a database's: a slot capture streamed from that is gone
 * from its database while a slot of that name exists in another one (another pipeline took
 * the name) is a name clash. `syncline run` said it was dropped and gave resync as the fix,
 * and `syncline resync` then failed with the server's bare 'replication slot "x" already
 * exists'; doctor alone said what it is (exists in another database). Found by red16.
 */
describe('a slot capture streamed from, gone from its database, its name taken in another', () => {
  let dir: string;
  let source: pg.Client;
  let target: pg.Client;
  let file: string;

  beforeAll(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'syncline-slotother-'));
    const pair = await sourceAndTarget(await machinePg15(), 'syncline_slotother');
    ({ source, target } = pair);
    for (const c of [source, target]) await c.query('CREATE TABLE t (id integer PRIMARY KEY, v text)');
    file = path.join(dir, 'sync.yaml');
    await writeFile(
      file,
      `source:
  url: ${pair.sourceUrl}
  slots: [{ name: ${SLOT}, publication: syncline_slotother_pub, tables: [t] }]
stream: { path: ${path.join(dir, 'stream')}, partitions: 1 }
consumer: { group_id: slotother }
sink: { url: ${pair.targetUrl} }
monitoring: { enabled: false }
`,
    );
    const ctl = new AbortController();
    const first = runPipeline(loadConfigFile(file), 'run', await testLogger(), ctl.signal, new Metrics());
    first.catch(() => undefined);
    try {
      await waitFor('a streaming slot', () => slotStreaming(source, SLOT), 60_000, 100);
      await source.query("INSERT INTO t VALUES (1, 'captured')");
      await waitFor('the change applied', async () => (await target.query('SELECT 1 FROM t WHERE id = 1')).rowCount === 1, 30_000, 100);
    } finally {
      ctl.abort();
      await first.catch(() => undefined);
    }
    await waitFor('slot released', async () => !(await slotStreaming(source, SLOT)), 10_000, 100);
    await source.query('SELECT pg_drop_replication_slot($1)', [SLOT]);
    // Another pipeline, on the target's database here, takes the name.
    await target.query("SELECT pg_create_logical_replication_slot($1, 'pgoutput')", [SLOT]);
  }, 120_000);

  afterAll(async () => {
    for (const c of [source, target]) await c?.query('SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1 AND NOT active AND database = current_database()', [SLOT]).catch(() => undefined);
    await source?.end();
    await target?.end();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('resync refuses with the name clash and its fix, not the server\'s bare error', async () => {
    const err = await resync(loadConfigFile(file)).then(() => undefined, (e: unknown) => e as Error & { fix?: string });
    expect(err?.message).toMatch(/exists in another database/);
  });

  it('run says the name is taken in another database, not that the slot was dropped', async () => {
    const ctl = new AbortController();
    const again = runPipeline(loadConfigFile(file), 'run', await testLogger(), ctl.signal, new Metrics());
    try {
      const err = await Promise.race([again.then(() => undefined, (e: unknown) => e as Error), new Promise<Error>((r) => setTimeout(() => r(new Error('still running after 20 s')), 20_000))]);
      expect(err?.message).toMatch(/exists in another database/);
    } finally {
      ctl.abort();
      await again.catch(() => undefined);
    }
  });
});
