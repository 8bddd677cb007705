import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLI, ensureBuilt } from '../helpers/cli.js';
import { createAccounts, dropDatabases, dropSlot, rowsOf } from '../helpers/many-writers.js';
import { freePort, freshDatabase, machinePg15, PG15_URL, waitFor } from '../helpers/postgres.js';

const PID = process.pid;
const SIDES = ['a', 'b'].map((s) => `bidikill_${s}_${PID}`) as [string, string];
const ROWS = 'SELECT id, name, hits::text, updated_at::text FROM accounts ORDER BY id';

/**
 * Active-active with `syncline run` processes (PostgreSQL 15, embedded streams): both sides
 * update the same rows and their own while each direction is killed with SIGKILL and
 * restarted. Afterwards both databases are identical, every counter increment counts exactly
 * once (a change applied twice would add its difference twice), and nothing is written any
 * more once the workload stopped (no loop).
 */
describe('bidirectional under kill -9 (PostgreSQL 15, syncline run processes)', () => {
  let dir: string;
  const urls: string[] = [];
  const children: ChildProcess[] = [];
  const configs: string[] = [];

  beforeAll(async () => {
    ensureBuilt();
    const server = await machinePg15();
    for (const side of SIDES) {
      const url = await freshDatabase(server, `syncline_${side}`);
      await createAccounts(url, 60);
      urls.push(url);
    }
    dir = await mkdtemp(path.join(os.tmpdir(), 'syncline-bidikill-'));
    for (const [i, side] of SIDES.entries()) {
      const other = SIDES[1 - i] as string;
      const file = path.join(dir, `${side}.yaml`);
      await writeFile(
        file,
        `source:
  name: ${side}
  url: ${urls[i]}
  skip_origins: true
  snapshot: never
  heartbeat_interval_ms: 1000
  slots: [{ name: ${side}_slot, publication: ${side}_pub, tables: [accounts] }]
stream: { broker: embedded, path: ${path.join(dir, side)}, partitions: 3 }
consumer: { group_id: ${side}, batch_wait_ms: 5, retry: { backoff_base_ms: 50, backoff_max_ms: 500 } }
sink:
  url: ${urls[1 - i]}
  copy_threshold: 0
  origin: from_${side}
  local_source: ${other}
  conflict_strategy: last_write_wins
  lww_column: updated_at
  delta_columns: { accounts: [hits] }
dead_letter: { enabled: false }
monitoring: { port: ${await freePort()} }
`,
      );
      configs.push(file);
    }
  }, 60_000);

  afterAll(async () => {
    for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
    await new Promise((r) => setTimeout(r, 500));
    for (const [i, side] of SIDES.entries()) if (!process.env.SYNCLINE_KEEP_TEST_DIR) await dropSlot(urls[i] as string, side, SIDES.map((s) => `from_${s}`)).catch(() => undefined);
    if (!process.env.SYNCLINE_KEEP_TEST_DIR) await dropDatabases(PG15_URL, SIDES.map((s) => `syncline_${s}`)).catch(() => undefined);
    if (dir && !process.env.SYNCLINE_KEEP_TEST_DIR) await rm(dir, { recursive: true, force: true });
  }, 60_000);

  function start(i: number): ChildProcess {
    const log = createWriteStream(path.join(dir, `run-${i}-${children.length}.log`));
    const child = spawn(process.execPath, [CLI, 'run', '-c', configs[i] as string], { stdio: ['ignore', 'pipe', 'pipe'] });
    child.stdout?.pipe(log);
    child.stderr?.pipe(log);
    children.push(child);
    return child;
  }

  async function streaming(i: number): Promise<boolean> {
    return (await rowsOf(urls[i] as string, `SELECT 1 FROM pg_replication_slots s JOIN pg_stat_replication r ON r.pid = s.active_pid WHERE s.slot_name = '${SIDES[i]}_slot'`)) !== '[]';
  }

  it('converges with every increment counted once across kill -9 of either direction', async () => {
    const running = [start(0), start(1)];
    await waitFor('both directions streaming', async () => (await streaming(0)) && (await streaming(1)), 60_000, 200);

    let increments = 0;
    const side = async (i: number, own: number[]): Promise<void> => {
      const c = new pg.Client({ connectionString: urls[i] });
      await c.connect();
      try {
        for (let r = 0; r < 60; r++) {
          const ids = [...own.filter((id) => (id + r) % 2 === 0), ...[1, 2, 3, 4, 5, 6, 7, 8, 9, 10].filter((id) => (id + r + i) % 3 !== 0)];
          const res = await c.query('UPDATE accounts SET name = $1, hits = hits + 1, updated_at = clock_timestamp() WHERE id = ANY($2::int[])', [`${i}-${r}`, ids]);
          increments += res.rowCount ?? 0;
          await new Promise((resolve) => setTimeout(resolve, 25));
        }
      } finally {
        await c.end();
      }
    };
    const chaos = (async () => {
      for (const i of [0, 1, 0]) {
        await new Promise((r) => setTimeout(r, 500));
        running[i]?.kill('SIGKILL');
        await new Promise((r) => setTimeout(r, 300));
        running[i] = start(i);
      }
    })();
    await Promise.all([side(0, [11, 12, 13, 14, 15, 16, 17, 18, 19, 20]), side(1, [21, 22, 23, 24, 25, 26, 27, 28, 29, 30]), chaos]);

    await waitFor('both databases identical', async () => (await rowsOf(urls[0] as string, ROWS)) === (await rowsOf(urls[1] as string, ROWS)), 120_000, 500);
    const rows = JSON.parse(await rowsOf(urls[0] as string, ROWS)) as { hits: string }[];
    expect(rows.reduce((sum, r) => sum + Number(r.hits), 0)).toBe(increments);
    // Nothing is written any more: no change comes back around.
    const writes = `SELECT sum(xmin::text::bigint)::text AS x FROM accounts`;
    const before = [await rowsOf(urls[0] as string, writes), await rowsOf(urls[1] as string, writes)];
    await new Promise((r) => setTimeout(r, 3000));
    expect([await rowsOf(urls[0] as string, writes), await rowsOf(urls[1] as string, writes)]).toEqual(before);
    for (const c of running) c?.kill('SIGTERM');
  }, 240_000);
});
