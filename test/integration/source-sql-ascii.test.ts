import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runPipeline } from '../../src/api/run-pipeline.js';
import { loadConfigFile } from '../../src/config/load.js';
import { ensureBuilt, runCli } from '../helpers/cli.js';
import { freshDatabase, machinePg15, uniqueName, testLogger } from '../helpers/postgres.js';

/**
 * A SQL_ASCII source database holds bytes unconverted; a value that is not UTF-8 cannot be
 * sent by the walsender to capture (which reads UTF-8), and every start stops at that change.
 * Before, capture failed with the server's bare "invalid byte sequence" and doctor said ready:
 * now doctor warns about the encoding and capture says what happened, that nothing after it is
 * lost, and the way out (correct the value, resync --force, repair).
 */
describe('a SQL_ASCII source with a value that is not UTF-8', () => {
  const slot = uniqueName('sqlascii');
  let dir: string;
  let configFile: string;
  let admin: pg.Client;
  let source: pg.Client;

  beforeAll(async () => {
    ensureBuilt();
    const server = await machinePg15();
    dir = await mkdtemp(path.join(os.tmpdir(), 'sqlascii-'));
    admin = new pg.Client({ connectionString: server.url('postgres') });
    await admin.connect();
    const sourceUrl = await freshDatabase(server, 'sqlascii_src', 'SQL_ASCII');
    source = new pg.Client({ connectionString: sourceUrl });
    await source.connect();
    await source.query('CREATE TABLE t (id int PRIMARY KEY, v text)');
    const targetUrl = await freshDatabase(server, 'sqlascii_tgt');
    configFile = path.join(dir, 'sync.yaml');
    await writeFile(
      configFile,
      `source:
  url: ${sourceUrl}
  slots: [{ name: ${slot}, publication: sqlascii_pub, tables: [t] }]
stream: { path: ${path.join(dir, 'stream')}, partitions: 2 }
consumer: { group_id: ascii }
sink: { url: ${targetUrl} }
monitoring: { enabled: false }
`,
    );
  }, 180_000);

  afterAll(async () => {
    await source?.end();
    await admin?.query(`SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1`, [slot]).catch(() => undefined);
    await admin?.end();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('doctor warns about the encoding, and capture stops with the way out', async () => {
    const doctor = await runCli('doctor', '-c', configFile);
    expect(doctor.stdout).toMatch(/warn\s+source encoding\s+the database is SQL_ASCII/);
    // The slot is made by the first start; the bad value is written after it.
    const first = new AbortController();
    const running = runPipeline(loadConfigFile(configFile), 'run', await testLogger(), first.signal);
    running.catch(() => undefined);
    const deadline = Date.now() + 30_000;
    while (Date.now() < deadline && (await admin.query('SELECT 1 FROM pg_replication_slots WHERE slot_name = $1 AND active', [slot])).rowCount === 0) {
      await new Promise((r) => setTimeout(r, 200));
    }
    try {
      await source.query(`INSERT INTO t VALUES (1, E'caf\\xe9')`);
      await expect(running).rejects.toThrow(/cannot be sent as UTF-8[\s\S]*fix: correct the value at the source/);
    } finally {
      first.abort();
      await running.catch(() => undefined);
    }
  }, 120_000);
});
