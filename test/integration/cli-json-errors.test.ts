import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ensureBuilt, runCli } from '../helpers/cli.js';
import { freshDatabase, machinePg15, withClient } from '../helpers/postgres.js';

/**
 * A script that runs a command with --json parses stdout. When the command failed before it
 * could report (the source or the dead-letter store unreachable), stdout was empty and the
 * reason only on stderr as text: now stdout carries it as JSON too (stderr unchanged), and
 * the exit code is the command's. The password in the URL is never printed.
 */
describe('--json failures', () => {
  let dir: string;
  let config: string;

  beforeAll(async () => {
    ensureBuilt();
    dir = await mkdtemp(path.join(os.tmpdir(), 'syncline-json-errors-'));
    config = path.join(dir, 'sync.yaml');
    await writeFile(config, `source:
  url: postgres://nobody:s3cret@127.0.0.1:1/db
  slots: [{ name: s1, publication: p1 }]
sink: { url: postgres://nobody:s3cret@127.0.0.1:1/db }
monitoring: { enabled: false }
`);
  });

  afterAll(async () => {
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it.each([
    [['snapshot', '--list'], 'ECONNREFUSED'],
    [['dlq', 'list'], 'DLQ_FAILED'],
    [['dlq', 'show', '1'], 'DLQ_FAILED'],
  ])('syncline %s --json prints the error as JSON on stdout', async (args, code) => {
    const r = await runCli(...args, '--json', '-c', config);
    expect(r.code).toBe(1);
    const out = JSON.parse(r.stdout) as { error: { message: string; code?: string } };
    expect(out.error.message).toContain('ECONNREFUSED 127.0.0.1:1');
    expect(out.error.code).toBe(code);
    expect(r.stderr).toContain('ECONNREFUSED');
    expect(r.stdout + r.stderr).not.toContain('s3cret');
  });

  it('without --json stdout stays empty', async () => {
    const r = await runCli('dlq', 'list', '-c', config);
    expect(r.code).toBe(1);
    expect(r.stdout).toBe('');
  });
});

/**
 * `syncline snapshot TABLE --json --timeout T` that gives up waiting (no capture takes the
 * job) exits 1; stdout was empty, so a script never learned the id of the job it queued (to
 * wait for or cancel). Now it prints the jobs as they are, as when they finish.
 */
describe('--json snapshot that times out waiting (PostgreSQL 15)', () => {
  let dir: string;
  let config: string;

  beforeAll(async () => {
    ensureBuilt();
    const server = await machinePg15();
    const url = await freshDatabase(server, 'syncline_json_timeout');
    await withClient(url, (c) => c.query('CREATE TABLE items (id int PRIMARY KEY); CREATE PUBLICATION syncline_json_timeout_pub FOR TABLE items'));
    dir = await mkdtemp(path.join(os.tmpdir(), 'syncline-json-timeout-'));
    config = path.join(dir, 'sync.yaml');
    await writeFile(config, `source:
  url: ${url}
  slots: [{ name: syncline_json_timeout, publication: syncline_json_timeout_pub, tables: [items] }]
sink: { url: ${url} }
monitoring: { enabled: false }
`);
  }, 60_000);

  afterAll(async () => {
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('prints the unfinished jobs', async () => {
    const r = await runCli('snapshot', 'items', '--json', '--timeout', '1s', '-c', config);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('timed out waiting');
    const jobs = JSON.parse(r.stdout) as Array<{ id: string; table: string; status: string }>;
    expect(jobs).toMatchObject([{ table: 'public.items', status: 'pending' }]);
    expect(jobs[0]?.id).toMatch(/^[0-9]+$/);
  }, 60_000);

  it('names a server error by its SQLSTATE (verify into a target database that does not exist)', async () => {
    const missing = path.join(dir, 'missing-target.yaml');
    await writeFile(missing, (await readFile(config, 'utf8')).replace(/sink: \{ url: (\S+?)\/[^/\s]+ \}/, 'sink: { url: $1/syncline_json_no_such_db }'));
    const r = await runCli('verify', '--json', '-c', missing);
    expect(r.code).toBe(2);
    expect(JSON.parse(r.stdout)).toEqual({ error: { message: 'database "syncline_json_no_such_db" does not exist', code: 'PG_3D000' } });
  }, 60_000);
});
