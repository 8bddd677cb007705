import { execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLI, ensureBuilt } from '../helpers/cli.js';

/**
 * The CLI loads node-postgres without pg's Cloudflare Workers probe loading Node's fetch
 * implementation (undici, ~30 ms of CPU per process on Node 20), and leaves no `navigator`
 * behind that the process did not have (cli/load-pg.ts).
 */
describe('CLI: node-postgres loaded without undici', () => {
  let dir: string;

  beforeAll(async () => {
    ensureBuilt();
    dir = await mkdtemp(path.join(os.tmpdir(), 'syncline-load-pg-'));
    // Reports, as the process exits, whether undici was loaded and whether a `navigator` exists now and did at start.
    await writeFile(path.join(dir, 'probe.mjs'), `const before = typeof globalThis.navigator;
process.on('exit', () => process.stderr.write('[probe] ' + JSON.stringify({ undici: process.moduleLoadList.some((m) => m.includes('undici')), before, after: typeof globalThis.navigator }) + '\\n'));
`);
    await writeFile(path.join(dir, 'sync.yaml'), `source:
  url: postgres://nobody@127.0.0.1:1/none
  slots: [{ name: s, publication: p, tables: [t] }]
stream: { path: ${path.join(dir, 'stream')} }
sink: { url: postgres://nobody@127.0.0.1:1/none }
monitoring: { enabled: false }
`);
  }, 180_000);

  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('a command that connects to PostgreSQL (status, an unreachable source) never loads undici', async () => {
    const r = await promisify(execFile)(process.execPath, ['--import', path.join(dir, 'probe.mjs'), CLI, 'status', '-c', path.join(dir, 'sync.yaml')], { encoding: 'utf8' }).catch(
      (err: { stdout: string; stderr: string }) => err,
    );
    expect(r.stdout + r.stderr).toMatch(/ECONNREFUSED/);
    const probe = JSON.parse(/\[probe\] (.*)/.exec(r.stderr)?.[1] ?? 'null') as { undici: boolean; before: string; after: string };
    expect(probe.after).toBe(probe.before);
    // Node 21+ has a navigator of its own: pg's probe reads it there, never constructing a Response.
    expect(probe.undici).toBe(false);
  }, 60_000);
});
