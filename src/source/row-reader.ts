import pg from 'pg';
import type { Row } from '../core/change.js';
import { quoteIdent, quoteQualified } from '../core/sql.js';
import { OUTPUT_SETTINGS } from './replication-stream.js';
import { RAW_TEXT } from './snapshot-reader.js';

/**
 * Whether 32-bit transaction id $1 is visible to the statement's snapshot. Its epoch is the
 * snapshot's xmax's, or the one before when $1 is above xmax's low 32 bits (wrapped).
 */
const VISIBLE_SQL = `SELECT pg_visible_in_snapshot(
    ((((x >> 32) - CASE WHEN $1::bigint > (x & 4294967295) THEN 1 ELSE 0 END) << 32) | $1::bigint)::text::xid8, s) AS visible
  FROM (SELECT pg_current_snapshot() AS s) q, LATERAL (SELECT pg_snapshot_xmax(q.s)::text::bigint AS x) y`;

/**
 * Reads single rows at the source by key, values as the replication connection prints them
 * (same output settings). Capture uses it for the few values a change did not carry (see
 * Capture.fillUnchanged); it connects on first use and reconnects after an error.
 */
export class SourceRowReader {
  private client: pg.Client | undefined;

  constructor(private readonly connection: pg.ClientConfig) {}

  /**
   * The row's `columns` as of a snapshot that sees transaction `xid` (the change's): its
   * commit is decoded from the WAL before other sessions see it (PostgreSQL flushes the
   * commit, and with synchronous replication waits for the standby, before the transaction
   * leaves the proc array), and a read in that gap would find the row it wrote missing. So the
   * read waits, in a REPEATABLE READ transaction, until its snapshot includes `xid`.
   */
  async read(schema: string, table: string, key: Row, columns: readonly string[], xid?: number): Promise<Row | undefined> {
    const keyColumns = Object.keys(key);
    if (keyColumns.length === 0 || columns.length === 0) return undefined;
    const client = await this.connected();
    const where = keyColumns.map((k, i) => `${quoteIdent(k)} = $${i + 1}`).join(' AND ');
    try {
      await this.snapshotSeeing(client, xid);
      const res = await client.query<(string | null)[]>({
        text: `SELECT ${columns.map(quoteIdent).join(', ')} FROM ${quoteQualified(schema, table)} WHERE ${where}`,
        values: keyColumns.map((k) => key[k] ?? null),
        rowMode: 'array',
        types: RAW_TEXT,
      });
      await client.query('COMMIT');
      const values = res.rows[0];
      if (!values) return undefined;
      const row: Row = {};
      columns.forEach((c, i) => (row[c] = values[i] ?? null));
      return row;
    } catch (err) {
      this.client = undefined;
      await client.end().catch(() => undefined);
      throw err;
    }
  }

  /** Opens a REPEATABLE READ transaction whose snapshot sees `xid` (when given). */
  private async snapshotSeeing(client: pg.Client, xid: number | undefined): Promise<void> {
    for (let attempt = 0; ; attempt++) {
      await client.query('BEGIN ISOLATION LEVEL REPEATABLE READ');
      if (xid === undefined) return;
      const { rows } = await client.query<{ visible: boolean }>(VISIBLE_SQL, [xid]);
      if (rows[0]?.visible !== false) return;
      await client.query('ROLLBACK');
      await new Promise((r) => setTimeout(r, Math.min(2 ** attempt, 100)));
    }
  }

  async close(): Promise<void> {
    const c = this.client;
    this.client = undefined;
    await c?.end().catch(() => undefined);
  }

  private async connected(): Promise<pg.Client> {
    if (this.client) return this.client;
    const c = new pg.Client(this.connection);
    c.on('error', () => undefined);
    await c.connect();
    await c.query(OUTPUT_SETTINGS);
    this.client = c;
    return c;
  }
}
