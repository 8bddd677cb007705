import { existsSync, readFileSync, rmSync } from 'node:fs';
import { chmod, lstat, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';

/**
 * The one temporary folder a demo run owns: `<tmpdir>/syncline-demo-XXXXXX` holding the
 * server binaries it needs (when staged), the data directory and the embedded stream.
 * `owner.pid` names the demo process; a folder whose owner is gone is a leftover of a killed
 * run, which the next run stops (its orphaned postmaster) and removes. `--keep` writes
 * `kept`, which protects the folder from that.
 */
export const WORKDIR_PREFIX = 'syncline-demo-';
const OWNER = 'owner.pid';
const KEPT = 'kept';
/** A folder without an owner file is left alone this long: it may be a run still starting. */
const UNOWNED_GRACE_MS = 60_000;

export async function createWorkdir(worldTraversable: boolean, tmp = os.tmpdir()): Promise<string> {
  const dir = await mkdtemp(path.join(tmp, WORKDIR_PREFIX));
  await writeFile(path.join(dir, OWNER), `${process.pid}\n`);
  // The server's OS user (postgres, when we are root) must pass through to its data directory.
  await chmod(dir, worldTraversable ? 0o755 : 0o700);
  return dir;
}

export async function markKept(dir: string): Promise<void> {
  await writeFile(path.join(dir, KEPT), 'kept by `syncline demo --keep`; delete this folder when done\n');
}

/** Removes `dir`, retrying while a process that is stopping still writes into it. */
export async function removeWorkdir(dir: string): Promise<void> {
  await rm(dir, { recursive: true, force: true, maxRetries: 5, retryDelay: 100 });
}

/** For the process 'exit' hook: nothing asynchronous runs there. */
export function removeWorkdirSync(dir: string): void {
  try {
    rmSync(dir, { recursive: true, force: true, maxRetries: 3, retryDelay: 50 });
  } catch {
    // the next run removes what is left
  }
}

/**
 * Stops and removes what killed demo runs left in `tmp`; returns the folders removed. Folders
 * of live runs, kept folders and other users' folders are not touched.
 */
export async function reapLeftovers(tmp = os.tmpdir()): Promise<string[]> {
  const removed: string[] = [];
  let names: string[];
  try {
    names = await readdir(tmp);
  } catch {
    return removed;
  }
  const me = process.getuid?.();
  for (const name of names) {
    if (!name.startsWith(WORKDIR_PREFIX)) continue;
    const dir = path.join(tmp, name);
    try {
      const st = await lstat(dir);
      if (!st.isDirectory() || (me !== undefined && me !== 0 && st.uid !== me)) continue;
      if (existsSync(path.join(dir, KEPT))) continue;
      const owner = await readPid(path.join(dir, OWNER));
      if (owner !== undefined && alive(owner)) continue;
      const postmaster = await readPid(path.join(dir, 'pgdata', 'postmaster.pid'));
      const serverRuns = postmaster !== undefined && alive(postmaster) && servesDataDir(postmaster, path.join(dir, 'pgdata'));
      if (owner === undefined) {
        // An older syncline's folder (no owner file) or one being created right now.
        if (serverRuns || Date.now() - st.mtimeMs < UNOWNED_GRACE_MS) continue;
      } else if (serverRuns && postmaster !== undefined) {
        await stopOrphan(postmaster);
      }
      await removeWorkdir(dir);
      removed.push(dir);
    } catch {
      // racing another run's cleanup, or not ours to remove: leave it
    }
  }
  return removed;
}

async function readPid(file: string): Promise<number | undefined> {
  try {
    const first = (await readFile(file, 'utf8')).split('\n', 1)[0]?.trim() ?? '';
    const pid = Number(first);
    return Number.isInteger(pid) && pid > 0 ? pid : undefined;
  } catch {
    return undefined;
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** An exited process nobody has reaped yet (its parent, our killed demo, is gone). */
function zombie(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.charAt(stat.lastIndexOf(')') + 2) === 'Z';
  } catch {
    return false;
  }
}

/** Guards against a recycled pid: the process must be a postgres serving exactly that directory. */
function servesDataDir(pid: number, pgdata: string): boolean {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').includes(pgdata);
  } catch {
    return os.platform() !== 'linux';
  }
}

/** Immediate shutdown (SIGQUIT), then SIGKILL if it is still there after 5 s. */
async function stopOrphan(pid: number): Promise<void> {
  const signal = (s: NodeJS.Signals): void => {
    try {
      process.kill(pid, s);
    } catch {
      // already gone
    }
  };
  signal('SIGQUIT');
  for (let waited = 0; alive(pid) && !zombie(pid); waited += 100) {
    if (waited === 5000) signal('SIGKILL');
    if (waited > 10_000) break;
    await new Promise((r) => setTimeout(r, 100));
  }
}
