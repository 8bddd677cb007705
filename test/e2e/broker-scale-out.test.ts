import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseTableName } from '../../src/core/sql.js';
import { compareTable } from '../../src/verify/compare.js';
import { requireListening } from '../contract/broker-check.js';
import { freePort, freshDatabase, machinePg15, waitFor, slotStreaming, uniqueName } from '../helpers/postgres.js';
import { doubleApplied, installApplyAudit, Workload, WORKLOAD_DDL, WORKLOAD_TABLES } from '../helpers/workload.js';

const CLI = path.resolve('dist/cli/main.js');
const KAFKA_PORT = Number(process.env.KAFKA_PORT ?? 9092);

/**
 * PG → broker → PG with the processes a real deployment runs: two captures on one slot
 * (leader + standby) and two apply workers in one consumer group. Under load, one apply
 * worker and then the capture leader are killed with kill -9; the target must end equal to
 * the source with no change applied twice.
 */
for (const broker of ['kafka', 'nats'] as const) {
  describe(`scale-out on ${broker}: kill -9 of an apply worker and of the capture leader`, () => {
    let dir: string;
    let sourceUrl: string;
    let targetUrl: string;
    const children: ChildProcess[] = [];
    const suffix = `${broker}_${process.pid}_${Date.now().toString(36)}`;
    const slot = uniqueName(`syncline_${broker}_e2e`);

    beforeAll(async () => {
      if (broker === 'kafka') await requireListening('127.0.0.1', KAFKA_PORT, 'Start the broker: bash scripts/kafka.sh start');
      else await requireListening('127.0.0.1', 4222, 'Start NATS with JetStream: nats-server -js -a 127.0.0.1 -p 4222');
      const server = await machinePg15();
      dir = await mkdtemp(path.join(os.tmpdir(), `syncline-${broker}-`));
      sourceUrl = await freshDatabase(server, `syncline_${broker}_source`);
      targetUrl = await freshDatabase(server, `syncline_${broker}_target`);
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

    async function start(role: 'capture' | 'apply', name: string): Promise<ChildProcess> {
      const file = path.join(dir, `${name}.yaml`);
      await writeFile(
        file,
        `source:
  url: ${sourceUrl}
  slots: [{ name: ${slot}, publication: syncline_${broker}_pub, tables: [${WORKLOAD_TABLES.map((t) => `'${t}'`).join(', ')}] }]
stream:
  broker: ${broker}
  ${broker === 'kafka' ? `brokers: ['127.0.0.1:${KAFKA_PORT}']` : 'url: nats://127.0.0.1:4222'}
  topic: syncline-e2e-${suffix}
  partitions: 6
consumer: { group_id: e2e-${suffix}, batch_size: 500, retry: { backoff_base_ms: 50, backoff_max_ms: 500 } }
sink: { url: ${targetUrl} }
monitoring: { port: ${await freePort()} }
`,
      );
      const child = spawn(process.execPath, [CLI, role, '-c', file], { stdio: ['ignore', 'pipe', 'pipe'] });
      const log = createWriteStream(path.join(dir, `${name}.log`));
      child.stdout?.pipe(log);
      child.stderr?.pipe(log);
      children.push(child);
      return child;
    }

    it('ends with the target equal to the source and nothing applied twice', async () => {
      const source = new pg.Client({ connectionString: sourceUrl });
      const target = new pg.Client({ connectionString: targetUrl });
      await source.connect();
      await target.connect();
      try {
        const leader = await start('capture', 'capture-a');
        await waitFor('the leader to stream', async () => (await slotStreaming(source, slot)), 60_000);
        await start('capture', 'capture-b');
        const workerX = await start('apply', 'apply-x');
        await start('apply', 'apply-y');
        const w = new Workload(source);
        await w.transaction();
        while (w.changes < 2000) await w.transaction();
        workerX.kill('SIGKILL');
        while (w.changes < 4000) await w.transaction();
        leader.kill('SIGKILL');
        while (w.changes < 6000) await w.transaction();

        const tables = WORKLOAD_TABLES.map((t) => parseTableName(t));
        await waitFor('target equals source', async () => (await Promise.all(tables.map((t) => compareTable(source, target, t)))).every((d) => d.differing === 0 && d.sourceRows === d.targetRows), 180_000, 1000);
        expect(await doubleApplied(target)).toEqual([]);
        // Both apply workers did work before the kill (the group shared the partitions).
        const logY = await readFile(path.join(dir, 'apply-y.log'), 'utf8');
        expect(logY).toMatch(/partitions assigned/);
      } finally {
        await source.end();
        await target.end();
      }
    }, 300_000);
  });
}
