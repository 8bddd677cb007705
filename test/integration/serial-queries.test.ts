import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { serializeQueries } from '../../src/postgres/serial-queries.js';
import { machinePg15 } from '../helpers/postgres.js';

/**
 * Capture's admin connection is shared by flows that do not wait for each other; pg 8 warned
 * "Calling client.query() when the client is already executing a query is deprecated" into
 * users' logs (23 times in an acceptance run's restarts). Its queries are queued by syncline.
 */
describe('serializeQueries', () => {
  const warnings: string[] = [];
  const onWarning = (w: Error): void => {
    warnings.push(w.message);
  };
  let url: string;

  beforeAll(async () => {
    url = (await machinePg15()).url('postgres');
    process.on('warning', onWarning);
  });
  afterAll(() => {
    process.off('warning', onWarning);
  });

  const burst = async (client: pg.Client): Promise<unknown[]> =>
    Promise.all([
      client.query('SELECT pg_sleep(0.05), 1 AS n'),
      client.query('SELECT 2 AS n'),
      client.query('SELECT 1/0 AS n').catch((e: Error) => e.message),
      client.query({ text: 'SELECT $1::int AS n', values: [4] }),
    ]).then((rs) => rs.map((r) => (typeof r === 'string' ? r : (r.rows[0] as { n: number }).n)));

  it('runs concurrent queries in call order, a failure not stopping the next, with no deprecation warning', async () => {
    const client = serializeQueries(new pg.Client({ connectionString: url }));
    await client.connect();
    try {
      expect(await burst(client)).toEqual([1, 2, 'division by zero', 4]);
    } finally {
      await client.end();
    }
    await new Promise((r) => setImmediate(r));
    expect(warnings.filter((w) => w.includes('already executing a query'))).toEqual([]);
  });

  // The check above can only fail if the warning is still to come in this process: a plain
  // client shows that it is.
  it('(control) a plain client queues them in pg, which warns', async () => {
    const client = new pg.Client({ connectionString: url });
    await client.connect();
    try {
      expect(await burst(client)).toEqual([1, 2, 'division by zero', 4]);
    } finally {
      await client.end();
    }
    await new Promise((r) => setImmediate(r));
    expect(warnings.some((w) => w.includes('already executing a query'))).toBe(true);
  });
});
