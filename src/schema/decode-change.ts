import type { ChangeEvent } from '../core/change.js';
import { SynclineError } from '../core/errors.js';
import type { ChangeScanner } from './scan-change.js';

const OPS = new Set(['INSERT', 'UPDATE', 'DELETE', 'TRUNCATE', 'READ']);

/**
 * Parses a stream record into a change event, rejecting anything that is not one. With
 * `scanner`, an event as capture writes it is scanned instead, its payload left as text
 * until used (a lazy row, see core/lazy-row.ts); any other text is parsed as JSON.
 */
export function decodeChange(value: Buffer, scanner?: ChangeScanner): ChangeEvent {
  const text = value.toString('utf8');
  const scanned = scanner?.scan(text);
  if (scanned) return validated(scanned);
  let e: unknown;
  try {
    e = JSON.parse(text);
  } catch (err) {
    throw new SynclineError('EVENT_MALFORMED', `stream record is not JSON: ${(err as Error).message}`, { retriable: false });
  }
  return validated(e);
}

function validated(e: unknown): ChangeEvent {
  const c = e as Partial<ChangeEvent> | null;
  const problems: string[] = [];
  if (!c || typeof c !== 'object') problems.push('not an object');
  else {
    if (typeof c.table !== 'string') problems.push('table');
    if (typeof c.schema !== 'string') problems.push('schema');
    if (typeof c.op !== 'string' || !OPS.has(c.op)) problems.push('op');
    if (typeof c.commit_lsn !== 'string') problems.push('commit_lsn');
    if (typeof c.seq !== 'number') problems.push('seq');
    if (typeof c._version !== 'string' || !/^\d+$/.test(c._version)) problems.push('_version');
    if (!c.key || typeof c.key !== 'object') problems.push('key');
    if (c.op !== 'DELETE' && c.op !== 'TRUNCATE' && (!c.payload || typeof c.payload !== 'object')) problems.push('payload');
  }
  if (problems.length > 0) {
    throw new SynclineError('EVENT_INVALID', `stream record is not a valid change event (bad: ${problems.join(', ')})`, { retriable: false });
  }
  return c as ChangeEvent;
}
