import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { compareTable } from '../../src/verify/compare.js';
import { freePort, freshDatabase, machinePg15, waitFor, uniqueName } from '../helpers/postgres.js';

const CLI = path.resolve('dist/cli/main.js');
const ROWS = 200_000;

describe.each([
  { parallelism: 1, name: 'syncline_snapkill' },
  // Chunks finish out of order: a resume skips those recorded past the finished prefix.
  { parallelism: 2, name: 'syncline_snapkill_par' },
])('initial snapshot ($parallelism chunk(s) at a time) killed with kill -9 resumes after its finished chunks', ({ parallelism, name }) => {
  let dir: string;
  let sourceUrl: string;
  let targetUrl: string;
  let configFile: string;
  const children: ChildProcess[] = [];

  beforeAll(async () => {
    const server = await machinePg15();
    dir = await mkdtemp(path.join(os.tmpdir(), 'syncline-snapkill-'));
    sourceUrl = await freshDatabase(server, `${name}_source`);
    targetUrl = await freshDatabase(server, `${name}_target`);
    for (const url of [sourceUrl, targetUrl]) {
      const c = new pg.Client({ connectionString: url });
      await c.connect();
      await c.query('CREATE TABLE accounts (id bigint PRIMARY KEY, owner text NOT NULL, balance numeric(14,2) NOT NULL, note text)');
      if (url === sourceUrl) await c.query(`INSERT INTO accounts SELECT g, 'owner ' || g, g * 1.5, repeat('n', g % 40) FROM generate_series(1, ${ROWS}) g`);
      await c.end();
    }
    configFile = path.join(dir, 'sync.yaml');
    await writeFile(
      configFile,
      `source:
  url: ${sourceUrl}
  slots: [{ name: ${uniqueName(name)}, publication: ${name}_pub, tables: [accounts] }]
  snapshot_chunk_size: 2000
  snapshot_parallelism: ${parallelism}
stream: { path: ${path.join(dir, 'stream')}, partitions: 4 }
consumer: { group_id: ${name} }
sink: { url: ${targetUrl} }
monitoring: { port: ${await freePort()} }
`,
    );
  });

  afterAll(async () => {
    for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  function start(n: number): ChildProcess {
    const child = spawn(process.execPath, [CLI, 'run', '-c', configFile], { stdio: ['ignore', 'pipe', 'pipe'] });
    const log = createWriteStream(path.join(dir, `run-${n}.log`));
    child.stdout?.pipe(log);
    child.stderr?.pipe(log);
    children.push(child);
    return child;
  }

  it('resumes after the finished chunks (not from zero) under concurrent writes, and the target equals the source', async () => {
    const source = new pg.Client({ connectionString: sourceUrl });
    const target = new pg.Client({ connectionString: targetUrl });
    await source.connect();
    await target.connect();
    const job = async (): Promise<{ status: string; rows: number; chunks: number } | undefined> => {
      try {
        return (await source.query("SELECT status, rows::int, chunks FROM syncline.snapshots WHERE table_name = 'accounts'")).rows[0];
      } catch {
        return undefined; // not created yet
      }
    };
    try {
      let child = start(0);
      let writes = 0;
      const write = async (): Promise<void> => {
        writes++;
        const id = 1 + ((writes * 7919) % ROWS);
        await source.query('UPDATE accounts SET balance = balance + 1, note = $2 WHERE id = $1', [id, `w${writes}`]);
        if (writes % 4 === 0) await source.query('DELETE FROM accounts WHERE id = $1', [1 + ((writes * 104729) % ROWS)]);
        if (writes % 3 === 0) await source.query("INSERT INTO accounts VALUES ($1, 'new', 0, null) ON CONFLICT DO NOTHING", [ROWS + writes]);
      };
      await waitFor('a few chunks', async () => {
        await write();
        return ((await job())?.chunks ?? 0) >= 10;
      }, 60_000, 20);
      child.kill('SIGKILL');
      await new Promise((r) => child.once('exit', r));
      const atKill = await job();
      expect(atKill?.status).toBe('running');
      for (let i = 0; i < 100; i++) await write();

      child = start(1);
      await waitFor('the snapshot to finish', async () => {
        await write();
        return (await job())?.status === 'done';
      }, 120_000, 20);
      const done = await job();
      // Resumed: the rows read over both runs are about the table size, not table size + the part
      // read before the kill; at most the chunks in flight at the kill are read again.
      expect(done?.rows).toBeLessThan(ROWS + writes + (parallelism + 1) * 2000);
      expect(done?.chunks).toBeGreaterThan(atKill?.chunks ?? 0);
      await waitFor('target equals source', async () => (await compareTable(source, target, { schema: 'public', table: 'accounts' })).differing === 0, 120_000, 500);
      const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
      child.kill('SIGTERM');
      expect(await exited).toBe(0);
    } finally {
      await source.end();
      await target.end();
    }
  }, 300_000);
});
