import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Command } from 'commander';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { registerRepair } from '../../src/cli/commands/repair.js';
import { registerVerify } from '../../src/cli/commands/verify.js';
import { runPipeline } from '../../src/api/run-pipeline.js';
import { openSink } from '../../src/compose/sink.js';
import { loadConfigFile, parseConfig } from '../../src/config/load.js';
import { ConfigError } from '../../src/core/errors.js';
import { TableMapping } from '../../src/core/table-mapping.js';
import { compareTable } from '../../src/verify/compare.js';
import { machinePg15, slotStreaming, sourceAndTarget, testLogger, waitFor, uniqueName } from '../helpers/postgres.js';

const SLOT = uniqueName('syncline_routes');

/**
 * Runs `syncline verify|repair ...` in this process (the commands' own code, without a build)
 * and returns what the process would exit with and print.
 */
async function cli(...args: string[]): Promise<{ code: number; out: string; error?: unknown }> {
  const program = new Command().exitOverride();
  registerVerify(program);
  registerRepair(program);
  let out = '';
  const spy = vi.spyOn(process.stdout, 'write').mockImplementation((chunk: string | Uint8Array) => {
    out += String(chunk);
    return true;
  });
  const previous = process.exitCode;
  process.exitCode = undefined;
  let error: unknown;
  try {
    await program.parseAsync(['node', 'syncline', ...args]);
  } catch (err) {
    error = err;
  } finally {
    spy.mockRestore();
  }
  // As src/cli/main.ts: a ConfigError is exit 2, otherwise the code the command chose.
  const code = error instanceof ConfigError ? 2 : Number(process.exitCode ?? (error ? 1 : 0));
  process.exitCode = previous;
  return { code, out, error };
}

describe('sink.tables: a routed, renamed and trimmed table through the whole pipeline (PostgreSQL 15)', () => {
  let dir: string;
  let configFile: string;
  let configText: string;
  let source: pg.Client;
  let target: pg.Client;
  let stop: () => Promise<void>;
  const orders = { schema: 'public', table: 'orders' };

  beforeAll(async () => {
    const server = await machinePg15();
    dir = await mkdtemp(path.join(os.tmpdir(), 'syncline-routes-'));
    const pair = await sourceAndTarget(server, 'syncline_routes');
    ({ source, target } = pair);
    await source.query(`CREATE TABLE orders (id integer PRIMARY KEY, total numeric(10,2) NOT NULL, internal_note text, status text);
      CREATE TABLE customers (id integer PRIMARY KEY, name text)`);
    // Rows from before syncline runs arrive by the initial snapshot, through the same mapping.
    await source.query(`INSERT INTO orders SELECT g, g * 1.5, 'secret ' || g, 'new' FROM generate_series(1, 500) g`);
    await source.query(`INSERT INTO customers SELECT g, 'c' || g FROM generate_series(1, 50) g`);
    // customers exists at the target as is; reporting.orders_v2 is left to sink.create_tables.
    await target.query('CREATE TABLE customers (id integer PRIMARY KEY, name text)');
    configText = `source:
  url: ${pair.sourceUrl}
  slots: [{ name: ${SLOT}, publication: syncline_routes_pub, tables: [orders, customers] }]
stream: { path: ${path.join(dir, 'stream')}, partitions: 3 }
consumer: { group_id: routes, retry: { backoff_base_ms: 20, backoff_max_ms: 200 } }
sink:
  url: ${pair.targetUrl}
  create_tables: true
  tables:
    public.orders:
      target: reporting.orders_v2
      columns:
        id: order_id
        total: total_amount
      exclude_columns: [internal_note]
monitoring: { enabled: false }
dead_letter: { enabled: false }
`;
    configFile = path.join(dir, 'sync.yaml');
    await writeFile(configFile, configText);
    const ctl = new AbortController();
    const running = runPipeline(loadConfigFile(configFile), 'run', await testLogger(), ctl.signal);
    running.catch(() => undefined);
    stop = async () => {
      ctl.abort();
      await running;
    };
    await waitFor('streaming', () => slotStreaming(source, SLOT), 60_000);
  }, 120_000);

  afterAll(async () => {
    await stop?.();
    await source?.end();
    await target?.end();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  const route = (): ReturnType<TableMapping['routeOf']> => TableMapping.fromConfig(parseConfig(configText, {}).sink.tables).routeOf(orders);
  const converged = async (): Promise<boolean> => {
    try {
      const [o, c] = await Promise.all([compareTable(source, target, orders, undefined, route()), compareTable(source, target, { schema: 'public', table: 'customers' })]);
      return o.differing === 0 && c.differing === 0;
    } catch {
      return false; // the target table does not exist yet
    }
  };

  it('the target equals the source modulo the mapping, and verify exits 0', async () => {
    await source.query(`UPDATE orders SET total = total + 1, status = 'paid' WHERE id % 3 = 0`);
    await source.query(`UPDATE orders SET internal_note = 'only the excluded column changed' WHERE id % 5 = 0`);
    await source.query('DELETE FROM orders WHERE id % 7 = 0');
    await source.query(`INSERT INTO orders VALUES (1001, 10.25, 'n', 'new'), (1002, 0, NULL, NULL)`);
    // A key change: the old key goes, the new one arrives under the renamed key column.
    await source.query('UPDATE orders SET id = 2000 WHERE id = 1');
    await source.query(`UPDATE customers SET name = 'renamed' WHERE id = 3`);
    await waitFor('target equals source (modulo the mapping)', converged, 60_000, 250);

    const { rows: columns } = await target.query<{ column_name: string }>(
      `SELECT column_name FROM information_schema.columns WHERE table_schema = 'reporting' AND table_name = 'orders_v2' ORDER BY ordinal_position`,
    );
    expect(columns.map((c) => c.column_name)).toEqual(['order_id', 'total_amount', 'status', '_syncline_lsn', '_syncline_seq']);
    const { rows: pk } = await target.query<{ a: string }>(`SELECT a.attname AS a FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) WHERE i.indrelid = 'reporting.orders_v2'::regclass AND i.indisprimary`);
    expect(pk.map((r) => r.a)).toEqual(['order_id']);
    const { rows } = await target.query('SELECT order_id, total_amount::text, status FROM reporting.orders_v2 WHERE order_id IN (3, 2000, 1001) ORDER BY order_id');
    expect(rows).toEqual([
      { order_id: 3, total_amount: '5.50', status: 'paid' },
      { order_id: 1001, total_amount: '10.25', status: 'new' },
      { order_id: 2000, total_amount: '1.50', status: 'new' },
    ]);
    expect((await target.query("SELECT to_regclass('public.orders') AS t")).rows[0]?.t).toBeNull();

    const verify = await cli('verify', '-c', configFile, '--json');
    expect(verify.error).toBeUndefined();
    expect(verify.code).toBe(0);
    const report = JSON.parse(verify.out) as { drift: boolean; tables: { table: string; target?: string; differing: number; sourceRows: number; targetRows: number }[] };
    expect(report.drift).toBe(false);
    expect(report.tables.map((t) => [t.table, t.target ?? null, t.differing])).toEqual([
      ['public.orders', 'reporting.orders_v2', 0],
      ['public.customers', null, 0],
    ]);
    expect(report.tables[0]?.sourceRows).toBe(report.tables[0]?.targetRows);
  }, 120_000);

  it('verify sees drift in the routed table (exit 1) and repair fixes it through the mapping (exit 0)', async () => {
    await target.query("UPDATE reporting.orders_v2 SET total_amount = 0 WHERE order_id = 2");
    await target.query('DELETE FROM reporting.orders_v2 WHERE order_id = 4');
    await target.query("INSERT INTO reporting.orders_v2 (order_id, total_amount, status) VALUES (777777, 1, 'only at the target')");
    // A difference in an excluded column is no drift.
    await source.query("UPDATE orders SET internal_note = 'changed again' WHERE id = 8");
    const verify = await cli('verify', '-c', configFile, '--table', 'orders', '--json');
    expect(verify.code).toBe(1);
    const report = JSON.parse(verify.out) as { tables: { missing: string[]; extra: string[]; different: string[] }[] };
    expect(report.tables[0]).toMatchObject({ missing: ['["4"]'], extra: ['["777777"]'], different: ['["2"]'] });

    const repair = await cli('repair', '-c', configFile, '--table', 'orders', '--timeout', '60s');
    expect(repair.error).toBeUndefined();
    expect(repair.out).toMatch(/public\.orders -> reporting\.orders_v2: 1 missing, 1 different, 1 extra -> removed 1, re-reading/);
    expect(repair.out).toMatch(/no drift remains/);
    expect(repair.code).toBe(0);
    expect((await cli('verify', '-c', configFile)).code).toBe(0);
  }, 120_000);

  it('a bad mapping is a clear error: an excluded key column (open time, verify) and a malformed source table', async () => {
    // Only the source knows id is the key: caught when the sink opens (and by verify), not at load.
    const bad = configText.replace('        id: order_id\n', '').replace('exclude_columns: [internal_note]', 'exclude_columns: [internal_note, id]');
    const sink = openSink(parseConfig(bad, {}));
    const err = await sink.prepare().then(() => undefined, (e: unknown) => e);
    await sink.close();
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as ConfigError).message).toMatch(/sink\.tables\.public\.orders\.exclude_columns: id is a key column of public\.orders; key columns may be renamed but not excluded/);
    const badFile = path.join(dir, 'bad.yaml');
    await writeFile(badFile, bad);
    const verify = await cli('verify', '-c', badFile, '--table', 'orders');
    expect(verify.code).toBe(2);
    expect(String(verify.error)).toMatch(/exclude_columns lists id, a key column of public\.orders/);

    const typo = configText.replace('total: total_amount', 'totl: total_amount');
    const typoSink = openSink(parseConfig(typo, {}));
    await expect(typoSink.prepare()).rejects.toThrow(/sink\.tables\.public\.orders\.columns\.totl: public\.orders has no column totl/);
    await typoSink.close();

    expect(() => parseConfig(configText.replace('public.orders:', 'public.orders.v2:'), {})).toThrow(
      /sink\.tables\.public\.orders\.v2: not a table name: "public\.orders\.v2" \(expected table or schema\.table\): source tables are written schema\.table or table/,
    );
    expect(() => parseConfig(configText.replace('public.orders:', 'public.invoices:'), {})).toThrow(/sink\.tables\.public\.invoices: public\.invoices is not replicated/);
  }, 60_000);
});
