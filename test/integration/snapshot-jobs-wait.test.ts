import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseConfig } from '../../src/config/load.js';
import { SnapshotRequests } from '../../src/ops/snapshots.js';
import { freshDatabase, machinePg15, uniqueName } from '../helpers/postgres.js';

/**
 * `syncline snapshot` and `syncline repair` wait for their jobs by polling them on one source
 * connection. They read each job with its own query under Promise.all: overlapping queries
 * on one pg client, which pg deprecates (repair re-reading three keys printed its
 * DeprecationWarning) and pg 9 removes.
 */
describe('waiting for several snapshot jobs', () => {
  let url: string;
  let requests: SnapshotRequests;
  const original = pg.Client.prototype.query;
  let inFlight = 0;
  let maxInFlight = 0;

  beforeAll(async () => {
    url = await freshDatabase(await machinePg15(), 'syncline_jobswait');
    const c = new pg.Client({ connectionString: url });
    await c.connect();
    await c.query('CREATE TABLE t (id integer PRIMARY KEY); CREATE PUBLICATION syncline_jobswait_pub FOR TABLE t');
    await c.end();
    requests = await SnapshotRequests.open(parseConfig(`source:
  url: ${url}
  slots: [{ name: ${uniqueName('syncline_jobswait')}, publication: syncline_jobswait_pub, tables: [t] }]
sink: { url: ${url} }
`));
  }, 60_000);

  afterAll(async () => {
    pg.Client.prototype.query = original;
    await requests?.close();
  });

  it('reads them without overlapping queries on its connection, in id order, leaving out unknown ids', async () => {
    const ids: string[] = [];
    for (const from of ['1', '2', '3']) ids.push((await requests.request('t', from, from)).id);
    // Counts the queries running at once on any pg client of this process.
    pg.Client.prototype.query = function (this: pg.Client, ...args: unknown[]) {
      inFlight++;
      maxInFlight = Math.max(maxInFlight, inFlight);
      const done = (): void => void inFlight--;
      const result = (original as (...a: unknown[]) => unknown).apply(this, args);
      if (result instanceof Promise) result.then(done, done);
      else done();
      return result;
    } as typeof original;
    const jobs = await requests.jobs([...ids].reverse().concat('999999'));
    pg.Client.prototype.query = original;
    expect(maxInFlight).toBe(1);
    expect(jobs.map((j) => j.id)).toEqual(ids);
    expect(jobs.map((j) => j.keyFrom)).toEqual(['1', '2', '3']);
    expect(await requests.jobs([])).toEqual([]);
  });
});
