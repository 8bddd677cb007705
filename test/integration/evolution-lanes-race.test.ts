/**
 * RED TEAM: two apply lanes of one batch call PostgresSink.apply at once. Lane A carries an
 * older change of table t (_schema_version 2, column b), lane B the first change of a newer
 * definition (v3: RENAME b TO c). Lane A takes the DDL lock shared (nothing pending when it
 * looked), but lane B's prepare() loads v3 into the shared histories before lane A reaches
 * evolve(): lane A runs B's RENAME in its own transaction under the SHARED lock and then
 * writes its row with the old column name b, which no longer exists: StructuralError, the
 * table is held (TABLE_BLOCKED) although both changes are legit and would apply in one lane.
 */
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { DefinitionLookup, TableDefinition } from '../../src/core/schema-evolution.js';
import { PostgresSink } from '../../src/sink/postgres/postgres-sink.js';
import { freshDatabase, machinePg15, PG15_URL } from '../helpers/postgres.js';
import { dropDatabases } from '../helpers/many-writers.js';
import { col, insertOfT } from '../helpers/evolution-fixtures.js';

const DB = `syncline_rt_evolve_lanes_${process.pid}`;

const HISTORY: TableDefinition[] = [
  { version: 1, columns: [col('id', 1, 'integer', 23, true), col('a', 2, 'text', 25)] },
  { version: 2, columns: [col('id', 1, 'integer', 23, true), col('b', 2, 'text', 25)] }, // RENAME a TO b
  { version: 3, columns: [col('id', 1, 'integer', 23, true), col('c', 2, 'text', 25)] }, // RENAME b TO c
];
let recorded = 2;
const definitions: DefinitionLookup = { history: async () => HISTORY.filter((d) => d.version <= recorded) };


describe('red team: schema evolution racing across apply lanes', () => {
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

  it('applies lane A (v2) and lane B (v3) of one batch', async () => {
    const sink = new PostgresSink({ url, stateSchema: 'syncline', deleteMode: 'hard', versionGate: true, applyLanes: 2, evolution: { mode: 'full', dropColumns: 'keep', definitions } });
    await sink.prepare();
    try {
      await sink.apply([insertOfT(0x1000n, 1, { id: '1', b: 'one' }, 2)], new Map(), 'g'); // the target follows v2
      recorded = 3;
      const laneA = sink.apply([insertOfT(0x2000n, 2, { id: '2', b: 'two' }, 2)], new Map([[0, 1n]]), 'g');
      const laneB = sink.apply([insertOfT(0x3000n, 3, { id: '3', c: 'three' }, 3)], new Map([[1, 1n]]), 'g');
      const results = await Promise.allSettled([laneA, laneB]);
      expect(results.map((r) => (r.status === 'rejected' ? String(r.reason) : 'ok'))).toEqual(['ok', 'ok']);
    } finally {
      await sink.close();
    }
    expect((await client.query('SELECT id, c FROM t ORDER BY id')).rows).toEqual([
      { id: 1, c: 'one' },
      { id: 2, c: 'two' },
      { id: 3, c: 'three' },
    ]);
  });
});
