import type pg from 'pg';

/** The server's version as a number (`server_version_num`, e.g. 150004): features by version. */
export async function serverVersionNumber(client: pg.ClientBase): Promise<number> {
  const { rows } = await client.query<{ v: number }>("SELECT current_setting('server_version_num')::int AS v");
  return rows[0]?.v ?? 0;
}
