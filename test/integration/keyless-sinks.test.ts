/**
 * End to end: a keyless table (REPLICA IDENTITY FULL, no primary key, shaped like pgbench's
 * pgbench_history, duplicate rows on purpose) from PostgreSQL 15 through capture (initial
 * snapshot, then inserts, updates and deletes of rows that cannot be told apart), the
 * embedded stream and apply, into MariaDB and into SQLite, with the real pipeline
 * (runPipeline). The target's rows must become the source's, as a multiset.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import Database from 'better-sqlite3';
import type mysql from 'mysql2/promise';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runPipeline } from '../../src/api/run-pipeline.js';
import { parseConfig } from '../../src/config/load.js';
import { silentLogger } from '../../src/log/logger.js';
import { Metrics } from '../../src/metrics/metrics.js';
import { quoteMysqlIdent } from '../../src/sink/mysql/mysql-table.js';
import { MYSQL_ADMIN_URL, mysqlAdmin } from '../helpers/mysql.js';
import { freshDatabase, machinePg15, slotStreaming, waitFor, uniqueName } from '../helpers/postgres.js';

interface Target {
  /** The sink section of the config. */
  sinkConfig: string;
  /** Every row as [tid, bid, delta, mtime 'YYYY-MM-DD HH:MM:SS', filler without trailing spaces, note], sorted. */
  rows(): Promise<string[]>;
  close(): Promise<void>;
}

const SOURCE_ROWS = `SELECT tid::text, bid::text, delta::text, to_char(mtime, 'YYYY-MM-DD HH24:MI:SS') AS mtime, rtrim(filler) AS filler, note FROM hist`;

function canonical(rows: readonly (readonly unknown[])[]): string[] {
  return rows.map((r) => JSON.stringify(r.map((v) => (v === null || v === undefined ? null : String(v))))).sort();
}

for (const kind of ['mysql', 'sqlite'] as const) {
  describe(`pipeline PostgreSQL 15 → ${kind}: a keyless table`, () => {
    const name = `syncline_ms_kl_${kind}`;
    const slot = uniqueName(name);
    let dir: string;
    let source: pg.Client;
    let target: Target;
    let stop: (() => Promise<void>) | undefined;

    beforeAll(async () => {
      dir = await mkdtemp(path.join(os.tmpdir(), `syncline-keyless-${kind}-`));
      const sourceUrl = await freshDatabase(await machinePg15(), `${name}_src`);
      source = new pg.Client({ connectionString: sourceUrl });
      await source.connect();
      await source.query('CREATE TABLE hist (tid integer, bid integer, delta integer, mtime timestamp, filler char(22), note text)');
      await source.query('ALTER TABLE hist REPLICA IDENTITY FULL');
      // Rows before the slot exists reach the target through the initial snapshot; many are equal.
      await source.query(`INSERT INTO hist SELECT g % 5, g % 3, g % 4, timestamp '2026-01-01' + (g % 7) * interval '1 s', CASE WHEN g % 2 = 0 THEN 'f' END, CASE g % 3 WHEN 0 THEN 'a' WHEN 1 THEN 'A' END FROM generate_series(1, 300) g`);
      if (kind === 'mysql') {
        const admin: mysql.Connection = await mysqlAdmin();
        const database = uniqueName(`${name}_dst`);
        await admin.query(`DROP DATABASE IF EXISTS ${quoteMysqlIdent(database)}`);
        // Case-insensitive default collation: 'a' and 'A' rows must still stay apart.
        await admin.query(`CREATE DATABASE ${quoteMysqlIdent(database)} CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci`);
        await admin.query(`USE ${quoteMysqlIdent(database)}`);
        await admin.query('CREATE TABLE hist (tid INT, bid INT, delta INT, mtime DATETIME(6), filler CHAR(22), note TEXT)');
        const url = new URL(MYSQL_ADMIN_URL);
        url.pathname = `/${database}`;
        target = {
          sinkConfig: `{ type: mysql, url: '${url.toString()}' }`,
          async rows() {
            const [rows] = await admin.query<mysql.RowDataPacket[]>(
              "SELECT CAST(tid AS CHAR), CAST(bid AS CHAR), CAST(delta AS CHAR), DATE_FORMAT(mtime, '%Y-%m-%d %H:%i:%s'), filler, note FROM hist",
            );
            return canonical(rows.map((r) => Object.values(r)));
          },
          async close() {
            await admin.query(`DROP DATABASE IF EXISTS ${quoteMysqlIdent(database)}`).catch(() => undefined);
            await admin.end();
          },
        };
      } else {
        const file = path.join(dir, 'target.db');
        const db = new Database(file);
        db.exec('CREATE TABLE hist (tid INTEGER, bid INTEGER, delta INTEGER, mtime TIMESTAMP, filler TEXT, note TEXT)');
        target = {
          sinkConfig: `{ type: sqlite, url: '${file}' }`,
          async rows() {
            const rows = db.prepare("SELECT tid, bid, delta, substr(mtime, 1, 19), rtrim(filler), note FROM hist").raw().all() as unknown[][];
            return canonical(rows);
          },
          async close() {
            db.close();
          },
        };
      }
      const config = parseConfig(
        `source:
  url: ${sourceUrl}
  slots: [{ name: ${slot}, publication: ${name}_pub, tables: [hist] }]
stream: { broker: embedded, path: ${path.join(dir, 'stream')}, partitions: 4 }
consumer: { group_id: ${name}, retry: { backoff_base_ms: 20, backoff_max_ms: 200 } }
sink: ${target.sinkConfig}
dead_letter: { url: '${sourceUrl}' }
monitoring: { enabled: false }
`,
        {},
      );
      const ctl = new AbortController();
      const running = runPipeline(config, 'run', silentLogger(), ctl.signal, new Metrics());
      running.catch(() => undefined);
      stop = async () => {
        ctl.abort();
        await running.catch(() => undefined);
      };
      await waitFor('slot active', () => slotStreaming(source, slot), 60_000);
    }, 120_000);

    afterAll(async () => {
      await stop?.();
      if (source) {
        await source.query('SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1 AND NOT active', [slot]).catch(() => undefined);
        await source.end();
      }
      await target?.close();
      if (dir) await rm(dir, { recursive: true, force: true });
    });

    it('the snapshot, then inserts, updates and deletes of duplicate rows, leave the target equal to the source as a multiset', async () => {
      const sourceRows = async (): Promise<string[]> => canonical((await source.query({ text: SOURCE_ROWS, rowMode: 'array' })).rows as unknown[][]);
      const converged = async (): Promise<void> => {
        let last: string[] = [];
        let want: string[] = [];
        try {
          await waitFor('target equals source', async () => {
            want = await sourceRows();
            last = await target.rows();
            return JSON.stringify(last) === JSON.stringify(want);
          }, 60_000, 200);
        } finally {
          expect(last.length).toBe(want.length);
          expect(last).toEqual(want);
        }
      };
      await converged();
      for (let round = 0; round < 3; round++) {
        await source.query('BEGIN');
        await source.query(`INSERT INTO hist SELECT g % 5, 9, 0, timestamp '2026-02-01', 'new', 'a' FROM generate_series(1, 20) g`);
        // Several equal rows updated at once: an UPDATE per row, each with its before image.
        await source.query('UPDATE hist SET delta = delta + 1 WHERE tid = $1', [round]);
        await source.query('COMMIT');
        // One of several equal rows goes.
        await source.query("DELETE FROM hist WHERE ctid IN (SELECT ctid FROM hist WHERE tid = 4 AND note = 'A' LIMIT 1)");
        await source.query("DELETE FROM hist WHERE bid = 1 AND note IS NULL AND tid = $1", [round + 1]);
        await source.query("UPDATE hist SET note = 'A' WHERE ctid IN (SELECT ctid FROM hist WHERE note = 'a' LIMIT 3)");
      }
      await converged();
    });
  });
}
