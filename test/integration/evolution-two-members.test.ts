/**
 * Kafka red team: two `apply` members of one group under `schema_evolution: full`; after
 * `ALTER TABLE ... ADD COLUMN` at the source, the member that did not run the ADD COLUMN
 * held the table (SCHEMA_MISMATCH: target lacks column(s) extra3, with a fix telling the user
 * to add it by hand) for 10-60 s, thousands of changes going through the dead-letter queue.
 * Its evolver found nothing to do (the other member had added the column) and so did not
 * re-read the target table, whose cached columns lacked it.
 */
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { DefinitionLookup, TableDefinition } from '../../src/core/schema-evolution.js';
import { PostgresSink } from '../../src/sink/postgres/postgres-sink.js';
import { freshDatabase, machinePg15, PG15_URL } from '../helpers/postgres.js';
import { dropDatabases } from '../helpers/many-writers.js';
import { col, insertOfT } from '../helpers/evolution-fixtures.js';

const DB = `syncline_evolve_two_members_${process.pid}`;

const HISTORY: TableDefinition[] = [
  { version: 1, columns: [col('id', 1, 'integer', 23, true), col('a', 2, 'text', 25)] },
  { version: 2, columns: [col('id', 1, 'integer', 23, true), col('a', 2, 'text', 25), col('extra3', 3, 'integer', 23)] }, // ADD COLUMN extra3
];
const definitions: DefinitionLookup = {
  history: async (_s, _t, version) => HISTORY.filter((d) => d.version <= Math.max(version, 1)),
};

describe('schema evolution with two apply members', () => {
  let url: string;
  let client: pg.Client;

  beforeAll(async () => {
    url = await freshDatabase(await machinePg15(), DB);
    client = new pg.Client({ connectionString: url });
    await client.connect();
    await client.query('CREATE TABLE t (id integer PRIMARY KEY, a text)');
  });

  afterAll(async () => {
    await client?.end();
    await dropDatabases(PG15_URL, [DB]);
  });

  const newSink = () => new PostgresSink({ url, stateSchema: 'syncline', deleteMode: 'hard', versionGate: true, evolution: { mode: 'full', dropColumns: 'keep', definitions } });

  it('a member whose column the other added applies its changes without holding the table', async () => {
    const a = newSink();
    const b = newSink();
    await a.prepare();
    await b.prepare();
    try {
      // Both have read the table in its first definition.
      await a.apply([insertOfT(0x1000n, 1, { id: '1', a: 'one' }, 1)], new Map([[0, 1n]]), 'g');
      await b.apply([insertOfT(0x1100n, 2, { id: '2', a: 'two' }, 1)], new Map([[1, 1n]]), 'g');
      // The column arrives: member a (partition 0) adds it, then member b (partition 1) gets its own changes of it.
      await a.apply([insertOfT(0x2000n, 3, { id: '3', a: 'three', extra3: '3' }, 2)], new Map([[0, 2n]]), 'g');
      await b.apply([insertOfT(0x2100n, 4, { id: '4', a: 'four', extra3: '4' }, 2)], new Map([[1, 2n]]), 'g');
    } finally {
      await a.close();
      await b.close();
    }
    expect((await client.query('SELECT id, extra3 FROM t ORDER BY id')).rows).toEqual([
      { id: 1, extra3: null },
      { id: 2, extra3: null },
      { id: 3, extra3: 3 },
      { id: 4, extra3: 4 },
    ]);
  });
});
