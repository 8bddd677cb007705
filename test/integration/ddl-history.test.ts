/**
 * The red-team repro of issue 12 part 3: a definition capture records after later DDL already
 * ran (capture stopped, DDL at the source, capture started again) must not be matched to the
 * wrong column at the sink. Without the DDL history (src/source/ddl-history.ts) capture took
 * attnums from the catalog as it is when recording, and the sink guessed:
 * - `DROP COLUMN a; ADD COLUMN b int` (a was int, the table's last column) was taken for a
 *   rename a → b: the target kept a's old values in b, where the source has NULL;
 * - `RENAME COLUMN a TO x; ADD COLUMN a int` gave the old `a` the new a's attnum: x was added
 *   empty and a kept the old values.
 * With the history, every definition gets the attnums it had at its LSN and the target
 * follows exactly: row by row equal to the source, for drop_columns drop and keep, on
 * PostgreSQL 15 (machine) and 17 (embedded).
 */
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runPipeline } from '../../src/api/run-pipeline.js';
import { parseConfig } from '../../src/config/load.js';
import { embeddedPg17, machinePg15, slotStreaming, sourceAndTarget, testLogger, uniqueName, waitFor, type PgServer } from '../helpers/postgres.js';

// `a` is the last column: its position and type are what the sink's old guess matched on.
const TABLE = '(id integer PRIMARY KEY, note text, a integer)';

const servers: [string, () => Promise<PgServer>][] = [
  ['PostgreSQL 15', machinePg15],
  ['PostgreSQL 17', () => embeddedPg17()],
];

async function rowsOf(client: pg.Client, table: string, columns: readonly string[]): Promise<string> {
  const { rows } = await client.query({ text: `SELECT ${columns.map((c) => `${pg.escapeIdentifier(c)}::text`).join(', ')} FROM ${table} t ORDER BY t.id`, rowMode: 'array' });
  return JSON.stringify(rows);
}

async function columnsOf(client: pg.Client, table: string): Promise<string[]> {
  const { rows } = await client.query<{ name: string }>(
    `SELECT attname AS name FROM pg_attribute WHERE attrelid = to_regclass($1) AND attnum > 0 AND NOT attisdropped AND attname NOT LIKE '\\_syncline%' ORDER BY attnum`,
    [table],
  );
  return rows.map((r) => r.name);
}

describe.each(servers)('DDL history on %s: definitions recorded after later DDL', (_name, start) => {
  let server: PgServer;
  let dir: string;
  const opened: { source: pg.Client; target: pg.Client }[] = [];

  beforeAll(async () => {
    server = await start();
    dir = await mkdtemp(path.join(os.tmpdir(), 'syncline-ddl-history-'));
  }, 180_000);

  afterAll(async () => {
    for (const { source, target } of opened) {
      await source.end().catch(() => undefined);
      await target.end().catch(() => undefined);
    }
    if (dir) await rm(dir, { recursive: true, force: true });
    await server?.stop();
  });

  it.each(['drop', 'keep'] as const)('drop_columns %s: the target follows DROP a; ADD b and RENAME a TO x; ADD a row by row', { timeout: 180_000 }, async (dropColumns) => {
    const slot = uniqueName(`syncline_ddlh_${dropColumns}`);
    const pair = await sourceAndTarget(server, slot);
    const { source, target } = pair;
    opened.push({ source, target });
    await source.query(`CREATE TABLE t_drop ${TABLE}; CREATE TABLE t_rename ${TABLE}`);
    await target.query(`CREATE TABLE t_drop ${TABLE}; CREATE TABLE t_rename ${TABLE}`);
    const config = parseConfig(
      `source:
  url: ${pair.sourceUrl}
  slots: [{ name: ${slot}, publication: ${slot}_pub, tables: [t_drop, t_rename] }]
  snapshot: never # the tables are empty at the first start; a first snapshot still pending at the second would read them after the DDL and bypass the history under test
stream: { path: ${path.join(dir, slot)}, partitions: 2 }
consumer: { group_id: ddlh, retry: { backoff_base_ms: 20, backoff_max_ms: 200, held_table_interval_ms: 200 } }
sink:
  url: ${pair.targetUrl}
  schema_evolution: full
  drop_columns: ${dropColumns}
monitoring: { enabled: false }
dead_letter: { enabled: false }
`,
      {},
    );
    const log = await testLogger();
    const run = async (): Promise<() => Promise<void>> => {
      const ctl = new AbortController();
      const running = runPipeline(config, 'run', log, ctl.signal);
      running.catch(() => undefined);
      await waitFor('streaming', () => slotStreaming(source, slot), 60_000);
      return async () => {
        ctl.abort();
        let timer: NodeJS.Timeout | undefined;
        const late = new Promise<never>((_, reject) => {
          timer = setTimeout(() => reject(new Error('the pipeline did not stop within 30 s of its abort')), 30_000);
        });
        await Promise.race([running.catch(() => undefined), late]).finally(() => clearTimeout(timer));
      };
    };

    // Capture starts (installing the history) and stops before it sees any change of the tables.
    let stop = await run();
    await stop();
    await waitFor('slot released', async () => !(await slotStreaming(source, slot)), 30_000);

    // A statement that waits (a lock) fails with its own name instead of the test's timeout.
    await source.query(`SET statement_timeout = '20s'`);
    for (const t of ['t_drop', 't_rename']) await source.query(`INSERT INTO ${t} SELECT g, 'n' || g, g * 10 FROM generate_series(1, 10) g`);
    await source.query('ALTER TABLE t_drop DROP COLUMN a');
    await source.query('ALTER TABLE t_drop ADD COLUMN b integer');
    await source.query(`INSERT INTO t_drop SELECT g, 'n' || g, g * 100 FROM generate_series(11, 20) g`);
    await source.query(`UPDATE t_drop SET note = 'u' || id WHERE id IN (2, 4, 12)`);
    await source.query('ALTER TABLE t_rename RENAME COLUMN a TO x');
    await source.query('ALTER TABLE t_rename ADD COLUMN a integer');
    await source.query(`INSERT INTO t_rename SELECT g, 'n' || g, g * 10, g * 100 FROM generate_series(11, 20) g`);
    await source.query(`UPDATE t_rename SET note = 'u' || id WHERE id IN (2, 4, 12)`);

    stop = await run();
    try {
      const checks: [string, string[]][] = [
        ['t_drop', ['id', 'note', 'b']],
        ['t_rename', ['id', 'note', 'x', 'a']],
      ];
      for (const [t, cols] of checks) {
        const expected = await rowsOf(source, t, cols);
        let last = '';
        await waitFor(
          `${t}: target equals source`,
          async () => {
            try {
              last = await rowsOf(target, t, cols);
              return last === expected;
            } catch (err) {
              last = (err as Error).message;
              return false; // not evolved yet
            }
          },
          60_000,
          200,
        ).catch(async (err: unknown) => {
          const versions = await source.query(`SELECT table_name, version, first_lsn::text, columns::text FROM syncline.schema_versions ORDER BY 1, 2`).catch((e: Error) => ({ rows: e.message }));
          const history = await source.query(`SELECT table_name, lsn::text, columns::text FROM syncline.ddl_history ORDER BY id`).catch((e: Error) => ({ rows: e.message }));
          throw new Error(`${(err as Error).message}: source ${expected}, target ${last}; versions ${JSON.stringify(versions.rows)}; history ${JSON.stringify(history.rows)}`);
        });
      }
      // b is NULL for the old rows, as at the source; x holds the old a values, a the new ones.
      expect(await rowsOf(target, 't_drop', ['b'])).toBe(JSON.stringify([...Array.from({ length: 10 }, () => [null]), ...Array.from({ length: 10 }, (_, i) => [String((i + 11) * 100)])]));
      expect(await rowsOf(target, 't_rename', ['x'])).toBe(JSON.stringify(Array.from({ length: 20 }, (_, i) => [String((i + 1) * 10)])));
      expect(await columnsOf(target, 't_drop')).toEqual(dropColumns === 'drop' ? ['id', 'note', 'b'] : ['id', 'note', 'a', 'b']);
      expect(await columnsOf(target, 't_rename')).toEqual(['id', 'note', 'x', 'a']);
      // The history was what told the columns apart: each table's entries, exact attnums.
      const { rows } = await source.query<{ columns: { name: string; attnum: number }[] }>(
        `SELECT columns FROM syncline.ddl_history WHERE table_name = 't_rename' ORDER BY lsn DESC, id DESC LIMIT 1`,
      );
      expect(rows[0]?.columns.map((c) => [c.name, c.attnum])).toEqual([['id', 1], ['note', 2], ['x', 3], ['a', 4]]);
    } finally {
      await stop();
      await source.query(`SELECT pg_drop_replication_slot($1) FROM pg_replication_slots WHERE slot_name = $1 AND NOT active`, [slot]).catch(() => undefined);
    }
  });
});
