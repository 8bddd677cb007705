import { mkdtemp, readdir, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runPipeline } from '../../src/api/run-pipeline.js';
import { parseConfig } from '../../src/config/load.js';
import { silentLogger } from '../../src/log/logger.js';
import { Metrics } from '../../src/metrics/metrics.js';
import { compareTable } from '../../src/verify/compare.js';
import { embeddedPg17, machinePg15, waitFor, type PgServer, slotStreaming, sourceAndTarget, uniqueName } from '../helpers/postgres.js';

const SLOT = uniqueName('syncline_big');

for (const [label, startServer] of [
  ['PostgreSQL 15', machinePg15],
  ['PostgreSQL 17', embeddedPg17],
] as const) {
  describe(`streamed in-progress transactions on ${label}`, () => {
    let server: PgServer;
    let dir: string;
    let source: pg.Client;
    let target: pg.Client;
    let stop: () => Promise<void>;
    const metrics = new Metrics();

    beforeAll(async () => {
      server = await startServer();
      dir = await mkdtemp(path.join(os.tmpdir(), 'syncline-big-'));
      const pair = await sourceAndTarget(server, 'syncline_big');
      ({ source, target } = pair);
      const { sourceUrl, targetUrl } = pair;
      const ddl = 'CREATE TABLE big (id integer PRIMARY KEY, payload text NOT NULL, n integer)';
      await source.query(ddl);
      await target.query(ddl);
      // 64kB of decoding memory: every transaction of a few hundred rows is streamed to
      // syncline before its commit (protocol >= 2), exercising the spill path.
      const config = parseConfig(
        `source:
  url: ${sourceUrl}
  slots: [{ name: ${SLOT}, publication: syncline_big_pub, tables: [big] }]
  logical_decoding_work_mem: 64kB
  spill_dir: ${path.join(dir, 'spill')}
stream: { path: ${path.join(dir, 'stream')}, partitions: 3 }
consumer: { group_id: big }
sink: { url: ${targetUrl} }
monitoring: { enabled: false }
`,
        {},
      );
      const ctl = new AbortController();
      const running = runPipeline(config, 'run', silentLogger(), ctl.signal, metrics);
      running.catch(() => undefined);
      stop = async () => {
        ctl.abort();
        await running;
      };
      await waitFor('slot active', async () => (await slotStreaming(source, SLOT)));
    }, 120_000);

    afterAll(async () => {
      await stop?.();
      await source?.end();
      await target?.end();
      await server?.stop();
      if (dir) await rm(dir, { recursive: true, force: true });
    });

    const converged = async (): Promise<boolean> => (await compareTable(source, target, { schema: 'public', table: 'big' })).differing === 0;

    it('a 50,000-row transaction streamed before its commit arrives exactly', async () => {
      await source.query("INSERT INTO big SELECT g, repeat(md5(g::text), 3), g FROM generate_series(1, 50000) g");
      await waitFor('50,000 rows at the target', async () => (await target.query('SELECT count(*)::int AS n FROM big')).rows[0]?.n === 50000, 60_000, 200);
      expect(await converged()).toBe(true);
      expect(await readdir(path.join(dir, 'spill'))).toEqual([]);
    });

    it('an aborted streamed transaction leaves no trace at the target', async () => {
      await source.query('BEGIN');
      await source.query("INSERT INTO big SELECT g, repeat('a', 100), 0 FROM generate_series(100001, 120000) g");
      await source.query('UPDATE big SET n = -1 WHERE id <= 10000');
      await source.query('ROLLBACK');
      // A committed marker after the abort: once it is applied, the abort has been processed.
      await source.query("INSERT INTO big VALUES (999999, 'marker', 1)");
      await waitFor('the marker', async () => (await target.query('SELECT count(*)::int AS n FROM big WHERE id = 999999')).rows[0]?.n === 1, 60_000, 200);
      expect((await target.query('SELECT count(*)::int AS n FROM big WHERE id > 100000 AND id < 999999 OR n = -1')).rows[0]?.n).toBe(0);
      expect(await converged()).toBe(true);
    });

    it('a rolled-back subtransaction inside a streamed transaction is dropped, the rest applied', async () => {
      await source.query('BEGIN');
      await source.query("INSERT INTO big SELECT g, 'kept-1', 1 FROM generate_series(200001, 205000) g");
      await source.query('SAVEPOINT s1');
      await source.query("INSERT INTO big SELECT g, 'dropped', 2 FROM generate_series(205001, 215000) g");
      await source.query("UPDATE big SET payload = 'dropped' WHERE id <= 5000");
      await source.query('ROLLBACK TO SAVEPOINT s1');
      await source.query('SAVEPOINT s2');
      await source.query("INSERT INTO big SELECT g, 'kept-2', 3 FROM generate_series(215001, 220000) g");
      await source.query('RELEASE SAVEPOINT s2');
      await source.query('COMMIT');
      await waitFor('target equals source', converged, 60_000, 300);
      expect((await target.query("SELECT count(*)::int AS n FROM big WHERE payload = 'dropped'")).rows[0]?.n).toBe(0);
      expect((await target.query('SELECT count(*)::int AS n FROM big WHERE id > 200000 AND id <= 220000')).rows[0]?.n).toBe(10000);
    });
  });
}
