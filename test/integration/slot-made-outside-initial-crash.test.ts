/**
 * A slot made outside syncline, first start under `source.snapshot: initial` (01a9b28: such
 * a slot is read whole). Its initial snapshot jobs were queued one statement per table, and a
 * slot with any job is taken as one syncline queued its jobs for (anyJob): a first start
 * killed (-9) between two of those statements left the rest of the tables without a job, and
 * the next start neither queued them (the slot has jobs) nor skipped them. A table left so
 * was read only if it joined the publication by name and changed later (the first-definition
 * rule); one never changed, or met through `FOR ALL TABLES` or a schema, never reached the
 * target: its rows were lost, silently. (A slot syncline makes has its jobs queued before the
 * slot exists, so a start that ends between them queues the rest at the next start.)
 * Found by red17b: 300 tables of a `FOR ALL TABLES` publication, kill -9 once the first
 * jobs are in: 5 tables at the target, 295 never (5 tables with a job).
 */
import { once } from 'node:events';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ensureBuilt } from '../helpers/cli.js';
import { startCli } from '../helpers/cli-process.js';
import { pipelineFixture, type PipelineFixture } from '../helpers/pipeline-fixture.js';
import { uniqueName, waitFor } from '../helpers/postgres.js';

const TABLES = 300;

describe('a slot made outside syncline: a first start killed while it queued the initial snapshot', () => {
  const name = uniqueName('red17b_premade_initial');
  let f: PipelineFixture;
  let yaml: string;
  let configFile: string;

  beforeAll(async () => {
    ensureBuilt();
    f = await pipelineFixture(name);
    const names = Array.from({ length: TABLES }, (_, i) => `t${i + 1}`);
    await f.source.query(names.map((t) => `CREATE TABLE ${t} (id int PRIMARY KEY, v text NOT NULL); INSERT INTO ${t} VALUES (1, '${t}');`).join('\n'));
    await f.source.query(`CREATE PUBLICATION ${name}_pub FOR ALL TABLES`);
    await f.source.query("SELECT pg_create_logical_replication_slot($1, 'pgoutput')", [name]);
    yaml = await f.yaml({ sink: 'create_tables: true' });
    configFile = path.join(f.dir, 'config.yaml');
    await writeFile(configFile, yaml);
  }, 120_000);

  afterAll(async () => {
    await f?.close();
  }, 60_000);

  it('reads every table at the next start', async () => {
    const jobCount = async (): Promise<number> =>
      Number((await f.source.query('SELECT count(*) AS n FROM syncline.snapshots WHERE slot_name = $1', [name]).catch(() => ({ rows: [{ n: 0 }] }))).rows[0]?.n);
    const first = startCli(path.join(f.dir, 'first.log'), 'run', '-c', configFile);
    const exited = once(first, 'exit');
    let atKill = 0;
    try {
      await waitFor('the first jobs queued', async () => (atKill = await jobCount()) > 0, 60_000, 2);
    } finally {
      first.kill('SIGKILL');
      await exited;
    }
    // Killed as soon as a job is in: before the fix, between two of the job statements (5 of
    // 300 here); with all jobs queued in one statement, none or all are in.
    const afterKill = await jobCount();
    expect(afterKill).toBeGreaterThanOrEqual(atKill);

    const running = await f.start(yaml);
    const atTarget = async (): Promise<number> =>
      Number((await f.target.query("SELECT count(*) AS n FROM pg_tables WHERE schemaname = 'public' AND tablename ~ '^t[0-9]+$'")).rows[0]?.n);
    const tablesWithJobs = async (): Promise<number> =>
      Number((await f.source.query("SELECT count(DISTINCT table_name) AS n FROM syncline.snapshots WHERE slot_name = $1 AND table_name ~ '^t[0-9]+$'", [name])).rows[0]?.n);
    try {
      await waitFor('no job unfinished', async () => Number((await f.source.query("SELECT count(*) AS n FROM syncline.snapshots WHERE slot_name = $1 AND status IN ('pending', 'running')", [name])).rows[0]?.n) === 0, 120_000, 250);
      await waitFor(`all ${TABLES} tables at the target`, async () => (await atTarget()) === TABLES, 30_000, 250,
        async () => `${await atTarget()} tables at the target; killed with ${afterKill} jobs queued; ${await tablesWithJobs()} tables with a job now`);
    } finally {
      await running.stop();
    }
    expect(await tablesWithJobs()).toBe(TABLES);
  }, 300_000);
});
