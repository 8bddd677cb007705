import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { copyFrom, copyTextChunks } from '../../src/sink/postgres/copy-in.js';
import { freshDatabase, machinePg15 } from '../helpers/postgres.js';

describe('COPY FROM STDIN without pg-copy-streams (the postgres sink staging path)', () => {
  let client: pg.Client;

  beforeAll(async () => {
    const url = await freshDatabase(await machinePg15(), 'syncline_copy_in');
    client = new pg.Client({ connectionString: url });
    await client.connect();
    await client.query('CREATE TEMPORARY TABLE t (a text, b text, n integer)');
  });

  afterAll(async () => {
    await client?.end();
  });

  it('encodes the text format: NULL as \\N, backslash, tab, newline and CR escaped', () => {
    const [chunk, ...rest] = copyTextChunks([['x', null, 'a\\b\tc\nd\re'], ['', '\\N', null], [1, 2, 3]], 3);
    expect(rest).toEqual([]);
    expect(chunk?.toString('utf8')).toBe('x\t\t1\n\\N\t\\\\N\t2\na\\\\b\\tc\\nd\\re\t\\N\t3\n');
  });

  it('cuts the data into CopyData-sized chunks on row boundaries', () => {
    const long = 'y'.repeat(40_000);
    const chunks = copyTextChunks([[long, long, long, long]], 4);
    expect(chunks.length).toBeGreaterThan(1);
    for (const c of chunks) expect(c.toString('utf8').endsWith('\n')).toBe(true);
    expect(Buffer.concat(chunks).toString('utf8')).toBe(`${long}\n`.repeat(4));
  });

  it('round-trips awkward values exactly and reports the rows copied', async () => {
    const values = ['', 'plain', 'tab\there', 'new\nline', 'cr\rlf\r\n', 'back\\slash', '\\N', '\\.', "quote's \"q\"", 'Grüße 🚀 日本', 'z'.repeat(100_000)];
    const n = await copyFrom(client, 'COPY t (a, b, n) FROM STDIN', copyTextChunks([values, values.map(() => null), values.map((_, i) => i)], values.length));
    expect(n).toBe(values.length);
    const { rows } = await client.query<{ a: string; b: string | null }>('SELECT a, b FROM t ORDER BY n');
    expect(rows.map((r) => r.a)).toEqual(values);
    expect(rows.every((r) => r.b === null)).toBe(true);
  });

  it('runs the statements before the COPY in the same round trip (the staging table is created there)', async () => {
    const sql = 'CREATE TEMPORARY TABLE IF NOT EXISTS s (a text) ON COMMIT DELETE ROWS; COPY s FROM STDIN';
    await client.query('BEGIN');
    expect(await copyFrom(client, sql, copyTextChunks([['x', 'y']], 2))).toBe(2);
    expect(await copyFrom(client, sql, copyTextChunks([['z']], 1))).toBe(1);
    expect((await client.query<{ n: number }>('SELECT count(*)::int AS n FROM s')).rows[0]?.n).toBe(3);
    await client.query('COMMIT');
    expect((await client.query<{ n: number }>('SELECT count(*)::int AS n FROM s')).rows[0]?.n).toBe(0);
  });

  it('rejects with the server error on bad data, and the connection stays usable', async () => {
    await client.query('BEGIN');
    const err = await copyFrom(client, 'COPY t (a, b, n) FROM STDIN', copyTextChunks([['a'], ['b'], ['not a number']], 1)).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect((err as { code?: string }).code).toBe('22P02');
    await client.query('ROLLBACK');
    const missing = await copyFrom(client, 'COPY no_such_table FROM STDIN', []).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect((missing as { code?: string }).code).toBe('42P01');
    expect((await client.query<{ one: number }>('SELECT 1 AS one')).rows[0]?.one).toBe(1);
  });
});
