/**
 * `syncline verify` (and `repair`) with `tables: []` (a FOR ALL TABLES or schema publication):
 * it said "no tables to verify" (found by hand after pgbench -i under a schema publication);
 * now it takes every table the publication publishes, without syncline's own state tables.
 */
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { tablesToVerify } from '../../src/cli/commands/verify.js';
import { parseConfig } from '../../src/config/load.js';
import { freshDatabase, machinePg15, uniqueName } from '../helpers/postgres.js';

describe('verify with no tables listed', () => {
  const name = uniqueName('syncline_verify_pub');
  let source: pg.Client;
  let url: string;

  beforeAll(async () => {
    url = await freshDatabase(await machinePg15(), name);
    source = new pg.Client({ connectionString: url });
    await source.connect();
    await source.query(`CREATE TABLE a (id int PRIMARY KEY); CREATE TABLE b (id int); CREATE SCHEMA syncline; CREATE TABLE syncline.snapshots (id int);
      CREATE PUBLICATION ${name}_all FOR ALL TABLES; CREATE PUBLICATION ${name}_none FOR TABLE a; ALTER PUBLICATION ${name}_none DROP TABLE a`);
  }, 60_000);

  afterAll(async () => {
    await source?.end();
  });

  const config = (publication: string): ReturnType<typeof parseConfig> =>
    parseConfig(`source:
  url: ${url}
  slots: [{ name: ${name}, publication: ${publication} }]
stream: { path: /tmp/unused }
sink: { url: ${url} }
`);

  it('takes the publication tables, not those of the state schema', async () => {
    expect((await tablesToVerify(config(`${name}_all`))).map((t) => `${t.table.schema}.${t.table.table}`)).toEqual(['public.a', 'public.b']);
    expect((await tablesToVerify(config(`${name}_all`), ['a'])).map((t) => t.table.table)).toEqual(['a']);
    await expect(tablesToVerify(config(`${name}_none`))).rejects.toThrow(/publishes none/);
  });
});
