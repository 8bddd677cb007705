import { createHash, randomBytes } from 'node:crypto';

/**
 * Names of what tests create on the shared servers (PostgreSQL databases and replication
 * slots, MariaDB databases): unique per test file and per test run, so that files can run in
 * parallel and two runs on one server do not clobber each other. `uniqueName('x')` is
 * `x_<file>_<run>`, the same within one test file (vitest isolates files: each imports its
 * helpers afresh, so `<file>` is drawn once per file);
 * the run id comes from test/setup/global.ts, whose teardown drops whatever ends in `_<run>`.
 */
export const RUN_ENV = 'SYNCLINE_TEST_RUN';

/** This run's id; a process of its own outside vitest (no global setup) still gets one. */
export const RUN_ID = process.env[RUN_ENV] ?? `p${process.pid.toString(36)}`;

/** What every name made in this test file ends with. */
export const FILE_SUFFIX = `_${randomBytes(4).readUInt32BE(0).toString(36).padStart(7, '0').slice(-5)}_${RUN_ID}`;

/**
 * At most this many bytes: PostgreSQL truncates identifiers at 63 (MariaDB at 64), and
 * tests append `_pub` and the like to slot names.
 */
const MAX_LENGTH = 55;

const used = new Set<string>();

/** `base` made unique to this file and run; lower case letters, digits and `_` stay valid slot names. */
export function uniqueName(base: string): string {
  const room = MAX_LENGTH - FILE_SUFFIX.length;
  const head = base.length <= room ? base : `${base.slice(0, room - 7)}_${createHash('sha1').update(base).digest('hex').slice(0, 6)}`;
  const name = head + FILE_SUFFIX;
  used.add(name);
  return name;
}

/** Whether this file made any unique name (else there is nothing of its own to check at its end). */
export function madeUniqueNames(): boolean {
  return used.size > 0;
}

/** True for a name made by `uniqueName` in any file of run `runId`. */
export function isOfRun(name: string, runId = RUN_ID): boolean {
  return name.endsWith(`_${runId}`);
}
