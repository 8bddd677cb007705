/**
 * `syncline status` with each sink that is not postgres: the redis, mysql and sqlite sinks
 * store their stream positions with the rows (as postgres does), and status shows them; the
 * webhook sink stores none, and status says so rather than printing `-`. Status writes
 * nothing: before the first run no positions hash, table or SQLite file appears.
 */
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import Database from 'better-sqlite3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runPipeline } from '../../src/api/run-pipeline.js';
import { parseConfig } from '../../src/config/load.js';
import { silentLogger } from '../../src/log/logger.js';
import { Metrics } from '../../src/metrics/metrics.js';
import { collectStatus, type StatusReport } from '../../src/ops/status.js';
import { CLI, ensureBuilt, ROOT } from '../helpers/cli.js';
import { freshMysqlDatabase, mysqlRows, type MysqlTestDatabase } from '../helpers/mysql.js';
import { freshDatabase, machinePg15, slotStreaming, uniqueName, waitFor, withClient } from '../helpers/postgres.js';
import { dropKeys, REDIS_URL, requireRedis } from '../helpers/redis.js';

const ROWS = 25;

interface Target {
  sink: string;
  /** Whether status should find the sink's own positions. */
  stores: boolean;
  /** Something status must not have created before the first run (a key, a table, a file). */
  untouched(): Promise<boolean>;
  close(): Promise<void>;
}

async function redisTarget(prefix: string): Promise<Target> {
  const client = await requireRedis();
  await dropKeys(client, `${prefix}:`);
  return {
    sink: `{ type: redis, url: '${REDIS_URL}', state_schema: ${prefix} }`,
    stores: true,
    untouched: async () => (await client.exists(`${prefix}:positions:status_sinks`)) === 0,
    async close() {
      await dropKeys(client, `${prefix}:`);
      client.disconnect();
    },
  };
}

async function mysqlTarget(name: string): Promise<Target> {
  const db: MysqlTestDatabase = await freshMysqlDatabase(name);
  await db.admin.query('CREATE TABLE items (id INT PRIMARY KEY, v TEXT)');
  return {
    sink: `{ type: mysql, url: '${db.url}' }`,
    stores: true,
    untouched: async () => (await mysqlRows(db.admin, "SELECT 1 FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'syncline_positions'")).length === 0,
    close: () => db.drop(),
  };
}

async function sqliteTarget(dir: string): Promise<Target> {
  const file = path.join(dir, 'target.db');
  return {
    sink: `{ type: sqlite, url: '${file}' }`,
    stores: true,
    // The file appears with the table, made here after the first status: status must not create it.
    untouched: async () => {
      const fresh = !existsSync(file);
      const db = new Database(file);
      db.exec('CREATE TABLE IF NOT EXISTS items (id INTEGER PRIMARY KEY, v TEXT)');
      db.close();
      return fresh;
    },
    close: async () => undefined,
  };
}

async function webhookTarget(): Promise<Target> {
  const server = http.createServer((req, res) => {
    req.resume();
    req.on('end', () => res.writeHead(200).end('ok'));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    sink: `{ type: webhook, url: 'http://127.0.0.1:${(server.address() as AddressInfo).port}/hook' }`,
    stores: false,
    untouched: async () => true,
    async close() {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}

function statusCli(configFile: string, json: boolean): { status: number | null; stdout: string } {
  const r = spawnSync(process.execPath, [CLI, 'status', '-c', configFile, ...(json ? ['--json'] : [])], { cwd: ROOT, encoding: 'utf8', timeout: 60_000 });
  return { status: r.status, stdout: r.stdout };
}

for (const kind of ['redis', 'mysql', 'sqlite', 'webhook'] as const) {
  describe(`syncline status with a ${kind} sink`, () => {
    const slot = uniqueName(`syncline_status_${kind}`);
    let dir: string;
    let sourceUrl: string;
    let target: Target;
    let configText: string;
    let configFile: string;

    beforeAll(async () => {
      ensureBuilt();
      dir = await mkdtemp(path.join(os.tmpdir(), `syncline-status-${kind}-`));
      sourceUrl = await freshDatabase(await machinePg15(), `syncline_status_${kind}_src`);
      await withClient(sourceUrl, (c) => c.query('CREATE TABLE items (id int PRIMARY KEY, v text)'));
      target =
        kind === 'redis' ? await redisTarget(uniqueName('syncline_status')) : kind === 'mysql' ? await mysqlTarget(uniqueName('syncline_status')) : kind === 'sqlite' ? await sqliteTarget(dir) : await webhookTarget();
      configText = `source:
  url: ${sourceUrl}
  slots: [{ name: ${slot}, publication: syncline_status_${kind}_pub, tables: [items] }]
  snapshot: never
stream: { path: ${path.join(dir, 'stream')}, partitions: 3 }
consumer: { group_id: status_sinks }
sink: ${target.sink}
dead_letter: { url: '${sourceUrl}' }
monitoring: { enabled: false }
`;
      configFile = path.join(dir, 'sync.yaml');
      await writeFile(configFile, configText);
    }, 120_000);

    afterAll(async () => {
      await withClient(sourceUrl, (c) => c.query('SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1 AND NOT active', [slot])).catch(() => undefined);
      await target?.close();
      if (dir) await rm(dir, { recursive: true, force: true });
    });

    it(`shows the positions the ${kind} sink stored${kind === 'webhook' ? ' (none: it says so)' : ''}, and writes nothing`, async () => {
      const before = await collectStatus(parseConfig(configText, {}));
      expect(before.consumer.sinkPositions).toBe(target.stores ? 'none' : 'not stored by this sink');
      expect(await target.untouched()).toBe(true);

      const metrics = new Metrics();
      const ctl = new AbortController();
      const running = runPipeline(parseConfig(configText, {}), 'run', silentLogger(), ctl.signal, metrics);
      running.catch(() => undefined);
      try {
        await waitFor('slot active', () => withClient(sourceUrl, (c) => slotStreaming(c, slot)), 60_000);
        await withClient(sourceUrl, (c) => c.query('INSERT INTO items SELECT g, md5(g::text) FROM generate_series(1, $1::int) g', [ROWS]));
        await waitFor(`${ROWS} applied`, async () => ((await metrics.registry.getSingleMetric('sync_events_applied_total')?.get())?.values ?? []).reduce((n, v) => n + v.value, 0) === ROWS, 60_000, 100);
      } finally {
        ctl.abort();
        await running;
      }

      const report = await collectStatus(parseConfig(configText, {}));
      expect(report.stream.partitions.reduce((n, p) => n + p.end, 0)).toBe(ROWS);
      expect(report.stream.recordsBehind).toBe(0);
      if (target.stores) {
        expect(report.consumer).toEqual({ group: 'status_sinks', sinkPositions: 'read' });
        for (const p of report.stream.partitions) expect(p.sinkPosition).toBe(p.end);
      } else {
        expect(report.consumer).toEqual({ group: 'status_sinks', sinkPositions: 'not stored by this sink' });
        for (const p of report.stream.partitions) expect(p.sinkPosition).toBeNull();
      }

      const json = statusCli(configFile, true);
      expect(json.status).toBe(0);
      const parsed = JSON.parse(json.stdout) as StatusReport;
      expect(Object.keys(parsed.consumer).sort()).toEqual(['group', 'sinkPositions']);
      for (const p of parsed.stream.partitions) expect(Object.keys(p).sort()).toEqual(['committed', 'end', 'partition', 'recordsBehind', 'sinkPosition']);
      expect(parsed.stream.partitions).toEqual(report.stream.partitions);

      const text = statusCli(configFile, false).stdout;
      const rows = text.split('\n').filter((l) => /^\s+\d+\s/.test(l));
      expect(rows).toHaveLength(3);
      for (const row of rows) {
        const [partition, end, sinkPosition] = row.trim().split(/\s+/);
        expect(sinkPosition, `partition ${partition}`).toBe(target.stores ? end : 'n/a');
      }
      if (!target.stores) expect(text).toMatch(/^sink\s+the webhook sink stores no positions: apply resumes from the group's committed offsets/m);
      else expect(text).not.toMatch(/^sink\s/m);
    }, 120_000);
  });
}
