import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PostgresSink } from '../../src/sink/postgres/postgres-sink.js';
import { removeExtraRows } from '../../src/verify/repair.js';
import { freshDatabase, machinePg15, withClient } from '../helpers/postgres.js';

// repair deletes a target row only after re-reading that its key is still absent at the source.
// That re-read must match keys as verify names them (UTC timestamps, trimmed numerics) whatever
// the source session's settings: a key wrongly read as absent deletes a row the source holds.
describe('repair: removing extra target rows re-checks the source in the key columns own types', () => {
  let sourceUrl: string;
  let targetUrl: string;
  let source: pg.Client;
  let sink: PostgresSink;

  beforeAll(async () => {
    const server = await machinePg15();
    sourceUrl = await freshDatabase(server, 'syncline_repair_extra_src');
    targetUrl = await freshDatabase(server, 'syncline_repair_extra_tgt');
    const db = new URL(sourceUrl).pathname.slice(1);
    await withClient(sourceUrl, async (c) => {
      // A source database whose sessions print timestamps in another zone.
      await c.query(`ALTER DATABASE "${db}" SET timezone = 'America/New_York'`);
      await c.query(`CREATE TABLE tk (k timestamptz PRIMARY KEY, v text); CREATE TABLE nk (n numeric PRIMARY KEY, v text); CREATE TABLE uk (u uuid PRIMARY KEY, v text)`);
      await c.query(`INSERT INTO tk VALUES ('2024-03-01 12:00:00+00', 'kept'); INSERT INTO nk VALUES (1.50, 'kept'); INSERT INTO uk VALUES ('a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', 'kept')`);
    });
    await withClient(targetUrl, async (c) => {
      await c.query(`CREATE TABLE tk (k timestamptz PRIMARY KEY, v text); CREATE TABLE nk (n numeric(10,4) PRIMARY KEY, v text); CREATE TABLE uk (u text PRIMARY KEY, v text)`);
      await c.query(`INSERT INTO tk VALUES ('2024-03-01 12:00:00+00', 'kept'), ('2024-03-02 12:00:00+00', 'extra');
                     INSERT INTO nk VALUES (1.5, 'kept'), (2.5, 'extra');
                     INSERT INTO uk VALUES ('a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', 'kept'), ('garbage', 'extra')`);
    });
    source = new pg.Client({ connectionString: sourceUrl });
    await source.connect();
    sink = new PostgresSink({ url: targetUrl, stateSchema: 'syncline', deleteMode: 'hard', versionGate: true });
    await sink.prepare();
  }, 120_000);

  afterAll(async () => {
    await sink?.close();
    await source?.end();
  });

  const targetKeys = (sql: string): Promise<string[]> => withClient(targetUrl, async (c) => (await c.query<{ k: string }>(sql)).rows.map((r) => r.k));

  it('keeps rows whose key the source still holds (a timestamptz key in UTC text, a numeric key trimmed); removes the others', async () => {
    // The keys as verify reports them: UTC ISO text, trimmed numerics, a target key no uuid can be.
    const removed = [
      await removeExtraRows(source, sink, { schema: 'public', table: 'tk' }, ['k'], ['["2024-03-01 12:00:00+00"]', '["2024-03-02 12:00:00+00"]'], 'src', 'g'),
      await removeExtraRows(source, sink, { schema: 'public', table: 'nk' }, ['n'], ['["1.5"]', '["2.5"]'], 'src', 'g'),
      await removeExtraRows(source, sink, { schema: 'public', table: 'uk' }, ['u'], ['["a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"]', '["garbage"]'], 'src', 'g'),
    ];
    expect(await targetKeys(`SELECT v AS k FROM tk ORDER BY k`)).toEqual(['kept']);
    expect(await targetKeys(`SELECT v AS k FROM nk ORDER BY n`)).toEqual(['kept']);
    expect(await targetKeys(`SELECT v AS k FROM uk ORDER BY u`)).toEqual(['kept']);
    expect(removed).toEqual([1, 1, 1]);
  });
});
