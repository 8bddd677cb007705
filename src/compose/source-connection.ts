import pg from 'pg';
import type { SynclineConfig } from '../config/schema.js';
import { parseLsn, type Lsn } from '../core/lsn.js';
import { WAL_POSITION_SQL } from '../source/wal-clock.js';

/** Connection settings for the source: `source.url`, else libpq's PG* variables plus `source.database`. */
export function sourceConnection(config: SynclineConfig): pg.ClientConfig {
  if (config.source.url) return { connectionString: config.source.url };
  return config.source.database ? { database: config.source.database } : {};
}

/** Runs `fn` on a short-lived connection to the source (connect and each query given up after `timeoutMs`, if set). */
export async function withSource<T>(config: SynclineConfig, fn: (c: pg.Client) => Promise<T>, timeoutMs?: number): Promise<T> {
  const c = new pg.Client({ ...sourceConnection(config), ...(timeoutMs !== undefined ? { connectionTimeoutMillis: timeoutMs, query_timeout: timeoutMs } : {}) });
  // A dropped connection fails the query in flight; it must not also crash the process.
  c.on('error', () => undefined);
  await c.connect();
  try {
    return await fn(c);
  } finally {
    await c.end().catch(() => undefined);
  }
}

/**
 * Whether the source accepts a connection now (a plain connect and nothing else, given up
 * after `timeoutMs`): the probe capture sends while it waits to start again. A server that is
 * down, still starting up or in recovery without hot standby refuses it.
 */
export async function sourceAnswers(config: SynclineConfig, timeoutMs: number): Promise<boolean> {
  const c = new pg.Client({ ...sourceConnection(config), connectionTimeoutMillis: timeoutMs });
  c.on('error', () => undefined);
  try {
    await c.connect();
  } catch {
    return false;
  }
  await c.end().catch(() => undefined);
  return true;
}

/**
 * The source's WAL position now, on a short-lived connection (undefined when the source does
 * not answer within `timeoutMs`): what a capture waiting to start again samples.
 */
export async function sourceWalPosition(config: SynclineConfig, timeoutMs: number): Promise<Lsn | undefined> {
  const c = new pg.Client({ ...sourceConnection(config), connectionTimeoutMillis: timeoutMs, query_timeout: timeoutMs });
  c.on('error', () => undefined);
  try {
    await c.connect();
    const lsn = (await c.query<{ lsn: string | null }>(WAL_POSITION_SQL)).rows[0]?.lsn;
    return lsn ? parseLsn(lsn) : undefined;
  } catch {
    return undefined;
  } finally {
    await c.end().catch(() => undefined);
  }
}
