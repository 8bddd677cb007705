import pg from 'pg';
import type { SynclineConfig } from '../config/schema.js';

/** Connection settings for the source: `source.url`, else libpq's PG* variables plus `source.database`. */
export function sourceConnection(config: SynclineConfig): pg.ClientConfig {
  if (config.source.url) return { connectionString: config.source.url };
  return config.source.database ? { database: config.source.database } : {};
}

/** Runs `fn` on a short-lived connection to the source. */
export async function withSource<T>(config: SynclineConfig, fn: (c: pg.Client) => Promise<T>): Promise<T> {
  const c = new pg.Client(sourceConnection(config));
  // A dropped connection fails the query in flight; it must not also crash the process.
  c.on('error', () => undefined);
  await c.connect();
  try {
    return await fn(c);
  } finally {
    await c.end().catch(() => undefined);
  }
}
