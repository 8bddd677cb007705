import pg from 'pg';
import { afterAll } from 'vitest';
import { FILE_SUFFIX, madeUniqueNames } from '../helpers/unique.js';
import { waitFor } from '../helpers/wait.js';

/**
 * After each test file (this hook runs after the file's own afterAll hooks): the file must
 * have closed every connection it opened to the databases it made on the machine's
 * PostgreSQL, and no replication slot of its own may still be in use. A pool or client left
 * open, or a pipeline or CLI process not stopped, fails the file here, named by database,
 * application and last query. Connections still closing get a few seconds.
 */
afterAll(async () => {
  if (!madeUniqueNames()) return;
  const { PG15_URL } = await import('../helpers/postgres.js');
  const admin = new pg.Client({ connectionString: PG15_URL, application_name: 'syncline-test-leak-check' });
  try {
    await admin.connect();
  } catch {
    return; // the file used only embedded servers, stopped by now
  }
  let leaks: string[] = [];
  try {
    const check = async (): Promise<boolean> => {
      leaks = await leftOpen(admin);
      return leaks.length === 0;
    };
    await waitFor('connections to close', check, 5000, 100).catch(() => undefined);
  } finally {
    await admin.end();
  }
  if (leaks.length > 0) {
    throw new Error(`this test file left ${leaks.length} connection(s) or slot(s) of its own open on ${admin.host}:${admin.port} (end every client and pool, stop every pipeline and process in afterAll):\n  ${leaks.join('\n  ')}`);
  }
}, 30_000);

async function leftOpen(admin: pg.Client): Promise<string[]> {
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
    ...connections.map((c) => `connection to ${c.datname} (pid ${c.pid}, ${c.backend_type}, application '${c.application_name}', ${c.state ?? 'no state'}; last query: ${c.query.replace(/\s+/g, ' ')})`),
    ...slots.map((s) => `slot ${s.slot_name} still in use (by pid ${s.active_pid})`),
  ];
}
