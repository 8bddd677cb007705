import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { ensureBuilt, runCli } from '../helpers/cli.js';

// README: exit 2 is "invalid configuration or usage" for every command (for verify, 1 means
// drift, so a mistyped flag must never read as drift). None of these reach a server: the
// usage error comes first, whatever the config names.
describe('CLI usage errors exit 2 and name the problem', () => {
  beforeAll(() => ensureBuilt(), 180_000);

  const cases: [string[], RegExp][] = [
    [['frobnicate'], /unknown command 'frobnicate'/],
    [['run', '--bogus'], /unknown option '--bogus'/],
    [['verify', '-c'], /'-c, --config <file>' argument missing/],
    [['verify', '--parallelism', 'abc'], /'--parallelism <n>' argument 'abc' is invalid\. expected a positive integer/],
    [['repair', '--parallelism', '0'], /'--parallelism <n>' argument '0' is invalid/],
    [['verify', '--lag-timeout', 'soon'], /'--lag-timeout <time>' argument 'soon' is invalid\. expected a duration/],
    [['repair', '--timeout', '5q'], /'--timeout <time>' argument '5q' is invalid/],
    [['snapshot', '--timeout', 'zz'], /'--timeout <time>' argument 'zz' is invalid/],
    [['dlq', 'list', '--limit', 'abc'], /'--limit <n>' argument 'abc' is invalid/],
    [['dlq', 'purge', '--older-than', '3x'], /'--older-than <age>' argument '3x' is invalid/],
    [['dlq', 'show'], /missing required argument 'id'/],
    [['conflicts', 'list', '--limit', '-3'], /'--limit <n>' argument '-3' is invalid/],
    [['demo', '--rate', 'fast'], /'--rate <n>' argument 'fast' is invalid/],
    [['demo', '--metrics-port', '99999'], /'--metrics-port <port>' argument '99999' is invalid/],
    [['demo', '--duration', 'forever'], /'--duration <time>' argument 'forever' is invalid/],
  ];
  for (const [args, message] of cases) {
    it(`syncline ${args.join(' ')}`, async () => {
      const r = await runCli(...args);
      expect(r.stderr).toMatch(message);
      expect(r.code).toBe(2);
    });
  }

  it('--help and --version still exit 0', async () => {
    for (const args of [['--help'], ['--version'], ['verify', '--help'], ['dlq', 'list', '--help'], ['help', 'verify']]) {
      const r = await runCli(...args);
      expect(r.code, args.join(' ')).toBe(0);
    }
  });
});

describe('syncline init', () => {
  beforeAll(() => ensureBuilt(), 180_000);

  it('writes a template that names the file as given, which validates; refuses to overwrite without --force (exit 2)', async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'syncline-init-'));
    try {
      const file = path.join(dir, 'my sync.yaml');
      const r = await runCli('init', '-c', file);
      expect(r.code).toBe(0);
      const text = await readFile(file, 'utf8');
      expect(text.split('\n')[0]).toBe(`# syncline configuration. Check it with: syncline validate -c ${file}`);
      expect((await runCli('validate', '-c', file)).code).toBe(0);
      const again = await runCli('init', '-c', file);
      expect(again.code).toBe(2);
      expect(again.stderr).toMatch(/exists; use --force/);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
