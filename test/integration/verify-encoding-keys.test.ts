import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runPipeline } from '../../src/api/run-pipeline.js';
import { loadConfigFile } from '../../src/config/load.js';
import { verifyTable, type TableVerification } from '../../src/verify/compare.js';
import { ensureBuilt, runCli } from '../helpers/cli.js';
import { freshDatabase, machinePg15, slotStreaming, testLogger, uniqueName, waitFor, type PgServer } from '../helpers/postgres.js';

/**
 * Text keys between a source and a target of other server encodings (VerifyShape.utf8Bytes).
 *
 * 1. A WIN1252 source and a UTF8 target, key collation "C" on both: byte order, but not the
 *    same order of characters: WIN1252 puts € Š œ — (0x80–0x9F) before À–ÿ, UTF-8 after them.
 *    Ranges planned on the source's keys selected other rows at the target, and every range
 *    was split without end: verify never finished (with more than one range).
 * 2. A target key the source's encoding cannot hold ('œk1' against a LATIN1 source): sent
 *    back to the source as a bound or a look-up, it failed verify and repair with 22P05
 *    ("has no equivalent in encoding LATIN1") instead of naming an extra row.
 */
const OPTIONS = { rangeRows: 100, leafRows: 20, fanout: 4 };
/** Characters whose order differs between WIN1252 and UTF-8 bytes, with ASCII and Latin-1 ones. */
const CHARS = ['€', 'Š', 'œ', '—', 'À', 'é', 'ÿ', 'a', 'Z'];
const ROWS = 1500;
const keyOf = (i: number): string => `${CHARS[i % CHARS.length] as string}${CHARS[Math.floor(i / CHARS.length) % CHARS.length] as string}${i}`;

/** verifyTable that fails instead of hanging (the bug was a split without end). */
async function verifyWithin(source: pg.Client, target: pg.Client, table: string, ms = 20_000): Promise<TableVerification> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`verify of ${table} did not finish within ${ms} ms`)), ms)));
  try {
    return await Promise.race([verifyTable([{ source, target }], { schema: 'public', table }, undefined, OPTIONS), timeout]);
  } finally {
    clearTimeout(timer);
  }
}

describe('verify: text keys between a WIN1252 or LATIN1 source and a UTF8 target', () => {
  let server: PgServer;
  const clients: pg.Client[] = [];
  const connect = async (url: string): Promise<pg.Client> => {
    const c = new pg.Client({ connectionString: url });
    c.on('error', () => undefined);
    await c.connect();
    clients.push(c);
    return c;
  };

  beforeAll(async () => {
    server = await machinePg15();
  });
  afterAll(async () => {
    for (const c of clients) await c.end().catch(() => undefined);
  });

  it('WIN1252 source, several key ranges: identical rows verify fast, one difference is named exactly', async () => {
    const source = await connect(await freshDatabase(server, 'verifyenc_w_src', 'WIN1252'));
    const target = await connect(await freshDatabase(server, 'verifyenc_w_tgt'));
    for (const c of [source, target]) await c.query('CREATE TABLE t_text (k text PRIMARY KEY, v text)');
    const keys = Array.from({ length: ROWS }, (_, i) => keyOf(i));
    for (const c of [source, target]) await c.query(`INSERT INTO t_text SELECT k, 'v' || k FROM unnest($1::text[]) k`, [keys]);
    // The two orders really differ (else the test shows nothing).
    const firstOf = async (c: pg.Client): Promise<string> => (await c.query<{ k: string }>(`SELECT k FROM t_text WHERE k LIKE '%0' ORDER BY k COLLATE "C" LIMIT 1 OFFSET 3`)).rows[0]?.k ?? '';
    expect(await firstOf(source)).not.toBe(await firstOf(target));

    const same = await verifyWithin(source, target, 't_text');
    expect(same).toMatchObject({ sourceRows: ROWS, targetRows: ROWS, differing: 0 });
    // The source's key index cannot serve ranges on convert_to(k, 'UTF8'): said, with why.
    expect(same.warnings?.filter((w) => w.includes(`convert_to("k", 'UTF8')`))).toEqual([expect.stringMatching(/^"public"."t_text"."k" is ordered by bytes at the source, whose encoding WIN1252 /)]);

    const changed = keyOf(2); // 'œ€2'
    await target.query(`UPDATE t_text SET v = 'changed' WHERE k = $1`, [changed]);
    await target.query(`DELETE FROM t_text WHERE k = $1`, [keyOf(13)]);
    // Not a WIN1252 character: a target-only key the source cannot hold.
    await target.query(`INSERT INTO t_text VALUES ('āk1', 'x')`);
    const r = await verifyWithin(source, target, 't_text');
    expect({ different: r.different, missing: r.missing, extra: r.extra, differing: r.differing }).toEqual({
      different: [JSON.stringify([changed])],
      missing: [JSON.stringify([keyOf(13)])],
      extra: ['["āk1"]'],
      differing: 3,
    });
  }, 60_000);

  it('LATIN1 source: target-only keys it cannot hold are extra rows, also where ranges are split along the target keys', async () => {
    const source = await connect(await freshDatabase(server, 'verifyenc_l_src', 'LATIN1'));
    const target = await connect(await freshDatabase(server, 'verifyenc_l_tgt'));
    for (const c of [source, target]) await c.query('CREATE TABLE t_text (k text PRIMARY KEY, v text)');
    const keys = Array.from({ length: 400 }, (_, i) => `${['a', 'é', 'ÿ', 'Z'][i % 4] as string}${i}`);
    for (const c of [source, target]) await c.query(`INSERT INTO t_text SELECT k, 'v' || k FROM unnest($1::text[]) k`, [keys]);
    // More target rows than source rows in a range: it is split along the target's keys.
    const extra = Array.from({ length: 150 }, (_, i) => `${['œ', 'ā', 'a€', 'é—'][i % 4] as string}k${i}`);
    await target.query(`INSERT INTO t_text SELECT k, 'x' FROM unnest($1::text[]) k`, [extra]);
    const r = await verifyWithin(source, target, 't_text');
    // LATIN1 orders as code points: the source's key index serves its ranges.
    expect(r.warnings?.filter((w) => w.includes('convert_to')) ?? []).toEqual([]);
    expect({ differing: r.differing, missing: r.missing, different: r.different, targetRows: r.targetRows }).toEqual({ differing: 150, missing: [], different: [], targetRows: 550 });
    const all = await verifyTable([{ source, target }], { schema: 'public', table: 't_text' }, undefined, { ...OPTIONS, sample: 1000 });
    expect([...all.extra].sort()).toEqual(extra.map((k) => JSON.stringify([k])).sort());
  }, 60_000);
});

describe('verify: a UTF8 source against a LATIN1 target', () => {
  it('source keys the target cannot hold are missing rows (bounds and look-ups at the target)', async () => {
    const server = await machinePg15();
    const source = new pg.Client({ connectionString: await freshDatabase(server, 'verifyenc_u_src') });
    const target = new pg.Client({ connectionString: await freshDatabase(server, 'verifyenc_u_tgt', 'LATIN1') });
    await source.connect();
    await target.connect();
    try {
      // "C" at the source: the machine's databases order by the libc locale C.UTF-8.
      await source.query('CREATE TABLE t_text (k text COLLATE "C" PRIMARY KEY, v text)');
      await target.query('CREATE TABLE t_text (k text PRIMARY KEY, v text)');
      const keys = Array.from({ length: 300 }, (_, i) => `${['a', 'é', 'ÿ'][i % 3] as string}${i}`);
      for (const c of [source, target]) await c.query(`INSERT INTO t_text SELECT k, 'v' || k FROM unnest($1::text[]) k`, [keys]);
      // Rows the sink could not have written (the target's encoding cannot hold their keys).
      const only = Array.from({ length: 120 }, (_, i) => `${['œ', 'ā', 'a€'][i % 3] as string}k${i}`);
      await source.query(`INSERT INTO t_text SELECT k, 'x' FROM unnest($1::text[]) k`, [only]);
      const r = await verifyTable([{ source, target }], { schema: 'public', table: 't_text' }, undefined, { ...OPTIONS, sample: 1000 });
      expect({ differing: r.differing, extra: r.extra, different: r.different, sourceRows: r.sourceRows }).toEqual({ differing: 120, extra: [], different: [], sourceRows: 420 });
      expect([...r.missing].sort()).toEqual(only.map((k) => JSON.stringify([k])).sort());
    } finally {
      await source.end();
      await target.end();
    }
  });
});

describe('verify: a key ordered by a libc locale, against a server of another encoding', () => {
  it('fails with a fix that can be applied (not a collation the target cannot have)', async () => {
    const server = await machinePg15();
    // The machine's databases are UTF8 with the libc locale C.UTF-8.
    const sourceUrl = await freshDatabase(server, 'verifyenc_libc_src');
    const targetUrl = await freshDatabase(server, 'verifyenc_libc_tgt', 'LATIN1');
    const source = new pg.Client({ connectionString: sourceUrl });
    const target = new pg.Client({ connectionString: targetUrl });
    await source.connect();
    await target.connect();
    try {
      const { rows } = await source.query<{ c: string }>('SELECT datcollate AS c FROM pg_database WHERE datname = current_database()');
      expect(rows[0]?.c).not.toBe('C');
      for (const c of [source, target]) await c.query(`CREATE TABLE t_text (k text PRIMARY KEY, v text); INSERT INTO t_text VALUES ('a', 'b')`);
      const failure = await verifyTable([{ source, target }], { schema: 'public', table: 't_text' }, undefined).then(
        () => undefined,
        (err: unknown) => (err as Error).message,
      );
      expect(failure).toMatch(/^cannot verify public\.t_text: key column "k" is ordered by .*libc.* at the source \(encoding UTF8\), .* at the target \(encoding LATIN1\)/);
      expect(failure).toContain('ALTER TABLE "public"."t_text" ALTER COLUMN "k" TYPE text COLLATE "C" at the source');
      expect(failure).not.toContain('CREATE COLLATION');
    } finally {
      await source.end();
      await target.end();
    }
  });
});

describe('verify and repair (CLI): a target-only key a LATIN1 source cannot hold', () => {
  const slot = uniqueName('verifyenc_slot');
  let dir: string;
  let configFile: string;
  let source: pg.Client;
  let target: pg.Client;

  beforeAll(async () => {
    ensureBuilt();
    const server = await machinePg15();
    dir = await mkdtemp(path.join(os.tmpdir(), 'verifyenc-'));
    const sourceUrl = await freshDatabase(server, 'verifyenc_cli_src', 'LATIN1');
    const targetUrl = await freshDatabase(server, 'verifyenc_cli_tgt');
    source = new pg.Client({ connectionString: sourceUrl });
    target = new pg.Client({ connectionString: targetUrl });
    await source.connect();
    await target.connect();
    await source.query('CREATE TABLE t_text (k text PRIMARY KEY, v text)');
    await target.query('CREATE TABLE t_text (k text PRIMARY KEY, v text)');
    configFile = path.join(dir, 'sync.yaml');
    await writeFile(
      configFile,
      `source:
  url: ${sourceUrl}
  slots: [{ name: ${slot}, publication: verifyenc_pub, tables: [t_text] }]
stream: { path: ${path.join(dir, 'stream')}, partitions: 2 }
consumer: { group_id: verifyenc }
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

  it('verify lists it under extra (exit 1) and repair deletes it at the target', async () => {
    const ctl = new AbortController();
    const running = runPipeline(loadConfigFile(configFile), 'run', await testLogger(), ctl.signal);
    let failure: unknown;
    running.catch((err: unknown) => (failure = err));
    try {
      await waitFor('slot streaming', async () => await slotStreaming(source, slot), 30_000);
      await source.query(`INSERT INTO t_text VALUES ('café', '1'), ('plain', '2'), ('ÿ', '3')`);
      await waitFor('rows applied', async () => (await target.query('SELECT count(*)::int AS n FROM t_text')).rows[0]?.n === 3, 30_000);
      await target.query(`INSERT INTO t_text VALUES ('œk1', 'x')`);
      const verify = await runCli('verify', '-c', configFile, '--json', '--lag-timeout', '20s');
      expect({ code: verify.code, stderr: verify.stderr }).toMatchObject({ code: 1 });
      const table = (JSON.parse(verify.stdout) as { tables: { extra: string[]; missing: string[]; different: string[] }[] }).tables[0];
      expect(table).toMatchObject({ extra: ['["œk1"]'], missing: [], different: [] });
      // More than a leaf (1,000 rows) of them: the table's range is split along the target's keys.
      await target.query(`INSERT INTO t_text SELECT 'œk1_' || i, 'x' FROM generate_series(1, 1100) i`);
      const many = await runCli('verify', '-c', configFile, '--json', '--lag-timeout', '20s');
      expect({ code: many.code, stderr: many.stderr }).toMatchObject({ code: 1 });
      expect((JSON.parse(many.stdout) as { tables: unknown[] }).tables[0]).toMatchObject({ differing: 1101, missing: [], different: [] });
      const repair = await runCli('repair', '-c', configFile, '--json', '--timeout', '30s');
      expect({ code: repair.code, stderr: repair.stderr }).toMatchObject({ code: 0 });
      expect((JSON.parse(repair.stdout) as { tables: unknown[] }).tables[0]).toMatchObject({ extra: 1101, removed: 1101 });
      await waitFor('extra rows deleted', async () => (await target.query(`SELECT count(*)::int AS n FROM t_text WHERE k LIKE 'œ%'`)).rows[0]?.n === 0, 30_000);
      expect((await runCli('verify', '-c', configFile, '--json', '--lag-timeout', '20s')).code).toBe(0);
      expect(failure).toBeUndefined();
    } finally {
      ctl.abort();
      await running.catch(() => undefined);
    }
  }, 120_000);
});
