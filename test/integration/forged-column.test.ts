/**
 * A record in the stream that capture did not write, naming a column its table never had
 * (another producer's, a hand-made one), with a `_schema_version` capture did record. Found
 * by hand in session 17 with a Kafka topic: it held the whole table (SCHEMA_MISMATCH "lacks
 * column(s) nope", as a real new column under `schema_evolution: none` must), and every
 * later real change of the table waited behind a record no fix of the target could apply.
 * A column no recorded definition of the table has is that record's error alone:
 * EVENT_INVALID, dead-lettered (its row waits behind it, as behind any poison), and the
 * table flows. A real column the target lacks still holds the table (held-table tests).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { partitionKeyOf, type ChangeEvent } from '../../src/core/change.js';
import { openEmbeddedStream } from '../../src/stream/embedded/embedded-stream.js';
import { pipelineFixture, type PipelineFixture } from '../helpers/pipeline-fixture.js';
import { uniqueName, waitFor } from '../helpers/postgres.js';
import path from 'node:path';

for (const evolution of ['none', 'full'] as const) {
  describe(`a record naming a column its table never had (schema_evolution: ${evolution})`, () => {
    let f: PipelineFixture;
    let yaml: string;

    beforeAll(async () => {
      f = await pipelineFixture(uniqueName(`syncline_forged_col_${evolution}`));
      await f.source.query('CREATE TABLE orders (id int PRIMARY KEY, v text NOT NULL)');
      if (evolution === 'none') await f.target.query('CREATE TABLE orders (id int PRIMARY KEY, v text NOT NULL)');
      yaml = await f.yaml({
        slot: 'tables: [orders]',
        extra: ['consumer: { retry: { backoff_base_ms: 50, backoff_max_ms: 500, held_table_interval_ms: 500 } }'],
        sink: evolution === 'full' ? 'create_tables: true, schema_evolution: full' : 'schema_evolution: none',
      });
    }, 60_000);

    afterAll(async () => {
      await f?.close();
    }, 60_000);

    it('goes to the dead-letter queue alone (EVENT_INVALID) and the table keeps flowing', async () => {
      let running = await f.start(yaml);
      try {
        await f.source.query("INSERT INTO orders SELECT i, 'a' FROM generate_series(1, 5) i");
        await waitFor('rows 1-5 at the target', async () => Number((await f.target.query('SELECT count(*) AS n FROM orders').catch(() => ({ rows: [{ n: 0 }] }))).rows[0]?.n) === 5, 60_000, 250);
      } finally {
        await running.stop();
      }
      const recorded = await f.source.query<{ version: number }>("SELECT version FROM syncline.schema_versions WHERE table_name = 'orders'");
      expect(recorded.rows.map((r) => r.version)).toEqual([1]);

      // Another producer's record: version 1 is recorded, but without a column `nope`.
      const lsn = (await f.source.query<{ lsn: string }>('SELECT pg_current_wal_lsn()::text AS lsn')).rows[0]?.lsn as string;
      const forged: ChangeEvent = {
        source: f.name, schema: 'public', table: 'orders', op: 'INSERT', lsn, commit_lsn: lsn, xid: 1, seq: 1,
        commit_ts: new Date().toISOString(), key: { id: '99' }, payload: { id: '99', v: 'forged', nope: 'x' }, _version: '1', _schema_version: 1,
      };
      const stream = await openEmbeddedStream({ path: path.join(f.dir, 'stream'), partitions: 2 });
      const producer = await stream.producer();
      await producer.publish([{ key: partitionKeyOf(forged), value: Buffer.from(JSON.stringify(forged)) }]);
      await producer.close();
      await stream.close();

      running = await f.start(yaml);
      try {
        await f.source.query("INSERT INTO orders SELECT i, 'b' FROM generate_series(6, 10) i");
        await f.source.query("UPDATE orders SET v = 'c'");
        const rows = async (): Promise<string> => JSON.stringify((await f.target.query("SELECT array_agg(id ORDER BY id) FILTER (WHERE v = 'c') AS c, array_agg(id ORDER BY id) FILTER (WHERE v <> 'c') AS other FROM orders")).rows[0]);
        const letters = async (): Promise<string> => JSON.stringify((await f.target.query('SELECT error_code, count(*)::int AS n FROM syncline.dead_letter GROUP BY 1 ORDER BY 1').catch(() => ({ rows: [] }))).rows);
        // (Its own row only: a later real change of row 99 would wait behind it, as behind any poison.)
        await waitFor('rows 1-10 at the target', async () => (await rows().catch(() => '')) === JSON.stringify({ c: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10], other: null }), 60_000, 250, async () => `${await rows()} ${await letters()}`);
        expect(JSON.parse(await letters())).toEqual([{ error_code: 'EVENT_INVALID', n: 1 }]);
        const letter = await f.target.query<{ error: string }>("SELECT error FROM syncline.dead_letter WHERE error_code = 'EVENT_INVALID'");
        expect(letter.rows[0]?.error).toMatch(/names column\(s\) nope that capture never recorded/);
      } finally {
        await running.stop();
      }
    }, 120_000);

    // The guard: a column the source really added, which the target lacks, is the table's problem.
    if (evolution === 'none') it('a real new column the target lacks still holds the table until the target has it', async () => {
      const running = await f.start(yaml);
      try {
        await f.source.query('ALTER TABLE orders ADD COLUMN w int');
        await f.source.query('INSERT INTO orders (id, v, w) VALUES (11, $1, 1)', ['d']);
        const blocked = async (): Promise<number> => Number((await f.target.query("SELECT count(*) AS n FROM syncline.dead_letter WHERE error_code = 'TABLE_BLOCKED'")).rows[0]?.n);
        await waitFor('the table held', async () => (await blocked()) > 0, 30_000, 250);
        const invalid = await f.target.query("SELECT count(*)::int AS n FROM syncline.dead_letter WHERE error_code = 'EVENT_INVALID'");
        expect(invalid.rows[0]?.n).toBe(1); // the forged record's alone
        await f.target.query('ALTER TABLE orders ADD COLUMN w int');
        await waitFor('row 11 at the target', async () => (await f.target.query('SELECT w FROM orders WHERE id = 11')).rows[0]?.w === 1, 30_000, 250);
        await waitFor('the table released', async () => (await blocked()) === 0, 30_000, 250);
      } finally {
        await running.stop();
      }
    }, 120_000);
  });
}
