/**
 * The files of an embedded stream's directory besides its segments and writer lock:
 *   meta.json                      {"partitions": N, "format": 1}; the partition count is fixed
 *   groups/<groupId>.json          committed positions of a consumer group
 *   groups/<groupId>.lock          pid of the process consuming it
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { SynclineError } from '../../core/errors.js';
import { partitionsMismatchError } from '../common/errors.js';
import { createFileExclusive, isCode, writeFileAtomic } from './fs-durable.js';

const FORMAT = 1;

/** Whether a stream was created at `dir` (its meta.json): `syncline status` reads one without creating it. */
export async function embeddedStreamExists(dir: string): Promise<boolean> {
  return readFile(join(dir, 'meta.json')).then(() => true, () => false);
}

export async function ensureMeta(dir: string, partitions: number): Promise<void> {
  const metaPath = join(dir, 'meta.json');
  let text: string;
  try {
    text = await readFile(metaPath, 'utf8');
  } catch (err) {
    if (!isCode(err, 'ENOENT')) throw err;
    // Create-if-absent: of two processes creating the stream at once, one wins and the
    // other validates against the winner's partition count instead of overwriting it.
    if (await createFileExclusive(metaPath, `${JSON.stringify({ partitions, format: FORMAT })}\n`)) return;
    text = await readFile(metaPath, 'utf8');
  }
  let meta: { partitions?: unknown; format?: unknown };
  try {
    meta = JSON.parse(text) as { partitions?: unknown; format?: unknown };
  } catch (err) {
    throw new SynclineError('STREAM_META_INVALID', `embedded stream metadata ${metaPath} is not valid JSON`, {
      retriable: false,
      cause: err,
    });
  }
  if (meta.format !== FORMAT || typeof meta.partitions !== 'number') {
    throw new SynclineError(
      'STREAM_META_INVALID',
      `embedded stream metadata ${metaPath} has format ${String(meta.format)}; this version reads format ${FORMAT}`,
      { retriable: false },
    );
  }
  if (meta.partitions !== partitions) {
    throw partitionsMismatchError(
      `embedded stream at ${dir} has ${meta.partitions} partitions`,
      partitions,
      `set stream.partitions back to ${meta.partitions}, or point stream.path at a new directory`,
    );
  }
}

export function groupsDir(dir: string): string {
  return join(dir, 'groups');
}

export function groupFile(dir: string, groupId: string): string {
  return join(groupsDir(dir), `${encodeURIComponent(groupId)}.json`);
}

/** The lock of the one process consuming a group (see EmbeddedStream.consumer). */
export function groupLockFile(dir: string, groupId: string): string {
  return join(groupsDir(dir), `${encodeURIComponent(groupId)}.lock`);
}

export async function readGroupFile(file: string): Promise<Map<number, bigint>> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    if (isCode(err, 'ENOENT')) return new Map();
    throw err;
  }
  const positions = new Map<number, bigint>();
  try {
    const parsed = JSON.parse(text) as { positions?: Record<string, string> };
    for (const [p, offset] of Object.entries(parsed.positions ?? {})) positions.set(Number(p), BigInt(offset));
  } catch (err) {
    throw new SynclineError('STREAM_GROUP_INVALID', `consumer group file ${file} is not valid`, {
      retriable: false,
      cause: err,
    });
  }
  return positions;
}

/** Stores `positions` in the group file, keeping the positions of partitions not named. */
export async function mergeIntoGroupFile(file: string, positions: ReadonlyMap<number, bigint>): Promise<void> {
  const merged = await readGroupFile(file);
  for (const [p, offset] of positions) merged.set(p, offset);
  const out: Record<string, string> = {};
  for (const [p, offset] of [...merged].sort((a, b) => a[0] - b[0])) out[String(p)] = offset.toString();
  await writeFileAtomic(file, `${JSON.stringify({ format: FORMAT, positions: out })}\n`);
}
