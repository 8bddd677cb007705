import pg from 'pg';
import type { Row } from '../core/change.js';
import { quoteIdent, quoteQualified } from '../core/sql.js';
import { OUTPUT_SETTINGS } from './replication-stream.js';
import { RAW_TEXT } from './snapshot-reader.js';

/**
 * Reads single rows at the source by key, values as the replication connection prints them
 * (same output settings). Capture uses it for the few values a change did not carry (see
 * Capture.fillUnchanged); it connects on first use and reconnects after an error.
 */
export class SourceRowReader {
  private client: pg.Client | undefined;

  constructor(private readonly connection: pg.ClientConfig) {}

  async read(schema: string, table: string, key: Row, columns: readonly string[]): Promise<Row | undefined> {
    const keyColumns = Object.keys(key);
    if (keyColumns.length === 0 || columns.length === 0) return undefined;
    const client = await this.connected();
    const where = keyColumns.map((k, i) => `${quoteIdent(k)} = $${i + 1}`).join(' AND ');
    try {
      const res = await client.query<(string | null)[]>({
        text: `SELECT ${columns.map(quoteIdent).join(', ')} FROM ${quoteQualified(schema, table)} WHERE ${where}`,
        values: keyColumns.map((k) => key[k] ?? null),
        rowMode: 'array',
        types: RAW_TEXT,
      });
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
