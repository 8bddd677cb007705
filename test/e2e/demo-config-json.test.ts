import { spawn } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLI, ensureBuilt } from '../helpers/cli.js';
import { freePort } from '../helpers/postgres.js';

/** `syncline demo -c FILE --json`: the user's settings drive the demo's pipeline, and every line printed is a JSON event. */
describe('demo with a config file and --json', () => {
  let dir: string;

  beforeAll(async () => {
    ensureBuilt();
    dir = await mkdtemp(path.join(os.tmpdir(), 'syncline-democfg-'));
  });

  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  function demo(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
    return new Promise((resolve, reject) => {
      const child = spawn(process.execPath, [CLI, 'demo', ...args], { env: { ...process.env, SYNCLINE_LOG_LEVEL: 'warn' }, stdio: ['ignore', 'pipe', 'pipe'] });
      let stdout = '';
      let stderr = '';
      child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
      child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
      child.on('error', reject);
      child.on('exit', (code) => resolve({ code, stdout, stderr }));
    });
  }

  it("runs the user's stream and apply settings and prints only JSON events, the last one the comparison", async () => {
    const file = path.join(dir, 'demo.yaml');
    const port = await freePort();
    // source.url and sink.url here must not be used: the demo's own databases replace them.
    await writeFile(
      file,
      `source:\n  url: postgres://nobody@127.0.0.1:1/nowhere\nstream:\n  partitions: 2\n  batch_wait_ms: 1\nsink:\n  url: postgres://nobody@127.0.0.1:1/nowhere\n  apply_lanes: 1\nmonitoring:\n  port: ${port}\n`,
    );
    const run = await demo(['-c', file, '--json', '--duration', '4s', '--rate', '300']);
    expect(run.code, run.stderr + run.stdout).toBe(0);
    const events = run.stdout
      .trim()
      .split('\n')
      .map((line) => JSON.parse(line) as { event: string; [k: string]: unknown });
    const running = events.find((e) => e.event === 'running');
    expect(running).toMatchObject({ stream: 'embedded', partitions: 2, dashboard: `http://127.0.0.1:${port}/` });
    expect(events.filter((e) => e.event === 'progress').length).toBeGreaterThan(2);
    const result = events.at(-1);
    expect(result?.event).toBe('result');
    expect(result?.target_equals_source).toBe(true);
    const tables = result?.tables as { table: string; source_rows: number; target_rows: number; differing: number }[];
    expect(tables.map((t) => t.table).sort()).toEqual(['public.customers', 'public.orders']);
    for (const t of tables) {
      expect(t.differing).toBe(0);
      expect(t.target_rows).toBe(t.source_rows);
    }
    expect(tables.reduce((s, t) => s + t.source_rows, 0)).toBeGreaterThan(0);
  }, 180_000);

  it('refuses a bad setting in the file with its path and exit 2, before starting anything', async () => {
    const file = path.join(dir, 'bad.yaml');
    await writeFile(file, 'stream:\n  partitions: 0\n');
    const run = await demo(['-c', file, '--duration', '2s']);
    expect(run.code).toBe(2);
    expect(run.stderr).toMatch(/stream\.partitions/);
    expect(run.stdout).not.toMatch(/starting embedded PostgreSQL/);
  }, 60_000);

  it('names a config file it cannot read', async () => {
    const run = await demo(['-c', path.join(dir, 'missing.yaml')]);
    expect(run.code).toBe(2);
    expect(run.stderr).toMatch(/cannot read .*missing\.yaml: ENOENT/);
  }, 60_000);
});
