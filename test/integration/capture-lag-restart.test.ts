import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runPipeline } from '../../src/api/run-pipeline.js';
import { parseConfig } from '../../src/config/load.js';
import { silentLogger } from '../../src/log/logger.js';
import { Metrics } from '../../src/metrics/metrics.js';
import { freshDatabase, machinePg15, slotStreaming, uniqueName, waitFor, withClient, type PgServer } from '../helpers/postgres.js';

const SLOT = uniqueName('syncline_lag_restart');
function sample(text: string, name: string): number | undefined {
  const m = new RegExp(`^${name} (\\S+)$`, 'm').exec(text);
  return m ? Number(m[1]) : undefined;
}

/**
 * A capture restarted (kill -9, a deploy) with a backlog written while none ran, and no
 * checkpoint since to date it: its first WAL sample put all of it at the start, so
 * sync_capture_lag_seconds read 0 and then counted up from the start (at most 2 s here,
 * where the oldest change not in the stream was 11 s old). The commit times of the
 * transactions capture receives date that WAL now: the lag reads the backlog's age.
 */
describe('sync_capture_lag_seconds after a restart with a backlog (PostgreSQL 15)', () => {
  let server: PgServer;
  let dir: string;
  let sourceUrl: string;
  let configText: string;
  beforeAll(async () => {
    server = await machinePg15();
    dir = await mkdtemp(path.join(os.tmpdir(), 'syncline-lag-restart-'));
    sourceUrl = await freshDatabase(server, 'syncline_lag_restart_src');
    await withClient(sourceUrl, (c) => c.query('CREATE TABLE items (id int PRIMARY KEY, v text)'));
    configText = `source:
  url: ${sourceUrl}
  slots: [{ name: ${SLOT}, publication: syncline_lag_restart_pub, tables: [items] }]
  snapshot: never
stream: { path: ${path.join(dir, 'stream')}, partitions: 2 }
consumer: { group_id: g }
sink: { url: ${sourceUrl} }
monitoring: { enabled: false }
`;
  }, 60_000);
  afterAll(async () => {
    await withClient(server.url('postgres'), (c) => c.query('SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1 AND NOT active', [SLOT]));
    if (dir) await rm(dir, { recursive: true, force: true });
  });
  const start = (m: Metrics): (() => Promise<void>) => {
    const ctl = new AbortController();
    const done = runPipeline(parseConfig(configText, {}), 'capture', silentLogger(), ctl.signal, m);
    done.catch(() => undefined);
    return async () => { ctl.abort(); await done.catch(() => undefined); };
  };
  it('reads the age of the backlog, not the time since the start', async () => {
    let stop = start(new Metrics());
    await waitFor('slot', () => withClient(sourceUrl, (c) => slotStreaming(c, SLOT)), 60_000, 50);
    await stop();
    // 16 transactions (each under logical_decoding_work_mem: not streamed), then nothing for
    // 6 s; capture needs seconds to publish them. (Until it has received the first, the lag
    // reads from the start: nothing dates that WAL yet, unless a checkpoint came after it.)
    await withClient(sourceUrl, async (c) => {
      for (let i = 0; i < 16; i++) await c.query("INSERT INTO items SELECT g, repeat('v', 100) FROM generate_series($1::int, $2::int) g", [i * 50_000 + 1, (i + 1) * 50_000]);
    });
    const committed = Date.now(); // every transaction committed before this
    await new Promise((r) => setTimeout(r, 6000));
    const m = new Metrics();
    const started = Date.now();
    stop = start(m);
    const seen: string[] = [];
    /** Readings ahead of the time since the start by the backlog's age: not counting from the start. */
    let dated = 0;
    const { rows } = await withClient(sourceUrl, (c) => c.query<{ lsn: string }>('SELECT pg_current_wal_lsn()::text AS lsn'));
    await waitFor('caught up', async () => {
      const v = sample(await m.registry.metrics(), 'sync_capture_lag_seconds');
      const since = (Date.now() - started) / 1000;
      seen.push(`${since.toFixed(1)}:${v}`);
      // The transactions not yet in the stream committed before `committed`, 6 s before the start.
      if (v !== undefined && v >= since + (started - committed) / 1000 - 1.5) dated++;
      return withClient(sourceUrl, async (c) => (await c.query('SELECT 1 FROM pg_replication_slots WHERE slot_name = $1 AND confirmed_flush_lsn >= $2::pg_lsn', [SLOT, rows[0]?.lsn])).rowCount === 1);
    }, 180_000, 250);
    await stop();
    // Before, it counted up from the start (0, 1, 2, ...: never ahead of it).
    expect(dated, seen.join(' ')).toBeGreaterThan(0);
  }, 300_000);
});
