import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseTableName } from '../../src/core/sql.js';
import { compareTable } from '../../src/verify/compare.js';
import { freePort, freshDatabase, machinePg15, waitFor, uniqueName } from '../helpers/postgres.js';
import { doubleApplied, installApplyAudit, Workload, WORKLOAD_DDL, WORKLOAD_TABLES } from '../helpers/workload.js';

const SLOT = uniqueName('syncline_ha');

const CLI = path.resolve('dist/cli/main.js');

describe('capture high availability: two captures on one slot, kill -9 of the leader', () => {
  let dir: string;
  let sourceUrl: string;
  let targetUrl: string;
  const children: ChildProcess[] = [];

  beforeAll(async () => {
    const server = await machinePg15();
    dir = await mkdtemp(path.join(os.tmpdir(), 'syncline-ha-'));
    sourceUrl = await freshDatabase(server, 'syncline_ha_source');
    targetUrl = await freshDatabase(server, 'syncline_ha_target');
    for (const url of [sourceUrl, targetUrl]) {
      const c = new pg.Client({ connectionString: url });
      await c.connect();
      await c.query(WORKLOAD_DDL);
      if (url === targetUrl) await installApplyAudit(c);
      await c.end();
    }
  });

  afterAll(async () => {
    for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  async function configFor(name: string): Promise<string> {
    const file = path.join(dir, `${name}.yaml`);
    await writeFile(
      file,
      `source:
  url: ${sourceUrl}
  slots: [{ name: ${SLOT}, publication: syncline_ha_pub, tables: [${WORKLOAD_TABLES.map((t) => `'${t}'`).join(', ')}] }]
stream: { path: ${path.join(dir, 'stream')}, partitions: 3 }
consumer: { group_id: ha, retry: { backoff_base_ms: 50, backoff_max_ms: 500 } }
sink: { url: ${targetUrl} }
monitoring: { port: ${await freePort()} }
`,
    );
    return file;
  }

  async function start(role: string, name: string): Promise<ChildProcess> {
    const logFile = path.join(dir, `${name}.log`);
    const child = spawn(process.execPath, [CLI, role, '-c', await configFor(name)], { stdio: ['ignore', 'pipe', 'pipe'] });
    const log = createWriteStream(logFile);
    child.stdout?.pipe(log);
    child.stderr?.pipe(log);
    children.push(child);
    return child;
  }

  async function activePid(c: pg.Client): Promise<number | null> {
    const { rows } = await c.query('SELECT active_pid FROM pg_replication_slots WHERE slot_name = $1', [SLOT]);
    return (rows[0]?.active_pid as number | null) ?? null;
  }

  it('the standby takes over within seconds; nothing lost, nothing applied twice', async () => {
    const source = new pg.Client({ connectionString: sourceUrl });
    const target = new pg.Client({ connectionString: targetUrl });
    await source.connect();
    await target.connect();
    try {
      const leader = await start('capture', 'capture-a');
      await waitFor('the leader to stream the slot', async () => (await activePid(source)) !== null, 30_000);
      const standby = await start('capture', 'capture-b');
      await start('apply', 'apply');
      await waitFor('the standby to wait', async () => (await readFile(path.join(dir, 'capture-b.log'), 'utf8')).includes('standby'), 30_000);
      const w = new Workload(source);
      await w.transaction();
      while (w.changes < 3000) await w.transaction();

      const walsenderBefore = await activePid(source);
      leader.kill('SIGKILL');
      const killedAt = Date.now();
      // Writes continue while the leader is gone.
      while (w.changes < 6000) await w.transaction();
      await waitFor('the standby to stream the slot', async () => {
        const pid = await activePid(source);
        return pid !== null && pid !== walsenderBefore;
      }, 60_000, 100);
      const takeoverMs = Date.now() - killedAt;
      expect(takeoverMs).toBeLessThan(30_000);
      expect(standby.exitCode).toBeNull();

      const tables = WORKLOAD_TABLES.map((t) => parseTableName(t));
      await waitFor('target equals source', async () => (await Promise.all(tables.map((t) => compareTable(source, target, t)))).every((d) => d.differing === 0 && d.sourceRows === d.targetRows), 120_000, 500);
      expect(await doubleApplied(target)).toEqual([]);
      process.stdout.write(`capture failover: standby streaming ${takeoverMs} ms after kill -9 of the leader\n`);
    } finally {
      await source.end();
      await target.end();
    }
  }, 240_000);
});
