/**
 * A table whose schema and name need quotes in SQL (`"My Schema"."Order Items"`), named on the
 * command line as syncline prints it (`My Schema.Order Items`: dlq list, status, verify,
 * metric labels, alerts) and in SQL form, by every command that takes a table: dlq
 * list/replay/purge, verify, repair, snapshot, schemas. PostgreSQL 15, embedded stream,
 * postgres sink, dead letters in the target's table.
 */
import { spawnSync } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runPipeline } from '../../src/api/run-pipeline.js';
import { openDeadLetterQueue } from '../../src/compose/dead-letters.js';
import { loadConfigFile } from '../../src/config/load.js';
import type { DeadLetterQueue } from '../../src/dlq/dead-letter-queue.js';
import type { DeadLetterSummary } from '../../src/dlq/summary.js';
import { silentLogger } from '../../src/log/logger.js';
import { Metrics } from '../../src/metrics/metrics.js';
import { CLI, ensureBuilt, ROOT } from '../helpers/cli.js';
import { machinePg15, slotStreaming, sourceAndTarget, uniqueName, waitFor } from '../helpers/postgres.js';
import { requireListening } from '../contract/broker-check.js';

const PRINTED = 'My Schema.Order Items';
const SQL = '"My Schema"."Order Items"';

// Both dead-letter stores: the table next to the sink, and the Kafka topic (filtered in memory).
for (const store of ['table', 'topic'] as const) {
describe(`table names on the command line: as printed and as SQL (dead letters in the ${store})`, () => {
  const prefix = `syncline_table_args${store === 'topic' ? '_k' : ''}`;
  const slot = uniqueName(prefix);
  let dir: string;
  let configFile: string;
  let source: pg.Client;
  let target: pg.Client;
  let queue: DeadLetterQueue;

  beforeAll(async () => {
    ensureBuilt();
    if (store === 'topic') await requireListening('127.0.0.1', 9092, 'the Kafka dead-letter topic test needs a broker: bash scripts/kafka.sh start');
    dir = await mkdtemp(path.join(os.tmpdir(), 'syncline-table-args-'));
    const pair = await sourceAndTarget(await machinePg15(), prefix);
    ({ source, target } = pair);
    await source.query(`CREATE SCHEMA "My Schema"; CREATE TABLE ${SQL} (id integer PRIMARY KEY, v integer NOT NULL)`);
    // The target refuses v = 13: those changes are dead-lettered, the others applied.
    await target.query(`CREATE SCHEMA "My Schema"; CREATE TABLE ${SQL} (id integer PRIMARY KEY, v integer NOT NULL CONSTRAINT no_thirteen CHECK (v <> 13))`);
    configFile = path.join(dir, 'sync.yaml');
    await writeFile(
      configFile,
      `source:
  url: ${pair.sourceUrl}
  slots: [{ name: ${slot}, publication: ${prefix}_pub, tables: ['${SQL}'] }]
  snapshot: never
stream: ${store === 'topic' ? `{ broker: kafka, brokers: ['127.0.0.1:9092'], topic: ${prefix}_${process.pid}, partitions: 2 }` : `{ path: ${path.join(dir, 'stream')}, partitions: 2 }`}
consumer: { group_id: ${slot}, retry: { backoff_base_ms: 10, backoff_max_ms: 100 } }
sink: { url: ${pair.targetUrl} }
dead_letter: { topic: ${prefix}_${process.pid}.dlq }
monitoring: { enabled: false }
`,
    );
    queue = openDeadLetterQueue(loadConfigFile(configFile)) as DeadLetterQueue;
    await queue.prepare();
  }, 60_000);

  afterAll(async () => {
    await queue?.close();
    await source?.query('SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1 AND NOT active', [slot]).catch(() => undefined);
    await source?.end();
    await target?.end();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  function cli(...args: string[]): { status: number | null; out: string; err: string } {
    const r = spawnSync(process.execPath, [CLI, ...args, '-c', configFile], { cwd: ROOT, encoding: 'utf8', timeout: 120_000 });
    return { status: r.status, out: r.stdout, err: r.stderr };
  }
  const listed = (...table: string[]): DeadLetterSummary[] => {
    const r = cli('dlq', 'list', ...table.flatMap((t) => ['--table', t]), '--json');
    expect(r.status, r.err).toBe(0);
    return JSON.parse(r.out) as DeadLetterSummary[];
  };

  it('dlq list, replay and purge find the table by the name dlq list printed and by its SQL form', async () => {
    const ctl = new AbortController();
    const running = runPipeline(loadConfigFile(configFile), 'run', silentLogger(), ctl.signal, new Metrics());
    running.catch(() => undefined);
    try {
      await waitFor('slot active', () => slotStreaming(source, slot));
      await source.query(`INSERT INTO ${SQL} SELECT g, CASE WHEN g IN (5, 7) THEN 13 ELSE g END FROM generate_series(1, 10) g`);
      await waitFor('8 rows applied, 2 dead-lettered', async () => (await target.query(`SELECT count(*)::int AS n FROM ${SQL}`)).rows[0]?.n === 8 && (await queue.depth()).count === 2, 30_000);
    } finally {
      ctl.abort();
      await running;
    }

    // The text form prints the table unquoted; that very text finds it again.
    const text = cli('dlq', 'list');
    expect(text.out).toContain(`#`);
    expect(text.out).toContain(` ${PRINTED} key=`);
    const all = listed();
    expect(all.map((e) => e.table)).toEqual([PRINTED, PRINTED]);
    expect(listed(PRINTED).map((e) => e.id)).toEqual(all.map((e) => e.id));
    expect(listed(SQL).map((e) => e.id)).toEqual(all.map((e) => e.id));
    // Lower case is another table, in either reading; a name that is no table matches nothing.
    expect(listed('my schema.order items')).toEqual([]);
    expect(listed('Order Items')).toEqual([]);
    // Every entry of `dlq list --json` has the same keys, whatever the filter.
    for (const e of all) expect(Object.keys(e).sort()).toEqual(['attempts', 'commit_lsn', 'error', 'error_code', 'first_failed_at', 'id', 'key', 'last_failed_at', 'op', 'seq', 'stream_offset', 'stream_partition', 'table']);

    // Fixed target: a replay by the printed name applies one...
    await target.query(`ALTER TABLE ${SQL} DROP CONSTRAINT no_thirteen`);
    const replay = cli('dlq', 'replay', '--table', PRINTED, '--limit', '1', '--json');
    expect(replay.status, replay.err).toBe(0);
    expect(JSON.parse(replay.out)).toMatchObject({ replayed: 1, failed: [], held: [], undecodable: [], limit_reached: true });
    expect((await target.query(`SELECT count(*)::int AS n FROM ${SQL}`)).rows[0]?.n).toBe(9);
    // ...and a purge by the SQL form removes the other.
    const purge = cli('dlq', 'purge', '--table', SQL, '--json');
    expect(purge.status, purge.err).toBe(0);
    expect(JSON.parse(purge.out)).toEqual({ purged: 1 });
    expect(listed()).toEqual([]);
    // An empty queue says so; a filter that matches nothing says that, not that the queue is empty.
    expect(cli('dlq', 'list').out).toBe('dead-letter queue is empty\n');
    expect(cli('dlq', 'list', '--table', 'nothing_here').out).toBe('no dead-lettered change matches this filter\n');
  }, 120_000);

  // Not about the dead-letter store, but run with both (no test is skipped in CI).
  it('verify, repair, schemas and snapshot take both forms too', async () => {
    // Source and target agree once the purged row is gone from the source too (nothing runs now:
    // verify does not wait for the pipeline).
    const left = (await target.query<{ id: number }>(`SELECT id FROM ${SQL}`)).rows.map((r) => r.id);
    await source.query(`DELETE FROM ${SQL} WHERE NOT (id = ANY($1::int[]))`, [left]);
    for (const name of [PRINTED, SQL]) {
      const verify = cli('verify', '--table', name, '--no-wait', '--json');
      expect(verify.status, `${name}: ${verify.err}`).toBe(0);
      expect(JSON.stringify(JSON.parse(verify.out))).toContain(PRINTED);
      const repair = cli('repair', '--table', name, '--dry-run', '--no-wait', '--json');
      expect(repair.status, `${name}: ${repair.err}`).toBe(0);

      const schemas = cli('schemas', '--table', name, '--json');
      expect(schemas.status, schemas.err).toBe(0);
      const versions = JSON.parse(schemas.out) as { table: string; version: number }[];
      expect(versions.map((v) => [v.table, v.version])).toEqual([[PRINTED, 1]]);
    }

    const snapshot = cli('snapshot', PRINTED, '--no-wait', '--json');
    expect(snapshot.status, snapshot.err).toBe(0);
    const { requested } = JSON.parse(snapshot.out) as { requested: string[] };
    expect(requested).toHaveLength(1);
    const jobs = JSON.parse(cli('snapshot', '--list', '--json').out) as { id: string; table: string }[];
    expect(jobs.filter((j) => requested.includes(j.id)).map((j) => j.table)).toEqual([PRINTED]);
  }, 120_000);
});
}
