import type { SynclineConfig } from '../config/schema.js';
import { peekSinkPositions as peekPostgresPositions } from './postgres-bookkeeping.js';

/**
 * The stream positions a sink stored with its rows, for `status`: a Map (partition → next
 * offset), undefined when the sink keeps positions but has none yet (no table, no hash), or
 * 'not stored' for a sink that keeps none (webhook: apply resumes from the group's committed
 * offsets). Read-only, unlike Sink.positions, whose sinks create their bookkeeping in
 * prepare(): a status run writes nothing, and opens no SQLite file that is not there. Each
 * sink's client library is loaded only for that sink.
 */
export async function peekStoredPositions(config: SynclineConfig): Promise<Map<number, bigint> | undefined | 'not stored'> {
  const { type, url, state_schema: stateSchema } = config.sink;
  const group = config.consumer.group_id;
  if (type === 'webhook') return 'not stored';
  if (!url) return undefined;
  switch (type) {
    case 'postgres':
      return peekPostgresPositions(url, stateSchema, group);
    case 'mysql':
      return peekMysqlPositions(url, stateSchema, group);
    case 'sqlite':
      return peekSqlitePositions(url, stateSchema, group);
    case 'redis':
      return peekRedisPositions(url, stateSchema, group);
  }
}

/** `<state_schema>_positions` in the URL's database (see MysqlSink). */
async function peekMysqlPositions(url: string, stateSchema: string, group: string): Promise<Map<number, bigint> | undefined> {
  const { default: mysql } = await import('mysql2/promise');
  const { quoteMysqlIdent } = await import('../sink/mysql/mysql-table.js');
  const c = await mysql.createConnection({ uri: url, supportBigNumbers: true, bigNumberStrings: true, connectTimeout: 10_000 });
  try {
    const name = `${stateSchema}_positions`;
    const [exists] = await c.query<import('mysql2/promise').RowDataPacket[]>('SELECT 1 FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ?', [name]);
    if (exists.length === 0) return undefined;
    const [rows] = await c.query<(import('mysql2/promise').RowDataPacket & { p: number; o: string })[]>(
      `SELECT stream_partition AS p, CAST(next_offset AS CHAR) AS o FROM ${quoteMysqlIdent(name)} WHERE group_id = ?`,
      [group],
    );
    return new Map(rows.map((r) => [Number(r.p), BigInt(r.o)]));
  } finally {
    await c.end().catch(() => undefined);
  }
}

/** `<state_schema>_positions` in the SQLite file, opened read-only (see SqliteSink). */
async function peekSqlitePositions(url: string, stateSchema: string, group: string): Promise<Map<number, bigint> | undefined> {
  const { existsSync } = await import('node:fs');
  const { default: Database } = await import('better-sqlite3');
  const { quoteSqliteIdent, sqlitePathOf } = await import('../sink/sqlite/sqlite-table.js');
  const file = sqlitePathOf(url);
  // An in-memory target lives in the apply process only: nothing to read from here.
  if (file === ':memory:' || !existsSync(file)) return undefined;
  const db = new Database(file, { readonly: true, fileMustExist: true });
  try {
    db.defaultSafeIntegers(true);
    const name = `${stateSchema}_positions`;
    if (db.prepare(`SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?`).get(name) === undefined) return undefined;
    const rows = db.prepare(`SELECT stream_partition AS p, next_offset AS o FROM ${quoteSqliteIdent(name)} WHERE group_id = ?`).all(group) as { p: bigint; o: bigint }[];
    return new Map(rows.map((r) => [Number(r.p), BigInt(r.o)]));
  } finally {
    db.close();
  }
}

/** The group's positions hash (`<state_schema>:positions:<group>`, see RedisSink). */
async function peekRedisPositions(url: string, prefix: string, group: string): Promise<Map<number, bigint> | undefined> {
  const { closeRedis, openRedis } = await import('../redis/redis-client.js');
  const { redisKeys } = await import('../sink/redis/redis-sink.js');
  const client = openRedis(url);
  // ioredis rejects a failed connect with "Connection is closed."; the socket's error says why.
  let cause: unknown;
  client.on('error', (err: unknown) => (cause ??= err));
  try {
    await client.connect().catch((err: unknown) => {
      throw cause ?? err;
    });
    const stored = await client.hgetall(redisKeys.positions(prefix, group));
    const entries = Object.entries(stored);
    // Redis has no empty hash: no field means apply never stored a position.
    return entries.length === 0 ? undefined : new Map(entries.map(([p, o]) => [Number(p), BigInt(o)]));
  } finally {
    await closeRedis(client);
  }
}
