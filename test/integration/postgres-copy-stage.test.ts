/**
 * The postgres sink's COPY staging (sink.copy_threshold) stages values in the target
 * columns' own types (copy-stage.ts). A column the target widens (schema evolution) must get
 * a staging table of its new type: a stage of the old one would reject the wider values.
 */
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { DefinitionLookup, TableDefinition } from '../../src/core/schema-evolution.js';
import { PostgresSink } from '../../src/sink/postgres/postgres-sink.js';
import { freshDatabase, machinePg15, PG15_URL } from '../helpers/postgres.js';
import { dropDatabases } from '../helpers/many-writers.js';
import { col, insertOfT } from '../helpers/evolution-fixtures.js';

const DB = `syncline_copy_stage_${process.pid}`;

const HISTORY: TableDefinition[] = [
  { version: 1, columns: [col('id', 1, 'integer', 23, true), col('n', 2, 'integer', 23)] },
  { version: 2, columns: [col('id', 1, 'integer', 23, true), col('n', 2, 'bigint', 20)] }, // ALTER n TYPE bigint
];
let recorded = 1;
const definitions: DefinitionLookup = { history: async () => HISTORY.filter((d) => d.version <= recorded) };

describe('postgres sink: COPY staging in the target columns types', () => {
  let url: string;
  let client: pg.Client;

  beforeAll(async () => {
    url = await freshDatabase(await machinePg15(), DB);
    client = new pg.Client({ connectionString: url });
    await client.connect();
    await client.query('CREATE TABLE t (id integer PRIMARY KEY, n integer)');
  });

  afterAll(async () => {
    await client?.end();
    await dropDatabases(PG15_URL, [DB]);
  });

  it('stages a widened column in its new type', async () => {
    const sink = new PostgresSink({ url, stateSchema: 'syncline', deleteMode: 'hard', versionGate: true, copyThreshold: 1, evolution: { mode: 'full', dropColumns: 'keep', definitions } });
    await sink.prepare();
    try {
      expect(await sink.apply([insertOfT(0x1000n, 1, { id: '1', n: '1' }, 1)], new Map(), 'g')).toMatchObject({ applied: 1 });
      recorded = 2;
      expect(await sink.apply([insertOfT(0x2000n, 2, { id: '2', n: '1099511627776' }, 2)], new Map(), 'g')).toMatchObject({ applied: 1 });
    } finally {
      await sink.close();
    }
    expect((await client.query('SELECT id, n::text FROM t ORDER BY id')).rows).toEqual([
      { id: 1, n: '1' },
      { id: 2, n: '1099511627776' },
    ]);
  });
});
