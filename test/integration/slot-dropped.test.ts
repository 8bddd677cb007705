import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runPipeline } from '../../src/api/run-pipeline.js';
import { sourceConnection } from '../../src/compose/source-connection.js';
import { loadConfigFile } from '../../src/config/load.js';
import { formatStatus } from '../../src/cli/commands/status.js';
import { runDoctor } from '../../src/doctor/doctor.js';
import { Metrics } from '../../src/metrics/metrics.js';
import { collectStatus } from '../../src/ops/status.js';
import { machinePg15, slotStreaming, sourceAndTarget, testLogger, uniqueName, waitFor } from '../helpers/postgres.js';

const SLOT = uniqueName('syncline_slotdrop');

/**
 * Acceptance pass 5: a slot that capture streamed from and that is gone (dropped by hand while
 * capture ran, or while it was stopped) was created again without a word, at the source's
 * current WAL, with an initial snapshot. The changes between the old slot's confirmed
 * position and the new slot were in no slot: the snapshot brought inserts and updates back,
 * but a row deleted meanwhile stayed at the target for good (with `source.snapshot: never`,
 * every change of the gap was lost). Capture now refuses, as for a lost slot, with the fix
 * (`syncline resync`, then `syncline repair`).
 */
describe('a replication slot dropped after capture streamed from it', () => {
  let dir: string;
  let source: pg.Client;
  let target: pg.Client;
  let urls: { sourceUrl: string; targetUrl: string };

  beforeAll(async () => {
    const server = await machinePg15();
    dir = await mkdtemp(path.join(os.tmpdir(), 'syncline-slotdrop-'));
    const pair = await sourceAndTarget(server, 'syncline_slotdrop');
    ({ source, target } = pair);
    urls = pair;
    for (const c of [source, target]) await c.query('CREATE TABLE t (id integer PRIMARY KEY, v text)');
    await source.query("INSERT INTO t SELECT g, 'v' FROM generate_series(1, 20) g");
  }, 60_000);

  afterAll(async () => {
    await source?.query('SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1 AND NOT active', [SLOT]).catch(() => undefined);
    await source?.end();
    await target?.end();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  async function config(): Promise<string> {
    const file = path.join(dir, 'sync.yaml');
    // A long restart backoff: the slot is dropped before capture's next start.
    await writeFile(
      file,
      `source:
  url: ${urls.sourceUrl}
  slots: [{ name: ${SLOT}, publication: syncline_slotdrop_pub, tables: [t] }]
stream: { path: ${path.join(dir, 'stream')}, partitions: 2 }
consumer: { group_id: slotdrop, retry: { backoff_base_ms: 3000, backoff_max_ms: 5000, jitter: false } }
sink: { url: ${urls.targetUrl} }
monitoring: { enabled: false }
`,
    );
    return file;
  }

  const count = async (): Promise<number> => (await target.query<{ n: number }>('SELECT count(*)::int AS n FROM t')).rows[0]?.n ?? -1;
  const slotExists = async (): Promise<boolean> => ((await source.query('SELECT 1 FROM pg_replication_slots WHERE slot_name = $1', [SLOT])).rowCount ?? 0) > 0;

  /** Ends the slot's walsender (waiting for it to exit) and drops the slot before capture starts again. */
  async function dropSlot(): Promise<void> {
    await source.query('SELECT pg_terminate_backend(active_pid, 10000) FROM pg_replication_slots WHERE slot_name = $1 AND active_pid IS NOT NULL', [SLOT]);
    await source.query('SELECT pg_drop_replication_slot($1)', [SLOT]);
  }

  it('while capture runs: capture stops with the fix instead of creating it again', async () => {
    const ctl = new AbortController();
    const running = runPipeline(loadConfigFile(await config()), 'run', await testLogger(), ctl.signal, new Metrics());
    const outcome = running.then(
      () => undefined,
      (err: unknown) => err as Error,
    );
    try {
      await waitFor('the first rows and a streaming slot', async () => (await count()) === 20 && (await slotStreaming(source, SLOT)), 60_000, 100);
      await source.query("INSERT INTO t VALUES (21, 'captured')");
      await waitFor('the change applied', async () => (await count()) === 21, 30_000, 100);
      await dropSlot();
      // In no slot: only a snapshot brings rows back, and it never removes one.
      await source.query('DELETE FROM t WHERE id = 1');
      await waitFor('capture to stop', async () => (await Promise.race([outcome, new Promise((r) => setTimeout(() => r('running'), 200))])) !== 'running', 30_000, 100);
      const err = await outcome;
      expect(err?.message).toMatch(/slot .* was dropped/);
      expect(err?.message).toMatch(/syncline resync/);
      expect(await slotExists()).toBe(false);
    } finally {
      ctl.abort();
      await running.catch(() => undefined);
    }
  }, 120_000);

  it('while capture was stopped: the next start refuses with the fix', async () => {
    // resync (as the fix says) makes a slot and queues the snapshots; forced: before the fix the first case left one.
    const { resync } = await import('../../src/ops/resync.js');
    await waitFor('slot released', async () => !(await slotStreaming(source, SLOT)), 10_000, 100);
    await resync(loadConfigFile(await config()), { force: true });
    const ctl = new AbortController();
    const first = runPipeline(loadConfigFile(await config()), 'run', await testLogger(), ctl.signal, new Metrics());
    first.catch(() => undefined);
    try {
      await waitFor('a streaming slot', () => slotStreaming(source, SLOT), 60_000, 100);
      await source.query("INSERT INTO t VALUES (22, 'captured')");
      await waitFor('the change applied', async () => (await target.query('SELECT 1 FROM t WHERE id = 22')).rowCount === 1, 30_000, 100);
    } finally {
      ctl.abort();
      await first;
    }
    await waitFor('slot released', async () => !(await slotStreaming(source, SLOT)), 10_000, 100);
    await dropSlot();
    await source.query('DELETE FROM t WHERE id = 2');
    const ctl2 = new AbortController();
    const again = runPipeline(loadConfigFile(await config()), 'run', await testLogger(), ctl2.signal, new Metrics());
    try {
      const err = await Promise.race([again.then(() => undefined, (e: unknown) => e as Error), new Promise<Error>((r) => setTimeout(() => r(new Error('still running after 20 s')), 20_000))]);
      expect(err?.message).toMatch(/slot .* was dropped/);
      expect(await slotExists()).toBe(false);
      // doctor says so too, instead of "does not exist yet; syncline will create it".
      const cfg = loadConfigFile(await config());
      const report = await runDoctor(cfg, sourceConnection(cfg));
      expect(report.checks.find((c) => c.name === `slot ${SLOT}`)).toMatchObject({ status: 'fail', fix: expect.stringMatching(/syncline resync/) });
      // And status, instead of "does not exist yet (capture creates it)" (red16).
      const status = await collectStatus(cfg);
      expect(status.slot).toMatchObject({ exists: false, dropped: true });
      expect(formatStatus(status)).toMatch(/slot\s+\S+: dropped after capture streamed from it[^\n]*syncline resync/);
    } finally {
      ctl2.abort();
      await again.catch(() => undefined);
    }
  }, 120_000);
});
