/**
 * File helpers of the embedded stream that make what they write survive a crash: a file is
 * durable only once its data is synced and the directory entry naming it is synced too.
 */
import { link, open, rename, unlink } from 'node:fs/promises';
import { dirname } from 'node:path';

let tmpCounter = 0;

/** A private name next to `file` for a write that is moved or linked into place when complete. */
export function tmpPathFor(file: string): string {
  return `${file}.${process.pid}.${++tmpCounter}.tmp`;
}

export function isCode(err: unknown, code: string): boolean {
  return typeof err === 'object' && err !== null && (err as { code?: unknown }).code === code;
}

/** Makes a created, renamed or deleted directory entry durable (fsync of a file does not). */
export async function fsyncDir(dir: string): Promise<void> {
  const fh = await open(dir, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

async function writeSynced(file: string, data: string): Promise<void> {
  const fh = await open(file, 'w');
  try {
    await fh.writeFile(data);
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/** Writes `file` so that a crash leaves either the old or the new content, never a mix. */
export async function writeFileAtomic(file: string, data: string): Promise<void> {
  const tmp = tmpPathFor(file);
  try {
    await writeSynced(tmp, data);
    await rename(tmp, file);
  } catch (err) {
    await unlink(tmp).catch(() => undefined);
    throw err;
  }
  await fsyncDir(dirname(file));
}

/**
 * Creates `file` with `data` only if it does not exist: written and synced under a private
 * name, then hard-linked into place (link fails if the name exists). False if it existed.
 */
export async function createFileExclusive(file: string, data: string): Promise<boolean> {
  const tmp = tmpPathFor(file);
  try {
    await writeSynced(tmp, data);
    try {
      await link(tmp, file);
    } catch (err) {
      if (isCode(err, 'EEXIST')) return false;
      throw err;
    }
  } finally {
    await unlink(tmp).catch(() => undefined);
  }
  await fsyncDir(dirname(file));
  return true;
}
