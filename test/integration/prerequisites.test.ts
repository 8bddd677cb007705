import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runPipeline } from '../../src/api/run-pipeline.js';
import { parseConfig } from '../../src/config/load.js';
import { PrerequisiteError } from '../../src/core/errors.js';
import { silentLogger } from '../../src/log/logger.js';
import { embeddedPg17, freshDatabase, machinePg15, type PgServer, uniqueName } from '../helpers/postgres.js';

const SLOT = uniqueName('syncline_prereq');

function config(sourceUrl: string, targetUrl: string, extra = ''): ReturnType<typeof parseConfig> {
  return parseConfig(
    `source:
  url: ${sourceUrl}
  slots: [{ name: ${SLOT}, publication: syncline_prereq_pub, tables: [present${extra}] }]
stream: { path: /tmp/syncline-prereq-stream-${process.pid} }
sink: { url: ${targetUrl} }
monitoring: { enabled: false }
`,
    {},
  );
}

describe('capture refuses to start without its prerequisites, saying how to fix them', () => {
  let replica: PgServer;
  let pg15: PgServer;

  beforeAll(async () => {
    replica = await embeddedPg17('replica');
    pg15 = await machinePg15();
  }, 120_000);
  afterAll(async () => {
    await replica?.stop();
  });

  it('wal_level=replica: a PrerequisiteError naming wal_level and the fix', async () => {
    const url = await freshDatabase(replica, 'prereq');
    const c = new pg.Client({ connectionString: url });
    await c.connect();
    await c.query('CREATE TABLE present (id int PRIMARY KEY)');
    await c.end();
    const err = await runPipeline(config(url, url), 'capture', silentLogger()).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(PrerequisiteError);
    expect((err as Error).message).toMatch(/wal_level is 'replica'/);
    expect((err as PrerequisiteError).fix).toMatch(/ALTER SYSTEM SET wal_level = logical/);
  });

  it('a configured table that does not exist is named', async () => {
    const url = await freshDatabase(pg15, 'syncline_prereq');
    const c = new pg.Client({ connectionString: url });
    await c.connect();
    await c.query('CREATE TABLE present (id int PRIMARY KEY)');
    await c.end();
    const err = await runPipeline(config(url, url, `, '"Missing Table"'`), 'capture', silentLogger()).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(PrerequisiteError);
    expect((err as Error).message).toMatch(/source table public\.Missing Table does not exist/);
  });

  it('an unreachable source fails with a clear error that hides the password', async () => {
    const err = await runPipeline(config('postgres://u:secret@127.0.0.1:1/db', 'postgres://127.0.0.1:1/db'), 'capture', silentLogger()).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(Error);
    expect((err as Error).message).toMatch(/ECONNREFUSED|connect/);
    expect((err as Error).message).not.toContain('secret');
  });
});
