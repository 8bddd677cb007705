import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runPipeline } from '../../src/api/run-pipeline.js';
import { loadConfigFile } from '../../src/config/load.js';
import { verifyTable } from '../../src/verify/compare.js';
import { openVerifyTarget } from '../../src/verify/targets/open.js';
import { freshMysqlDatabase } from '../helpers/mysql.js';
import { ensureBuilt, runCli } from '../helpers/cli.js';
import { freshDatabase, machinePg15, waitFor, slotStreaming, uniqueName, testLogger } from '../helpers/postgres.js';

/**
 * red18: a LATIN1 source database, a UTF8 target. Replication is exact (the walsender
 * converts to the connection's UTF8, and the target holds 'café' as the source does), but
 * `syncline verify` digests each row with md5 of its text *in each database's encoding*
 * (shape.ts: md5(ROW(...)::text)), so every row with a non-ASCII character is reported as
 * different (exit 1), and `syncline repair` re-reads them and ends with "2 row(s) still
 * differ (concurrent changes, or apply is behind)", exit 1, for rows that are identical.
 * Found by hand with real processes (syncline run, verify, repair).
 *
 * Promise (DESIGN.md 5): verify names the keys that differ; here it named keys that do not.
 * Now rows are hashed as the UTF-8 bytes of their text when the two servers' encodings
 * differ (shape.utf8Bytes): the same text is identical, and a real difference is still found
 * and repaired.
 */
describe('verify: a LATIN1 source and a UTF8 target holding the same text', () => {
  const slot = uniqueName('red18_enc');
  let dir: string;
  let configFile: string;
  let source: pg.Client;
  let target: pg.Client;

  beforeAll(async () => {
    ensureBuilt();
    const server = await machinePg15();
    dir = await mkdtemp(path.join(os.tmpdir(), 'red18-enc-'));
    const sourceUrl = await freshDatabase(server, 'red18_enc_src', 'LATIN1');
    const targetUrl = await freshDatabase(server, 'red18_enc_tgt');
    source = new pg.Client({ connectionString: sourceUrl });
    target = new pg.Client({ connectionString: targetUrl });
    await source.connect();
    await target.connect();
    await source.query('CREATE TABLE e (id int PRIMARY KEY, v text)');
    await target.query('CREATE TABLE e (id int PRIMARY KEY, v text)');
    configFile = path.join(dir, 'sync.yaml');
    await writeFile(
      configFile,
      `source:
  url: ${sourceUrl}
  slots: [{ name: ${slot}, publication: red18_enc_pub, tables: [e] }]
stream: { path: ${path.join(dir, 'stream')}, partitions: 2 }
consumer: { group_id: enc }
sink: { url: ${targetUrl} }
monitoring: { enabled: false }
`,
    );
  }, 180_000);

  afterAll(async () => {
    await source?.end();
    await target?.end();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('reports no drift for rows that are the same text', async () => {
    const ctl = new AbortController();
    const running = runPipeline(loadConfigFile(configFile), 'run', await testLogger(), ctl.signal);
    let failure: unknown;
    running.catch((err: unknown) => (failure = err));
    try {
      await waitFor('slot streaming', async () => await slotStreaming(source, slot), 30_000);
      await source.query(`INSERT INTO e VALUES (1, 'café'), (2, 'plain')`);
      await waitFor('rows applied', async () => (await target.query('SELECT count(*)::int AS n FROM e')).rows[0]?.n === 2, 30_000);
      // The target holds exactly the source's text (both read through UTF8 connections).
      expect((await target.query('SELECT v FROM e ORDER BY id')).rows).toEqual((await source.query('SELECT v FROM e ORDER BY id')).rows);
      const verify = await runCli('verify', '-c', configFile, '--json', '--lag-timeout', '20s');
      expect(failure).toBeUndefined();
      expect({ code: verify.code, stdout: verify.stdout }).toEqual({ code: 0, stdout: expect.any(String) as unknown });
      // A real difference in a non-ASCII value is still named, and repair mends it.
      await target.query(`UPDATE e SET v = 'cafè' WHERE id = 1`);
      const drift = await runCli('verify', '-c', configFile, '--json', '--lag-timeout', '20s');
      expect(drift.code).toBe(1);
      expect((JSON.parse(drift.stdout) as { tables: { different: string[] }[] }).tables[0]?.different).toEqual(['["1"]']);
      const repair = await runCli('repair', '-c', configFile, '--json', '--timeout', '30s');
      expect(repair.code).toBe(0);
      await waitFor('repaired', async () => (await target.query(`SELECT v FROM e WHERE id = 1`)).rows[0]?.v === 'café', 30_000);
      expect((await runCli('verify', '-c', configFile, '--json', '--lag-timeout', '20s')).code).toBe(0);
    } finally {
      ctl.abort();
      await running.catch(() => undefined);
    }
  }, 120_000);

  it('compares a LATIN1 source with a mysql target by the UTF-8 text (digests computed in Node)', async () => {
    await source.query(`CREATE TABLE m (id int PRIMARY KEY, v text); INSERT INTO m VALUES (1, 'café'), (2, 'naïve'), (3, 'plain')`);
    const db = await freshMysqlDatabase(uniqueName('red18_enc_my'));
    try {
      await db.admin.query('CREATE TABLE m (id INT PRIMARY KEY, v TEXT)');
      await db.admin.query(`INSERT INTO m VALUES (1, 'café'), (2, 'naive'), (3, 'plain')`);
      const verifyTarget = await openVerifyTarget('mysql', db.url);
      try {
        const r = await verifyTable([{ source, target: verifyTarget }], { schema: 'public', table: 'm' }, undefined);
        expect(r).toMatchObject({ sourceRows: 3, targetRows: 3, differing: 1, different: ['["2"]'] });
      } finally {
        await verifyTarget.close();
      }
    } finally {
      await db.drop();
    }
  }, 60_000);
});
