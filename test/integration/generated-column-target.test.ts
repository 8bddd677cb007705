import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runPipeline } from '../../src/api/run-pipeline.js';
import { loadConfigFile } from '../../src/config/load.js';
import { ensureBuilt, runCli } from '../helpers/cli.js';
import { machinePg15, waitFor, slotStreaming, sourceAndTarget, uniqueName } from '../helpers/postgres.js';

/**
 * red18: a source table with a STORED generated column (`b int GENERATED ALWAYS AS (a * 2)
 * STORED`) and a target that has `b` as a plain column (a MySQL/SQLite/reporting copy of the
 * source's columns). pgoutput on PostgreSQL 15-17 does not send generated columns, so the
 * events carry no `b` and the target's `b` stays NULL for every row. Before, `syncline verify`
 * left generated columns out of the comparison and said "identical" (exit 0), and `doctor`
 * said "ready to run": nothing told the user the column is never written.
 *
 * Now verify compares such a column (exit 1, with a warning naming it and the fix), repair
 * says it cannot fix it instead of "apply is behind", doctor warns, and the sink warns when
 * it first reads the table. A target that declares the column generated too (a `pg_dump
 * --schema-only` copy, table g3) computes it itself: not compared, no warning.
 *
 * Promise: verify names differing rows (DESIGN.md 5); a value the pipeline cannot carry is
 * not dropped silently (4).
 */
describe('a STORED generated column at the source, a plain column at the target', () => {
  const prefix = 'red18_gen';
  const slot = uniqueName(prefix);
  let dir: string;
  let configFile: string;
  let source: pg.Client;
  let target: pg.Client;

  beforeAll(async () => {
    ensureBuilt();
    const server = await machinePg15();
    dir = await mkdtemp(path.join(os.tmpdir(), 'red18-gen-'));
    const pair = await sourceAndTarget(server, prefix);
    ({ source, target } = pair);
    await source.query('CREATE TABLE g2 (id int PRIMARY KEY, a int, b int GENERATED ALWAYS AS (a * 2) STORED)');
    await target.query('CREATE TABLE g2 (id int PRIMARY KEY, a int, b int)');
    await source.query('CREATE TABLE g3 (id int PRIMARY KEY, a int, b int GENERATED ALWAYS AS (a * 2) STORED)');
    await target.query('CREATE TABLE g3 (id int PRIMARY KEY, a int, b int GENERATED ALWAYS AS (a * 2) STORED)');
    configFile = path.join(dir, 'sync.yaml');
    await writeFile(
      configFile,
      `source:
  url: ${pair.sourceUrl}
  slots: [{ name: ${slot}, publication: ${prefix}_pub, tables: [g2, g3] }]
stream: { path: ${path.join(dir, 'stream')}, partitions: 2 }
consumer: { group_id: gen }
sink: { url: ${pair.targetUrl} }
monitoring: { enabled: false }
`,
    );
  }, 180_000);

  afterAll(async () => {
    await source?.query('SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1 AND NOT active', [slot]).catch(() => undefined);
    await source?.end();
    await target?.end();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('verify reports the rows whose plain copy of a generated column was never written; repair, doctor and the sink say why', async () => {
    const ctl = new AbortController();
    const warnings: string[] = [];
    const log = pino({ level: 'warn' }, { write: (line: string) => void warnings.push(line) });
    const running = runPipeline(loadConfigFile(configFile), 'run', log, ctl.signal);
    let failure: unknown;
    running.catch((err: unknown) => (failure = err));
    try {
      await waitFor('slot streaming', async () => await slotStreaming(source, slot), 30_000);
      await source.query('INSERT INTO g2 (id, a) VALUES (1, 5), (2, 8)');
      await source.query('INSERT INTO g3 (id, a) VALUES (1, 5), (2, 8)');
      await waitFor('rows applied', async () => (await target.query('SELECT (SELECT count(*) FROM g2) + (SELECT count(*) FROM g3) AS n')).rows[0]?.n === '4', 30_000);
      const src = (await source.query('SELECT id, a, b FROM g2 ORDER BY id')).rows;
      const tgt = (await target.query('SELECT id, a, b FROM g2 ORDER BY id')).rows;
      const verify = await runCli('verify', '-c', configFile, '--json', '--lag-timeout', '20s');
      expect(failure).toBeUndefined();
      // Either the target holds b, or verify does not call the tables identical.
      expect({ sameRows: JSON.stringify(src) === JSON.stringify(tgt), verifyFoundDrift: verify.code === 1 }).not.toEqual({ sameRows: false, verifyFoundDrift: false });
      const tables = (JSON.parse(verify.stdout) as { tables: { table: string; differing: number; warnings?: string[]; uncarried?: unknown }[] }).tables;
      const g2 = tables.find((t) => t.table === 'public.g2');
      const g3 = tables.find((t) => t.table === 'public.g3');
      expect(g2?.differing).toBe(2);
      expect(g2?.uncarried).toEqual([{ column: 'b', expression: '(a * 2)' }]);
      expect(g2?.warnings?.join('\n')).toContain('b GENERATED ALWAYS AS (a * 2) STORED');
      // The pg_dump-like copy computes b itself: nothing to compare, nothing to warn about.
      expect(g3).toMatchObject({ differing: 0 });
      expect(g3?.warnings).toBeUndefined();

      const repair = await runCli('repair', '-c', configFile, '--json', '--table', 'g2', '--timeout', '30s', '--lag-timeout', '20s');
      expect(repair.code, repair.stderr).toBe(1);
      const repaired = JSON.parse(repair.stdout) as { remaining_drift: number; uncarried?: { table: string; columns: string[]; reason: string }[] };
      expect(repaired.remaining_drift).toBe(2);
      expect(repaired.uncarried).toMatchObject([{ table: 'public.g2', columns: ['b'] }]);
      expect(repaired.uncarried?.[0]?.reason).toContain('repair cannot fix');

      const doctor = await runCli('doctor', '-c', configFile);
      expect(doctor.stdout).toMatch(/warn +sink table public\.g2 +column\(s\) b: generated at the source/);
      expect(doctor.stdout).toContain('b GENERATED ALWAYS AS (a * 2) STORED');
      expect(doctor.stdout).not.toMatch(/warn +sink table public\.g3/);

      const sinkWarnings = warnings.filter((w) => w.includes('generated at the source'));
      expect(sinkWarnings.length, warnings.join('\n')).toBe(1);
      expect(sinkWarnings[0]).toContain('public.g2');
    } finally {
      ctl.abort();
      await running.catch(() => undefined);
    }
  }, 120_000);
});
