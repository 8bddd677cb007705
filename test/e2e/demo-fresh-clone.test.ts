import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { chmod, mkdtemp, readdir, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLI, ROOT, ensureBuilt } from '../helpers/cli.js';
import { freePort } from '../helpers/postgres.js';

/**
 * `syncline demo` from a checkout the `postgres` OS user cannot enter (a 0700 folder, like a
 * `mktemp -d` or /root checkout): as root the embedded PostgreSQL runs as `postgres`, which
 * must still reach its binaries and data directory. The demo gets a TMPDIR of its own, so
 * "nothing left behind" is exact: that folder must be empty after every run, including
 * after a run killed with SIGKILL (the next run stops its orphaned server and removes its
 * folder) and one stopped with SIGTERM. Without root it checks the same as the invoking user.
 */
describe('demo from a checkout closed to other users', () => {
  let checkout: string;
  let tmp: string;
  let cli: string;
  const children: ChildProcess[] = [];

  beforeAll(async () => {
    ensureBuilt();
    checkout = await mkdtemp(path.join(os.tmpdir(), 'syncline-democlone-'));
    await chmod(checkout, 0o700);
    // dist and node_modules as a fresh clone has them (hard links: fast, same bytes).
    for (const part of ['package.json', 'dist', 'node_modules']) {
      try {
        execFileSync('cp', ['-al', path.join(ROOT, part), checkout]);
      } catch {
        execFileSync('cp', ['-a', path.join(ROOT, part), checkout]);
      }
    }
    cli = path.join(checkout, path.relative(ROOT, CLI));
    // A temp directory every user can enter, like /tmp, but the demo's alone.
    tmp = await mkdtemp(path.join(os.tmpdir(), 'syncline-demotmp-'));
    await chmod(tmp, 0o755);
  }, 60_000);

  afterAll(async () => {
    for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
    await rm(checkout, { recursive: true, force: true });
    await rm(tmp, { recursive: true, force: true });
  });

  interface Run {
    child: ChildProcess;
    output: () => string;
    exited: Promise<number | null>;
  }

  async function demo(...args: string[]): Promise<Run> {
    let output = '';
    const child = spawn(process.execPath, [cli, 'demo', '--metrics-port', String(await freePort()), ...args], {
      cwd: checkout,
      env: { ...process.env, TMPDIR: tmp, SYNCLINE_LOG_LEVEL: 'warn' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    children.push(child);
    child.stdout?.on('data', (b: Buffer) => (output += b.toString('utf8')));
    child.stderr?.on('data', (b: Buffer) => (output += b.toString('utf8')));
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code, signal) => resolve(code ?? (signal ? -1 : null))));
    return { child, output: () => output, exited };
  }

  async function until(run: Run, text: string, ms: number): Promise<void> {
    const deadline = Date.now() + ms;
    while (!run.output().includes(text)) {
      if (Date.now() > deadline || run.child.exitCode !== null) throw new Error(`demo did not print "${text}":\n${run.output()}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  function workdirOf(run: Run): string {
    const m = /\(data in ([^)]+)\)/.exec(run.output());
    if (!m?.[1]) throw new Error(`demo did not name its folder:\n${run.output()}`);
    return m[1];
  }

  const asRoot = process.getuid?.() === 0;

  it('cleans up after SIGKILL on the next run, which ends with RESULT: target equals source', async () => {
    // A run killed with SIGKILL leaves its folder and a running postmaster behind...
    const killed = await demo('--duration', '60s');
    await until(killed, 'pipeline running', 45_000);
    const leftover = workdirOf(killed);
    expect(path.dirname(leftover)).toBe(tmp);
    if (asRoot) expect(killed.output()).toContain('as OS user postgres');
    killed.child.kill('SIGKILL');
    await killed.exited;
    const postmaster = Number(readFileSync(path.join(leftover, 'pgdata', 'postmaster.pid'), 'utf8').split('\n')[0]);
    expect(running(postmaster)).toBe(true);

    // ...which the next run stops and removes before running to the end.
    const run = await demo('--duration', '5s', '--rate', '300');
    const code = await run.exited;
    const output = run.output();
    expect(output, output).toContain(`removed ${leftover}, left by an interrupted demo`);
    expect(output, output).toContain('RESULT: target equals source');
    expect(output).not.toMatch(/^\s+at /m);
    expect(code, output).toBe(0);
    expect(running(postmaster)).toBe(false);
    expect(existsSync(workdirOf(run))).toBe(false);
    expect(await readdir(tmp)).toEqual([]);
  }, 90_000);

  it('SIGTERM stops it, exits 143 and leaves nothing behind', async () => {
    const run = await demo('--duration', '60s');
    await until(run, 'pipeline running', 45_000);
    run.child.kill('SIGTERM');
    const code = await run.exited;
    expect(code, run.output()).toBe(143);
    expect(run.output()).not.toMatch(/^\s+at /m);
    expect(await readdir(tmp)).toEqual([]);
  }, 60_000);
});

/** Alive and not a zombie waiting for a reaper. */
function running(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.charAt(stat.lastIndexOf(')') + 2) !== 'Z';
  } catch {
    return false;
  }
}
