import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { waitForEqualTables } from '../helpers/compare-rows.js';
import { freePort, freshDatabase, machinePg15, slotStreaming, waitFor, type PgServer, uniqueName } from '../helpers/postgres.js';
import { doubleApplied, installApplyAudit, Workload, WORKLOAD_DDL, WORKLOAD_TABLES } from '../helpers/workload.js';

const CLI = path.resolve('dist/cli/main.js');

/**
 * The promise of DESIGN.md: kill -9 the pipeline at arbitrary moments under load, restart
 * it, and the target ends equal to the source with no change applied twice.
 */
for (const consistency of ['eventual', 'transactional'] as const) {
const name = consistency === 'eventual' ? 'syncline_e2e' : 'syncline_e2e_tx';
const slot = uniqueName(name);
describe(`pipeline survives kill -9 (PostgreSQL 15 -> embedded stream -> PostgreSQL 15, sink.consistency: ${consistency})`, () => {
  let server: PgServer;
  let dir: string;
  let sourceUrl: string;
  let targetUrl: string;
  let configFile: string;
  const children: ChildProcess[] = [];

  beforeAll(async () => {
    server = await machinePg15();
    dir = await mkdtemp(path.join(os.tmpdir(), 'syncline-e2e-'));
    sourceUrl = await freshDatabase(server, `${name}_source`);
    targetUrl = await freshDatabase(server, `${name}_target`);
    for (const url of [sourceUrl, targetUrl]) {
      const c = new pg.Client({ connectionString: url });
      await c.connect();
      await c.query(WORKLOAD_DDL);
      if (url === targetUrl) await installApplyAudit(c);
      await c.end();
    }
    configFile = path.join(dir, 'sync.yaml');
    await writeFile(
      configFile,
      `source:
  url: ${sourceUrl}
  slots:
    - name: ${slot}
      publication: ${name}_pub
      tables: [${WORKLOAD_TABLES.map((t) => `'${t}'`).join(', ')}]
stream:
  broker: embedded
  path: ${path.join(dir, 'stream')}
  partitions: 3
  batch_size: 500
consumer:
  group_id: e2e
  batch_size: 300
  retry: { backoff_base_ms: 50, backoff_max_ms: 500 }
sink:
  url: ${targetUrl}
  consistency: ${consistency}
monitoring:
  port: ${await freePort()}
`,
    );
  });

  afterAll(async () => {
    for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
    await rm(dir, { recursive: true, force: true });
  });

  function start(n: number): ChildProcess {
    const log = createWriteStream(path.join(dir, `run-${n}.log`));
    const child = spawn(process.execPath, [CLI, 'run', '-c', configFile], { stdio: ['ignore', 'pipe', 'pipe'] });
    child.stdout?.pipe(log);
    child.stderr?.pipe(log);
    children.push(child);
    return child;
  }

  async function slotActive(): Promise<boolean> {
    const c = new pg.Client({ connectionString: sourceUrl });
    await c.connect();
    try {
      return await slotStreaming(c, slot);
    } finally {
      await c.end();
    }
  }

  it('applies 10,000+ changes exactly once across two kill -9 restarts', async () => {
    const source = new pg.Client({ connectionString: sourceUrl });
    const target = new pg.Client({ connectionString: targetUrl });
    await source.connect();
    await target.connect();
    try {
      let child = start(0);
      await waitFor('the slot to become active', slotActive, 30_000);
      const workload = new Workload(source);
      await workload.transaction();

      const kills = [3500, 7000];
      let restarts = 0;
      while (workload.changes < 11_000) {
        await workload.transaction();
        if (kills.length > 0 && workload.changes >= (kills[0] as number)) {
          kills.shift();
          child.kill('SIGKILL');
          await new Promise((r) => child.once('exit', r));
          // Keep writing while the pipeline is down: those changes wait in the slot.
          for (let i = 0; i < 50; i++) await workload.transaction();
          child = start(++restarts);
        }
      }
      expect(restarts).toBe(2);

      await waitForEqualTables(source, target, WORKLOAD_TABLES);
      const { rows } = await source.query('SELECT count(*)::int AS n FROM items');
      expect(rows[0]?.n).toBeGreaterThan(1000);
      expect(await doubleApplied(target)).toEqual([]);

      // SIGTERM drains and exits cleanly.
      const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
      child.kill('SIGTERM');
      expect(await exited).toBe(0);
    } finally {
      await source.end();
      await target.end();
    }
  }, 300_000);
});
}
