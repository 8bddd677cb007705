/**
 * Locks of an embedded stream held by one process at a time, each a file with its pid:
 * `writer.lock` (the one producer) and `groups/<group>.lock` (the one consumer of a group).
 */
import { readFileSync } from 'node:fs';
import { link, readFile, unlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { SynclineError } from '../../core/errors.js';
import { isCode, tmpPathFor } from './fs-durable.js';

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (err) {
    // EPERM: the process exists but belongs to another user.
    return isCode(err, 'EPERM');
  }
  return !isZombie(pid);
}

/**
 * A writer killed with `kill -9` stays a zombie until its parent reaps it (seconds, under an
 * init or supervisor that reaps slowly, or never, if the parent does not wait). It holds no
 * file and writes nothing, so its lock is stale: `kill -0` alone would refuse the restart.
 */
function isZombie(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Field 3, after the parenthesised command name (which may itself hold ') ').
    return stat.charAt(stat.lastIndexOf(')') + 2) === 'Z';
  } catch {
    return false;
  }
}

/**
 * Takes `writer.lock`: only one process may publish to an embedded stream.
 */
export function acquireWriterLock(dir: string): Promise<string> {
  const lockPath = join(dir, 'writer.lock');
  return acquirePidLock(lockPath, (pid, own) =>
    new SynclineError(
      'STREAM_LOCKED',
      `embedded stream at ${dir} is locked by writer process ${pid}${own ? ' (this process, which already has an open producer)' : ''}. ` +
        'Only one process may publish to an embedded stream at a time: stop the other writer, ' +
        `or, if pid ${pid} is not a syncline process (a reused pid), delete ${lockPath}.`,
      { retriable: !own },
    ),
  );
}

/**
 * Takes the lock file at `lockPath` for this process, or throws `held(pid, own)` while a live
 * process holds it. The lock is first written in full to a private file and then hard-linked
 * into place, so no process ever sees an empty lock of a live holder and mistakes it for a
 * stale one. A lock whose pid is dead (or a zombie) was left by a killed process.
 */
export async function acquirePidLock(lockPath: string, held: (pid: number, own: boolean) => SynclineError): Promise<string> {
  const tmp = tmpPathFor(lockPath);
  await writeFile(tmp, `${process.pid}\n`);
  try {
    for (let attempt = 0; ; attempt++) {
      try {
        await link(tmp, lockPath);
        return lockPath;
      } catch (err) {
        if (!isCode(err, 'EEXIST') || attempt >= 5) throw err;
      }
      let content: string;
      try {
        content = await readFile(lockPath, 'utf8');
      } catch (err) {
        if (isCode(err, 'ENOENT')) continue;
        throw err;
      }
      const pid = Number.parseInt(content.trim(), 10);
      if (Number.isInteger(pid) && pid > 0 && isAlive(pid)) throw held(pid, pid === process.pid);
      // Stale (its holder was killed): remove and retry. Two processes taking over the same
      // stale lock in the same instant is the one race left; it needs a crash and two
      // simultaneous restarts.
      try {
        await unlink(lockPath);
      } catch (err) {
        if (!isCode(err, 'ENOENT')) throw err;
      }
    }
  } finally {
    await unlink(tmp).catch(() => undefined);
  }
}

/** Removes a lock this process holds (a lock taken over by another process is left). */
export async function releasePidLock(lockPath: string): Promise<void> {
  try {
    const pid = Number.parseInt((await readFile(lockPath, 'utf8')).trim(), 10);
    if (pid === process.pid) await unlink(lockPath);
  } catch (err) {
    if (!isCode(err, 'ENOENT')) throw err;
  }
}
