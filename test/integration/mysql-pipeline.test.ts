/**
 * End to end: PostgreSQL 15 → capture → embedded stream → apply → MariaDB, with the real
 * pipeline (runPipeline), a table of common types, inserts/updates (also leaving a TOASTed
 * column unchanged)/deletes, and a row-by-row comparison after the documented type mapping.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type mysql from 'mysql2/promise';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runPipeline } from '../../src/api/run-pipeline.js';
import { parseConfig } from '../../src/config/load.js';
import { silentLogger } from '../../src/log/logger.js';
import { Metrics } from '../../src/metrics/metrics.js';
import { quoteMysqlIdent } from '../../src/sink/mysql/mysql-table.js';
import { MYSQL_ADMIN_URL, mysqlAdmin } from '../helpers/mysql.js';
import { freshDatabase, machinePg15, waitFor, slotStreaming, uniqueName } from '../helpers/postgres.js';

const SLOT = uniqueName('syncline_mysql_it');

const TARGET_DB = uniqueName('syncline_sinkc_it');

const SOURCE_DDL = `
  CREATE TABLE items (
    id int PRIMARY KEY, big bigint, amount numeric(30,10), title text, code varchar(20),
    flag boolean, at timestamptz, day date, doc jsonb, bin bytea, tags text[]);
  -- Large titles are stored out of line uncompressed: an UPDATE of other columns sends them as "unchanged".
  ALTER TABLE items ALTER COLUMN title SET STORAGE EXTERNAL;
  CREATE TABLE big_keys (id bigint PRIMARY KEY, v text);`;

const TARGET_DDL = [
  `CREATE TABLE items (
    id INT PRIMARY KEY, big BIGINT, amount DECIMAL(30,10), title LONGTEXT, code VARCHAR(20),
    flag BOOLEAN, at DATETIME(6), day DATE, doc JSON, bin LONGBLOB, tags JSON)`,
  'CREATE TABLE big_keys (id BIGINT PRIMARY KEY, v TEXT)',
];

/** A row as both sides should look after the mapping (README "Sinks"). */
interface Comparable {
  id: string;
  big: string | null;
  amount: string | null;
  title: string | null;
  code: string | null;
  flag: number | null;
  at: string | null;
  day: string | null;
  doc: unknown;
  bin: string | null;
  tags: unknown;
}

const parseJson = (text: string | null): unknown => (text === null ? null : JSON.parse(text));
/** mysql2 parses JSON columns itself when the server flags them as JSON (MySQL, MariaDB ≥ 10.5 metadata); text otherwise. */
const jsonValue = (v: unknown): unknown => (typeof v === 'string' ? JSON.parse(v) : v);

async function sourceRows(source: pg.Client): Promise<Comparable[]> {
  const { rows } = await source.query<{ id: string; big: string | null; amount: string | null; title: string | null; code: string | null; flag: boolean | null; at: string | null; day: string | null; doc: string | null; bin: string | null; tags: string | null }>(
    `SELECT id::text AS id, big::text AS big, amount::text AS amount, title, code, flag,
            to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') AS at, day::text AS day,
            doc::text AS doc, encode(bin, 'hex') AS bin,
            -- the sink's array mapping: a JSON array of the elements' text
            (SELECT json_agg(e)::text FROM unnest(tags) AS e) AS tags_elems,
            tags IS NOT NULL AND cardinality(tags) = 0 AS tags_empty, tags IS NULL AS tags_null
       FROM items ORDER BY id`,
  );
  return rows.map((r) => {
    const x = r as typeof r & { tags_elems: string | null; tags_empty: boolean; tags_null: boolean };
    return {
      id: r.id,
      big: r.big,
      amount: r.amount,
      title: r.title,
      code: r.code,
      flag: r.flag === null ? null : r.flag ? 1 : 0,
      at: r.at,
      day: r.day,
      doc: parseJson(r.doc),
      bin: r.bin,
      // An empty PostgreSQL array is the text `{}`, which is valid JSON (an object): documented.
      tags: x.tags_null ? null : x.tags_empty ? {} : parseJson(x.tags_elems),
    };
  });
}

async function targetRows(target: mysql.Connection): Promise<Comparable[]> {
  const [rows] = await target.query<(mysql.RowDataPacket & { id: string; big: string | null; amount: string | null; title: string | null; code: string | null; flag: number | null; at: string | null; day: string | null; doc: unknown; bin: string | null; tags: unknown })[]>(
    `SELECT CAST(id AS CHAR) AS id, CAST(big AS CHAR) AS big, CAST(amount AS CHAR) AS amount, title, code, flag,
            CAST(at AS CHAR) AS at, CAST(day AS CHAR) AS day, doc, LOWER(HEX(bin)) AS bin, tags
       FROM items ORDER BY id`,
  );
  return rows.map((r) => ({
    id: r.id,
    big: r.big,
    amount: r.amount,
    title: r.title,
    code: r.code,
    flag: r.flag === null ? null : Number(r.flag),
    at: r.at,
    day: r.day,
    doc: jsonValue(r.doc),
    bin: r.bin,
    tags: jsonValue(r.tags),
  }));
}

/** Differences, by key, as short descriptions (empty when equal). */
function diff(expected: Comparable[], actual: Comparable[]): string[] {
  const out: string[] = [];
  const byId = new Map(actual.map((r) => [r.id, r]));
  for (const e of expected) {
    const a = byId.get(e.id);
    byId.delete(e.id);
    if (!a) {
      out.push(`${e.id}: missing at the target`);
      continue;
    }
    for (const k of Object.keys(e) as (keyof Comparable)[]) {
      if (JSON.stringify(e[k]) !== JSON.stringify(a[k]) && !deepEqual(e[k], a[k])) out.push(`${e.id}.${k}: ${JSON.stringify(e[k])?.slice(0, 60)} ≠ ${JSON.stringify(a[k])?.slice(0, 60)}`);
    }
  }
  for (const id of byId.keys()) out.push(`${id}: only at the target`);
  return out;
}

function deepEqual(a: unknown, b: unknown): boolean {
  try {
    expect(a).toEqual(b);
    return true;
  } catch {
    return false;
  }
}

describe('pipeline PostgreSQL 15 → MariaDB', () => {
  let source: pg.Client;
  let target: mysql.Connection;
  let dir: string;
  let sourceUrl: string;
  let configText: string;

  beforeAll(async () => {
    target = await mysqlAdmin();
    await target.query(`DROP DATABASE IF EXISTS ${quoteMysqlIdent(TARGET_DB)}`);
    await target.query(`CREATE DATABASE ${quoteMysqlIdent(TARGET_DB)} CHARACTER SET utf8mb4 COLLATE utf8mb4_bin`);
    await target.query(`USE ${quoteMysqlIdent(TARGET_DB)}`);
    for (const ddl of TARGET_DDL) await target.query(ddl);
    const server = await machinePg15();
    sourceUrl = await freshDatabase(server, 'syncline_sinkc_src');
    source = new pg.Client({ connectionString: sourceUrl });
    await source.connect();
    await source.query(SOURCE_DDL);
    dir = await mkdtemp(path.join(os.tmpdir(), 'syncline-mysql-it-'));
    const sinkUrl = new URL(MYSQL_ADMIN_URL);
    sinkUrl.pathname = `/${TARGET_DB}`;
    configText = `source:
  url: ${sourceUrl}
  slots: [{ name: ${SLOT}, publication: syncline_mysql_it_pub, tables: ['items', 'big_keys'] }]
  snapshot: never # a first snapshot running late (busy machine) could re-apply row 3 after the test tampered with it at the target
stream: { broker: embedded, path: ${path.join(dir, 'stream')}, partitions: 4 }
consumer: { group_id: mysql-it, retry: { backoff_base_ms: 20, backoff_max_ms: 200 } }
sink: { type: mysql, url: '${sinkUrl.toString()}' }
dead_letter: { url: '${sourceUrl}' }
monitoring: { port: 0 }
`;
  }, 120_000);

  afterAll(async () => {
    if (source) {
      await source.query("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1 AND NOT active", [SLOT]).catch(() => undefined);
      await source.end();
    }
    if (target) {
      await target.query(`DROP DATABASE IF EXISTS ${quoteMysqlIdent(TARGET_DB)}`).catch(() => undefined);
      await target.end();
    }
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('streams inserts, updates (with an unchanged TOASTed column) and deletes of common types; target equals source after mapping', async () => {
    const config = parseConfig(configText, {});
    const ctl = new AbortController();
    const done = runPipeline(config, 'run', silentLogger(), ctl.signal, new Metrics());
    done.catch(() => undefined);
    try {
      await waitFor('slot active', async () => (await slotStreaming(source, SLOT)), 60_000);

      const big = 'Ü'.repeat(6000) + '🚀'; // out of line (TOAST), multi-byte
      // Inserts, several per transaction; values at the edges of each type.
      for (let t = 0; t < 10; t++) {
        await source.query('BEGIN');
        for (let j = 0; j < 20; j++) {
          const i = t * 20 + j;
          await source.query(
            `INSERT INTO items (id, big, amount, title, code, flag, at, day, doc, bin, tags) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)`,
            [
              i,
              i % 7 === 0 ? '9223372036854775807' : i % 7 === 1 ? '-9223372036854775808' : String(i * 1_000_003),
              i % 4 === 0 ? '12345678901234567890.0123456789' : i % 4 === 1 ? '-0.0000000001' : i % 4 === 2 ? null : String(i / 8),
              i % 10 === 0 ? big : i % 10 === 1 ? '' : i % 10 === 2 ? null : `it's "title" \\ \`${i}\` ✓`,
              `c${i}`,
              i % 3 === 0 ? null : i % 3 === 1,
              i % 5 === 0 ? '1970-01-01 00:00:00+00' : i % 5 === 1 ? '2024-02-29 23:59:59.999999+05:30' : i % 5 === 2 ? '2038-01-19 03:14:08.000001-08' : `2026-11-26 12:${String(i % 60).padStart(2, '0')}:00.123456+00`,
              i % 6 === 0 ? '0001-01-01' : i % 6 === 1 ? null : '2026-12-31',
              i % 8 === 0 ? null : JSON.stringify({ n: i, s: `ü"${i}`, nested: { a: [1, 2.5, null, true], big: 12345678901234 }, e: {} }),
              i % 9 === 0 ? null : Buffer.from([0, 255, i % 256, 92, 120, 39]),
              i % 11 === 0 ? null : i % 11 === 1 ? [] : ['a', 'b c', 'with "quote"', 'back\\slash', null, 'NULL', '{x}', String(i)],
            ],
          );
        }
        await source.query('COMMIT');
      }
      // Updates: some leave the TOASTed title unchanged (not sent), some change everything.
      await source.query('UPDATE items SET code = code || \'-u\', flag = NOT coalesce(flag, false) WHERE id % 3 = 0');
      await source.query(`UPDATE items SET doc = '{"replaced": true}', tags = '{1,2,3}', at = now(), amount = amount * 2 WHERE id % 4 = 1`);
      await source.query("UPDATE items SET title = 'short now' WHERE id = 10");
      await source.query('UPDATE items SET big = big - 1 WHERE id % 7 = 0');
      // Deletes, and a re-insert of a deleted key.
      await source.query('DELETE FROM items WHERE id % 5 = 2');
      await source.query("INSERT INTO items (id, title, doc) VALUES (2, 'back again', '[]')");
      // Keys above 2^53 differ only in the last digits: deletes must hit exactly the right row.
      await source.query(`INSERT INTO big_keys VALUES (9007199254740992, 'a'), (9007199254740993, 'b'), (9007199254740994, 'c'), (-9223372036854775808, 'min')`);
      await source.query('DELETE FROM big_keys WHERE id = 9007199254740993');
      await source.query("UPDATE big_keys SET v = 'c2' WHERE id = 9007199254740994");

      let last: string[] = [];
      await waitFor(
        'MariaDB equals PostgreSQL',
        async () => {
          last = diff(await sourceRows(source), await targetRows(target));
          return last.length === 0;
        },
        90_000,
        300,
      ).catch((err: unknown) => {
        throw new Error(`${(err as Error).message}; first differences:\n  ${last.slice(0, 15).join('\n  ')}`);
      });
      const src = await sourceRows(source);
      expect(src).toHaveLength(200 - 40 + 1);
      expect(diff(src, await targetRows(target))).toEqual([]);
      // The unchanged TOASTed titles kept their stored value through the updates.
      const [toasted] = await target.query<(mysql.RowDataPacket & { n: number })[]>('SELECT COUNT(*) AS n FROM items WHERE title = ?', [big]);
      expect(Number(toasted[0]?.n)).toBe(src.filter((r) => r.title === big).length);
      expect(src.filter((r) => r.title === big).length).toBeGreaterThan(10);

      // big_keys lands on other partitions than items: it converges on its own time.
      const bigKeys = async (): Promise<string[][]> => {
        const [keys] = await target.query<(mysql.RowDataPacket & { id: string; v: string })[]>('SELECT CAST(id AS CHAR) AS id, v FROM big_keys ORDER BY id');
        return keys.map((k) => [k.id, k.v]);
      };
      const expectedKeys = [
        ['-9223372036854775808', 'min'],
        ['9007199254740992', 'a'],
        ['9007199254740994', 'c2'],
      ];
      await waitFor('big_keys applied', async () => JSON.stringify(await bigKeys()) === JSON.stringify(expectedKeys), 30_000, 100).catch(() => undefined);
      expect(await bigKeys()).toEqual(expectedKeys);
      // Every row carries the version that wrote it; nothing went to the dead-letter queue.
      const [unversioned] = await target.query<(mysql.RowDataPacket & { n: number })[]>('SELECT COUNT(*) AS n FROM items WHERE _syncline_lsn IS NULL OR _syncline_seq IS NULL');
      expect(Number(unversioned[0]?.n)).toBe(0);
      // The comparison is not vacuous: a one-microsecond, one-byte or JSON difference shows.
      await target.query('UPDATE items SET at = at + INTERVAL 1 MICROSECOND, bin = CONCAT(bin, 0x00), doc = JSON_SET(doc, \'$.n\', 0) WHERE id = 3');
      const tampered = diff(await sourceRows(source), await targetRows(target));
      expect(tampered.map((d) => d.split(':')[0])).toEqual(['3.at', '3.doc', '3.bin']);
      const { rows: dlqTable } = await source.query<{ t: string | null }>("SELECT to_regclass('syncline.dead_letter')::text AS t");
      if (dlqTable[0]?.t) {
        const { rows: dlq } = await source.query<{ n: number; errors: string | null }>('SELECT count(*)::int AS n, string_agg(DISTINCT error, \' | \') AS errors FROM syncline.dead_letter');
        expect(dlq[0]).toEqual({ n: 0, errors: null });
      }
    } finally {
      ctl.abort();
      await done.catch(() => undefined);
    }
  }, 180_000);
});
