import pg from 'pg';
import { afterAll } from 'vitest';
import { FILE_SUFFIX, madeUniqueNames } from '../helpers/unique.js';
import { waitFor } from '../helpers/wait.js';

/**
 * After each test file (this hook runs after the file's own afterAll hooks), two checks that
 * fail the file with what leaked:
 * - every pg client and pool this worker connected during the file (the tests' own and the
 *   pipelines', on any server) has been ended: the failure names where each was opened;
 * - on the machine's PostgreSQL, nothing is still connected to the databases the file made
 *   (child processes included) and none of its replication slots is in use: the failure names
 *   database, application and last query.
 * Connections still closing get a few seconds.
 */
const open = trackClients();

afterAll(async () => {
  const clients = await leftOpenClients();
  const server = await leftOpenOnServer();
  const leaks = [...clients, ...server];
  if (leaks.length > 0) {
    throw new Error(`this test file left ${leaks.length} connection(s) or slot(s) open (end every client and pool, stop every pipeline and process in afterAll):\n  ${leaks.join('\n  ')}`);
  }
}, 30_000);

type Connect = (this: pg.Client, callback?: (err: Error | null) => void) => Promise<void> | void;

/**
 * Records each pg.Client (pools connect through it too) from a successful connect until its
 * connection ends, with the stack that opened it. The prototype is patched once per worker;
 * the map is this file's.
 */
function trackClients(): Map<pg.Client, string> {
  const key = Symbol.for('syncline.test.openClients');
  const state = globalThis as unknown as Record<symbol, { current: Map<pg.Client, string> } | undefined>;
  let tracked = state[key];
  if (!tracked) {
    const current = { current: new Map<pg.Client, string>() };
    tracked = current;
    state[key] = current;
    const original = pg.Client.prototype.connect as Connect;
    const patched: Connect = function (this: pg.Client, callback) {
      const stack = new Error('opened').stack ?? '';
      const opened = (): void => {
        const map = current.current;
        map.set(this, stack);
        this.once('end', () => map.delete(this));
      };
      if (callback) {
        return original.call(this, (err) => {
          if (!err) opened();
          callback(err);
        });
      }
      return (original.call(this) as Promise<void>).then(opened);
    };
    pg.Client.prototype.connect = patched as typeof pg.Client.prototype.connect;
  }
  tracked.current = new Map();
  return tracked.current;
}

async function leftOpenClients(): Promise<string[]> {
  await waitFor('pg clients to end', () => open.size === 0, 5000, 50).catch(() => undefined);
  return [...open].map(([client, stack]) => `pg client to ${client.host}:${client.port}/${client.database ?? ''} never ended, opened ${whereOpened(stack)}`);
}

/** The stack's frames in this repository (not in node_modules or node itself). */
function whereOpened(stack: string): string {
  const frames = stack.split('\n').slice(1).map((l) => l.trim()).filter((l) => !l.includes('node_modules') && !l.includes('node:') && !l.includes('test/setup/leaks.ts'));
  return frames.slice(0, 4).join(' ← ') || 'outside this repository';
}

async function leftOpenOnServer(): Promise<string[]> {
  if (!madeUniqueNames()) return [];
  const { PG15_URL } = await import('../helpers/postgres.js');
  const admin = new pg.Client({ connectionString: PG15_URL, application_name: 'syncline-test-leak-check' });
  try {
    await admin.connect();
  } catch {
    return []; // the file used only embedded servers, stopped by now
  }
  let leaks: string[] = [];
  try {
    const check = async (): Promise<boolean> => {
      leaks = await ownConnectionsAndSlots(admin);
      return leaks.length === 0;
    };
    await waitFor('connections to close', check, 5000, 100).catch(() => undefined);
    await dropOwn(admin);
  } finally {
    await admin.end();
  }
  return leaks;
}

/**
 * Drops this file's replication slots and databases now rather than at the end of the run:
 * each slot holds one of the server's max_replication_slots (40 in CI) and its WAL, and a
 * whole suite makes more than that. What cannot be dropped yet (a leak reported above) is
 * left to the run's global teardown.
 */
async function dropOwn(admin: pg.Client): Promise<void> {
  const own = 'right(slot_name, $1) = $2 OR right(coalesce(database, \'\'), $1) = $2';
  await admin
    .query(`SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE (${own}) AND NOT active`, [FILE_SUFFIX.length, FILE_SUFFIX])
    .catch(() => undefined);
  const { rows } = await admin.query<{ datname: string }>('SELECT datname FROM pg_database WHERE right(datname, $1) = $2', [FILE_SUFFIX.length, FILE_SUFFIX]);
  for (const { datname } of rows) await admin.query(`DROP DATABASE IF EXISTS ${pg.escapeIdentifier(datname)} WITH (FORCE)`).catch(() => undefined);
}

async function ownConnectionsAndSlots(admin: pg.Client): Promise<string[]> {
  const { rows: connections } = await admin.query<{ datname: string; pid: number; application_name: string; backend_type: string; state: string | null; query: string }>(
    `SELECT datname, pid, application_name, backend_type, state, left(query, 120) AS query FROM pg_stat_activity
      WHERE right(datname, $1) = $2 AND pid <> pg_backend_pid() ORDER BY datname, pid`,
    [FILE_SUFFIX.length, FILE_SUFFIX],
  );
  const { rows: slots } = await admin.query<{ slot_name: string; active_pid: number }>(
    'SELECT slot_name, active_pid FROM pg_replication_slots WHERE right(slot_name, $1) = $2 AND active ORDER BY slot_name',
    [FILE_SUFFIX.length, FILE_SUFFIX],
  );
  return [
    ...connections.map((c) => `connection to ${c.datname} on ${admin.host}:${admin.port} (pid ${c.pid}, ${c.backend_type}, application '${c.application_name}', ${c.state ?? 'no state'}; last query: ${c.query.replace(/\s+/g, ' ')})`),
    ...slots.map((s) => `slot ${s.slot_name} on ${admin.host}:${admin.port} still in use (by pid ${s.active_pid})`),
  ];
}
