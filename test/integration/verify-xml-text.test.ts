/**
 * Verify of a mysql or sqlite target digests each source value as `<expression>::text` in
 * PostgreSQL (sourceExpression) and compares it with what the sink stored: the value's
 * output text, as pgoutput sends it. For xml the two differ: the cast returns the stored
 * text as written, while xml's output drops an XML declaration that says only the version
 * (`<?xml version="1.0"?><d>é</d>` prints `<d>é</d>`). An acceptance pass (4) found every
 * such row reported as different on a SQLite target that held it exactly, before and after
 * `syncline repair`. sourceExpression now reads xml through its output function.
 */
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sourceExpression } from '../../src/verify/targets/source-text.js';
import { freshDatabase, machinePg15, uniqueName } from '../helpers/postgres.js';

describe('verify source text of xml', () => {
  let client: pg.Client;

  beforeAll(async () => {
    client = new pg.Client({ connectionString: await freshDatabase(await machinePg15(), uniqueName('syncline_acc4_xml')) });
    await client.connect();
    await client.query(`CREATE TABLE x (id int PRIMARY KEY, doc xml);
      INSERT INTO x VALUES (1, '<?xml version="1.0"?><d>é</d>'), (2, '<?xml version="1.0" encoding="UTF-8"?><d/>'),
        (3, 'plain <b>text</b>'), (4, ''), (5, NULL), (6, '<?xml version="1.0" standalone="yes"?><e/>')`);
  });

  afterAll(async () => {
    await client?.end();
  });

  it('is the text the sinks store (the output function), whatever declaration the value was written with', async () => {
    const { rows } = await client.query<{ id: number; stored: string | null; compared: string | null }>(
      `SELECT id, doc AS stored, (${sourceExpression('xml', 'doc')})::text AS compared FROM x ORDER BY id`,
    );
    expect(rows.filter((r) => r.compared !== r.stored)).toEqual([]);
    expect(rows.find((r) => r.id === 1)?.stored).toBe('<d>é</d>');
  });
});
