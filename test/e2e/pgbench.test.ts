import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { dropBrokerTopic } from '../helpers/broker-topics.js';
import { rowDiff } from '../helpers/compare-rows.js';
import { freePort, freshDatabase, machinePg15, slotStreaming, waitFor, uniqueName } from '../helpers/postgres.js';

const CLI = path.resolve('dist/cli/main.js');
const run = promisify(execFile);
/** pgbench's run length per stream; the issue's acceptance run is 60 (SYNCLINE_PGBENCH_SECONDS=60). */
const SECONDS = Number(process.env.SYNCLINE_PGBENCH_SECONDS ?? 15);
const TABLES = ['pgbench_accounts', 'pgbench_branches', 'pgbench_tellers', 'pgbench_history'];

/**
 * A real workload from a real client: `pgbench -i`, then `pgbench -c 4 -T <s>` while
 * `syncline run` is killed with kill -9 three times, on every stream. All four tables,
 * pgbench_history keyless with REPLICA IDENTITY FULL, must end byte-identical.
 */
for (const broker of ['embedded', 'kafka', 'nats'] as const) {
  describe(`pgbench under kill -9 (${broker} stream)`, () => {
    const name = `syncline_pgb_${broker}`;
    const slot = uniqueName(name);
    const suffix = randomBytes(4).toString('hex');
    let dir: string;
    let sourceUrl: string;
    let targetUrl: string;
    let configFile: string;
    const children: ChildProcess[] = [];

    beforeAll(async () => {
      const server = await machinePg15();
      dir = await mkdtemp(path.join(os.tmpdir(), 'syncline-pgbench-'));
      sourceUrl = await freshDatabase(server, `${name}_source`);
      targetUrl = await freshDatabase(server, `${name}_target`);
      await run('pgbench', ['-i', '-s', '1', '-q', sourceUrl]);
      // The target gets pgbench's tables and keys, no rows.
      await run('pgbench', ['-i', '-I', 'dtp', '-q', targetUrl]);
      const c = new pg.Client({ connectionString: sourceUrl });
      await c.connect();
      await c.query('ALTER TABLE pgbench_history REPLICA IDENTITY FULL');
      await c.end();
      const stream =
        broker === 'embedded'
          ? `{ path: ${path.join(dir, 'stream')}, partitions: 4 }`
          : `{ broker: ${broker}, ${broker === 'kafka' ? "brokers: ['127.0.0.1:9092']" : 'url: nats://127.0.0.1:4222'}, topic: syncline-pgbench-${suffix}, partitions: 4 }`;
      configFile = path.join(dir, 'sync.yaml');
      await writeFile(
        configFile,
        `source:
  url: ${sourceUrl}
  slots: [{ name: ${slot}, publication: ${name}_pub, tables: [${TABLES.join(', ')}] }]
stream: ${stream}
consumer: { group_id: pgbench-${suffix}, retry: { backoff_base_ms: 50, backoff_max_ms: 1000 } }
sink: { url: ${targetUrl} }
${broker === 'embedded' ? '' : `dead_letter: { url: ${targetUrl} }\n`}monitoring: { port: ${await freePort()} }
`,
      );
    }, 120_000);

    afterAll(async () => {
      for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
      if (dir) await rm(dir, { recursive: true, force: true });
      if (broker !== 'embedded') await dropBrokerTopic(broker, `syncline-pgbench-${suffix}`, 4).catch(() => undefined);
    });

    function start(n: number): ChildProcess {
      const log = createWriteStream(path.join(dir, `run-${n}.log`));
      const child = spawn(process.execPath, [CLI, 'run', '-c', configFile], { stdio: ['ignore', 'pipe', 'pipe'] });
      child.stdout?.pipe(log);
      child.stderr?.pipe(log);
      children.push(child);
      return child;
    }

    const streaming = async (): Promise<boolean> => {
      const c = new pg.Client({ connectionString: sourceUrl });
      await c.connect();
      try {
        return await slotStreaming(c, slot);
      } finally {
        await c.end();
      }
    };

    it('converges byte-identical on all four tables', async () => {
      let child = start(0);
      await waitFor('the slot to stream', streaming, 60_000, 200);
      const bench = run('pgbench', ['-c', '4', '-j', '2', '-T', String(SECONDS), '-n', sourceUrl]);
      for (let k = 1; k <= 3; k++) {
        await new Promise((r) => setTimeout(r, (SECONDS * 1000) / 4));
        child.kill('SIGKILL');
        await new Promise((r) => child.once('exit', r));
        child = start(k);
      }
      const out = await bench;
      expect(out.stdout).toMatch(/number of transactions actually processed: \d+/);
      const source = new pg.Client({ connectionString: sourceUrl });
      const target = new pg.Client({ connectionString: targetUrl });
      await source.connect();
      await target.connect();
      try {
        const history = await source.query<{ n: number }>('SELECT count(*)::int AS n FROM pgbench_history');
        expect(history.rows[0]?.n).toBeGreaterThan(SECONDS * 50);
        for (const table of TABLES) {
          await waitFor(`${table} to converge`, async () => {
            const d = await rowDiff(source, target, table, 1);
            return d.missing.length === 0 && d.extra.length === 0;
          }, 180_000, 1000).catch(async (err: unknown) => {
            throw new Error(`${String(err)}: ${JSON.stringify(await rowDiff(source, target, table, 3))} (logs in ${dir})`);
          });
        }
        const verify = await run(process.execPath, [CLI, 'verify', '-c', configFile, '--json'], { encoding: 'utf8' });
        expect((JSON.parse(verify.stdout) as { drift: boolean }).drift).toBe(false);
      } finally {
        await source.end();
        await target.end();
      }
      const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
      child.kill('SIGTERM');
      expect(await exited).toBe(0);
    }, 600_000);
  });
}
