import pg from 'pg';

/** Connects with bounded waits, so a doctor or status run (the read-only operator commands) never hangs on a dead address. */
export async function connectPostgres(connection: pg.ClientConfig, timeoutMs = 5000): Promise<pg.Client> {
  const client = new pg.Client({ ...connection, connectionTimeoutMillis: timeoutMs, query_timeout: 30_000 });
  // A connection that drops later surfaces as a query error; this keeps it from crashing the process.
  client.on('error', () => undefined);
  try {
    await client.connect();
  } catch (err) {
    await client.end().catch(() => undefined);
    throw err;
  }
  return client;
}

/** `user@host:port/database` of a connected client: never includes a password. */
export function describeClient(client: pg.Client): string {
  return `${client.user ?? '?'}@${client.host}:${client.port}/${client.database ?? '?'}`;
}

export async function serverVersion(client: pg.Client): Promise<string> {
  const { rows } = await client.query<{ v: string }>("SELECT current_setting('server_version') AS v");
  return rows[0]?.v ?? '?';
}
