import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ensureBuilt, runCli } from '../helpers/cli.js';
import { freshDatabase, machinePg15 } from '../helpers/postgres.js';

/**
 * Acceptance pass 5: paths where `--json` left stdout empty, so a script that parses it got
 * nothing to parse: a usage error (an invalid option value, an unknown option: exit 2, only
 * commander's text on stderr) and `dlq show ID` of an entry that does not exist (exit 1, a
 * line on stderr). Each now prints {"error":{message,code}} on stdout as well.
 */
describe('--json on usage errors and a missing dead-letter entry', () => {
  let dir: string;
  let config: string;

  beforeAll(async () => {
    ensureBuilt();
    dir = await mkdtemp(path.join(os.tmpdir(), 'syncline-json-usage-'));
    const url = await freshDatabase(await machinePg15(), 'json_usage');
    config = path.join(dir, 'sync.yaml');
    await writeFile(config, `source:
  url: ${url}
  slots: [{ name: json_usage_slot, publication: json_usage_pub, tables: [t] }]
sink: { url: ${url} }
monitoring: { enabled: false }
`);
  }, 60_000);

  afterAll(async () => {
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it.each([
    [['verify', '--parallelism', 'abc']],
    [['verify', '--lag-timeout', 'xyz']],
    [['status', '--bogus']],
    [['dlq', 'list', '--limit', '-3']],
  ])('syncline %s --json: exit 2 and the usage error as JSON on stdout', async (args) => {
    const r = await runCli(...args, '--json', '-c', config);
    expect(r.code).toBe(2);
    const out = JSON.parse(r.stdout) as { error: { message: string; code?: string } };
    expect(out.error.code).toBe('USAGE');
    expect(out.error.message).toMatch(/option/);
  });

  // The command's own refusal (checked after parsing), not commander's: stdout was empty.
  it('dlq purge --json without a filter: exit 2, USAGE as JSON, nothing purged', async () => {
    const r = await runCli('dlq', 'purge', '--json', '-c', config);
    expect(r.code).toBe(2);
    const out = JSON.parse(r.stdout) as { error: { message: string; code?: string } };
    expect(out.error.code).toBe('USAGE');
    expect(out.error.message).toMatch(/refusing to purge without a filter/);
    expect(r.stderr).toMatch(/refusing to purge without a filter/);
  });

  it('--help --json still prints the help and exits 0', async () => {
    const r = await runCli('status', '--help', '--json');
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('Usage: syncline status');
  });

  it('dlq show of a missing entry: exit 1 and the error as JSON', async () => {
    const r = await runCli('dlq', 'show', '424242', '--json', '-c', config);
    expect(r.code).toBe(1);
    const out = JSON.parse(r.stdout) as { error: { message: string; code?: string } };
    expect(out.error).toEqual({ message: 'no dead-letter entry 424242', code: 'DLQ_NOT_FOUND' });
    expect(r.stderr).toContain('no dead-letter entry 424242');
  });
});
