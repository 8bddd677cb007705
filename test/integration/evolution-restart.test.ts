/**
 * RED TEAM: a change of a table's first definition (_schema_version 1) that reaches a fresh
 * apply process after the target was already evolved past it (renamed column) is not
 * presented in the newest definition's terms: SchemaEvolver.prepare skips tables whose
 * changes are all version 1 when it knows no history yet, so the old column name reaches
 * the target and the table is held (TABLE_BLOCKED) for as long as no newer change of the
 * table arrives to load the history; the held retry fails the same way.
 *
 * How it happens in a pipeline: apply lanes commit partitions independently, so a kill -9
 * between two lanes' commits leaves partition 1's v2 change applied (the target renamed) and
 * partition 0's older v1 change to re-read after the restart, alone in its batch. (Also
 * possible with one lane when a poll returns one partition's records before another's.)
 */
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { DefinitionLookup, TableDefinition } from '../../src/core/schema-evolution.js';
import { PostgresSink } from '../../src/sink/postgres/postgres-sink.js';
import { freshDatabase, machinePg15, PG15_URL } from '../helpers/postgres.js';
import { dropDatabases } from '../helpers/many-writers.js';
import { col, insertOfT } from '../helpers/evolution-fixtures.js';

const DB = `syncline_rt_evolve_restart_${process.pid}`;

const HISTORY: TableDefinition[] = [
  { version: 1, columns: [col('id', 1, 'integer', 23, true), col('a', 2, 'text', 25)] },
  { version: 2, columns: [col('id', 1, 'integer', 23, true), col('b', 2, 'text', 25)] }, // RENAME a TO b
];
const definitions: DefinitionLookup = {
  history: async (_s, _t, version) => HISTORY.filter((d) => d.version <= Math.max(version, 2)),
};


describe('red team: schema evolution after a restart', () => {
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

  it('applies a v1 change under the renamed column in a fresh process', async () => {
    const row1 = insertOfT(0x1000n, 1, { id: '1', a: 'one' }, 1); // before the rename, partition 0
    const row2 = insertOfT(0x2000n, 2, { id: '2', b: 'two' }, 2); // after it, partition 1
    const first = newSink();
    await first.prepare();
    await first.apply([row2], new Map([[1, 5n]]), 'g'); // lane of partition 1 commits; then kill -9
    await first.close();
    expect((await client.query('SELECT id, b FROM t ORDER BY id')).rows).toEqual([{ id: 2, b: 'two' }]);

    const restarted = newSink();
    await restarted.prepare();
    try {
      await restarted.apply([row1], new Map([[0, 3n]]), 'g'); // partition 0 re-read alone
    } finally {
      await restarted.close();
    }
    expect((await client.query('SELECT id, b FROM t ORDER BY id')).rows).toEqual([
      { id: 1, b: 'one' },
      { id: 2, b: 'two' },
    ]);
  });
});
