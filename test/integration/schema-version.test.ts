import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runPipeline } from '../../src/api/run-pipeline.js';
import { parseConfig } from '../../src/config/load.js';
import type { ChangeEvent } from '../../src/core/change.js';
import { Metrics } from '../../src/metrics/metrics.js';
import { SnapshotStore } from '../../src/source/snapshot-store.js';
import { openEmbeddedStream } from '../../src/stream/embedded/embedded-stream.js';
import { embeddedPg17, freshDatabase, machinePg15, slotStreaming, testLogger, waitFor, type PgServer, uniqueName } from '../helpers/postgres.js';

async function counter(metrics: Metrics, name: string): Promise<number> {
  const m = await metrics.registry.getSingleMetric(name)?.get();
  return (m?.values ?? []).reduce((s, v) => s + v.value, 0);
}

for (const [label, startServer] of [
  ['PostgreSQL 15 (machine)', machinePg15],
  ['PostgreSQL 17 (embedded)', embeddedPg17],
] as const) {
  describe(`_schema_version across capture restarts on ${label}`, () => {
    let server: PgServer;
    let dir: string;
    let source: pg.Client;
    let configText: string;
    const slot = uniqueName('syncline_schemaver');

    beforeAll(async () => {
      server = await startServer();
      dir = await mkdtemp(path.join(os.tmpdir(), 'syncline-schemaver-'));
      const url = await freshDatabase(server, 'syncline_schemaver_source');
      source = new pg.Client({ connectionString: url });
      await source.connect();
      await source.query('CREATE TABLE t (id integer PRIMARY KEY, v text)');
      configText = `source:
  url: ${url}
  slots: [{ name: ${slot}, publication: ${slot}_pub, tables: [t] }]
  snapshot: never
stream: { broker: embedded, path: ${path.join(dir, 'stream')}, partitions: 2 }
monitoring: { enabled: false }
`;
    }, 120_000);

    afterAll(async () => {
      await source?.end();
      await server?.stop();
      if (dir) await rm(dir, { recursive: true, force: true });
    });

    /** Runs one capture process: `work` once the slot streams, then waits until it published `published` events. */
    async function captureRun(work: () => Promise<void>, published: number): Promise<void> {
      const metrics = new Metrics();
      const ctl = new AbortController();
      const done = runPipeline(parseConfig(configText, {}), 'capture', await testLogger(), ctl.signal, metrics);
      done.catch(() => undefined);
      try {
        await waitFor('the slot to stream', () => slotStreaming(source, slot), 30_000);
        await work();
        await waitFor(`${published} events published`, async () => (await counter(metrics, 'sync_events_published_total')) >= published, 30_000);
      } finally {
        ctl.abort();
        await done;
      }
    }

    /** The events of table t in version order, as `op id v<_schema_version>`. */
    async function events(): Promise<string[]> {
      const stream = await openEmbeddedStream({ path: path.join(dir, 'stream'), partitions: 2 });
      const all: ChangeEvent[] = [];
      try {
        const consumer = await stream.consumer(`read-${Date.now()}`);
        for (;;) {
          const records = await consumer.poll(1000, 200);
          if (records.length === 0) break;
          for (const r of records) all.push(JSON.parse(r.value.toString('utf8')) as ChangeEvent);
        }
        await consumer.close();
      } finally {
        await stream.close();
      }
      return all
        .filter((e) => e.table === 't')
        .sort((a, b) => (BigInt(a._version) < BigInt(b._version) ? -1 : 1))
        .map((e) => `${e.op} ${String(e.key.id)} v${e._schema_version}`);
    }

    it('a restart keeps the version; ADD COLUMN gives version + 1, kept after the next restart', async () => {
      await captureRun(() => source.query("INSERT INTO t VALUES (1, 'a')").then(() => undefined), 1);
      await captureRun(() => source.query("INSERT INTO t VALUES (2, 'b')").then(() => undefined), 1);
      await captureRun(async () => {
        await source.query('ALTER TABLE t ADD COLUMN w integer');
        await source.query("INSERT INTO t VALUES (3, 'c', 3)");
      }, 1);
      // After a restart: a streamed change, and snapshot rows read with the same definition.
      await captureRun(async () => {
        await source.query("INSERT INTO t VALUES (4, 'd', 4)");
        await new SnapshotStore(source, 'syncline', slot).request({ schema: 'public', table: 't' });
      }, 1 + 4);
      // A type change is a new definition too.
      await captureRun(async () => {
        await source.query('ALTER TABLE t ALTER COLUMN w TYPE bigint');
        await source.query("INSERT INTO t VALUES (5, 'e', 5)");
      }, 1);
      await captureRun(() => source.query("INSERT INTO t VALUES (6, 'f', 6)").then(() => undefined), 1);
      expect(await events()).toEqual([
        'INSERT 1 v1', 'INSERT 2 v1', 'INSERT 3 v2', 'INSERT 4 v2',
        'READ 1 v2', 'READ 2 v2', 'READ 3 v2', 'READ 4 v2',
        'INSERT 5 v3', 'INSERT 6 v3',
      ]);
      // One row per definition of t; syncline's own tables are not versioned.
      const { rows } = await source.query('SELECT table_name, version FROM syncline.schema_versions ORDER BY version');
      expect(rows).toEqual([
        { table_name: 't', version: 1 },
        { table_name: 't', version: 2 },
        { table_name: 't', version: 3 },
      ]);
    }, 180_000);
  });
}
