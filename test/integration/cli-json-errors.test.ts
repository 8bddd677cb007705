import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ensureBuilt, runCli } from '../helpers/cli.js';

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
    [['snapshot', '--list'], undefined],
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
