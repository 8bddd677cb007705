/**
 * A real change whose definition capture stores while apply looks for it (e06e46b's check).
 * Apply reads the definition (missing: capture's write still in flight), then asks whether
 * capture may still record it (mayStillRecord: is the change's commit LSN at or past every
 * slot's confirmed position?). Capture confirms the slot past a change only once the
 * definition is stored, so when capture stores it and confirms between those two reads, the
 * second answers "cannot be recording any more" about a definition recorded by then, and the
 * batch fails with SCHEMA_UNKNOWN. Poison isolation then applies the batch's changes one by
 * one, each reading the definitions again: the change is applied, not dead-lettered. A guard
 * written by red17b (it held): a lock on schema_versions holds capture's write and a proxy
 * holds apply's second query until the slot is confirmed, which makes the interleaving
 * certain (the log shows "batch failed permanently; isolating the failing changes").
 */
import { mkdtemp, rm } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runPipeline } from '../../src/api/run-pipeline.js';
import { parseConfig } from '../../src/config/load.js';
import { freePort, machinePg15, slotStreaming, sourceAndTarget, testLogger, uniqueName, waitFor } from '../helpers/postgres.js';

/** A proxy to the source that holds the client bytes of a query containing `marker` while armed, until released. */
async function gatingProxy(targetPort: number, marker: string): Promise<{ port: number; arm(): void; caught(): boolean; release(): void; close(): Promise<void> }> {
  const sockets = new Set<net.Socket>();
  let armed = false;
  let held: (() => void)[] = [];
  const server = net.createServer((client) => {
    const upstream = net.connect(targetPort, '127.0.0.1');
    sockets.add(client).add(upstream);
    let holding = false;
    const pending: Buffer[] = [];
    client.on('data', (d: Buffer) => {
      if (!holding && armed && d.includes(marker)) {
        holding = true;
        held.push(() => {
          holding = false;
          for (const p of pending.splice(0)) upstream.write(p);
        });
      }
      if (holding) pending.push(d);
      else upstream.write(d);
    });
    upstream.on('data', (d) => client.write(d));
    const end = (): void => {
      client.destroy();
      upstream.destroy();
      sockets.delete(client);
      sockets.delete(upstream);
    };
    client.on('error', end).on('close', end);
    upstream.on('error', end).on('close', end);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    port: (server.address() as net.AddressInfo).port,
    arm: () => {
      armed = true;
    },
    caught: () => held.length > 0,
    release: () => {
      armed = false;
      const h = held;
      held = [];
      for (const f of h) f();
    },
    close: () => {
      for (const s of sockets) s.destroy();
      return new Promise((r) => server.close(() => r()));
    },
  };
}

describe('a definition capture stores while apply asks whether it may still be recorded', () => {
  const name = uniqueName('syncline_recorded_meanwhile');
  let dir: string;
  let source: pg.Client;
  let target: pg.Client;
  let locker: pg.Client;
  let proxy: Awaited<ReturnType<typeof gatingProxy>>;
  let sourceUrl: string;
  let yaml: (url: string) => string;

  beforeAll(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'syncline-recorded-meanwhile-'));
    const pair = await sourceAndTarget(await machinePg15(), name);
    ({ source, target, sourceUrl } = pair);
    await source.query('CREATE TABLE orders (id int PRIMARY KEY, v text NOT NULL)');
    const u = new URL(sourceUrl);
    proxy = await gatingProxy(Number(u.port || 5432), 'bool_and(confirmed_flush_lsn IS NOT NULL)');
    const port = await freePort();
    yaml = (url) => `source:
  url: ${url}
  status_interval_ms: 50
  slots: [{ name: ${name}, publication: ${name}_pub, tables: [orders] }]
stream: { path: ${path.join(dir, 'stream')}, partitions: 1 }
consumer: { retry: { backoff_base_ms: 50, backoff_max_ms: 500, held_table_interval_ms: 500 } }
sink: { url: ${pair.targetUrl}, create_tables: true, schema_evolution: full }
monitoring: { port: ${port} }
`;
    locker = new pg.Client({ connectionString: sourceUrl });
    await locker.connect();
  }, 60_000);

  afterAll(async () => {
    await locker?.query('ROLLBACK').catch(() => undefined);
    await locker?.end().catch(() => undefined);
    await proxy?.close();
    await source?.query('SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1 AND NOT active', [name]).catch(() => undefined);
    await source?.end();
    await target?.end();
    if (dir) await rm(dir, { recursive: true, force: true });
  }, 60_000);

  it('applies the change (is not dead-lettered as SCHEMA_UNKNOWN)', async () => {
    const captureCtl = new AbortController();
    const applyCtl = new AbortController();
    const capture = runPipeline(parseConfig(yaml(sourceUrl)), 'capture', await testLogger(), captureCtl.signal);
    capture.catch(() => undefined);
    const proxied = new URL(sourceUrl);
    proxied.port = String(proxy.port);
    const applyConfig = parseConfig(yaml(proxied.toString()).replace(/monitoring: \{ port: \d+ \}/, `monitoring: { port: ${await freePort()} }`));
    const apply = runPipeline(applyConfig, 'apply', await testLogger(), applyCtl.signal);
    apply.catch(() => undefined);
    try {
      await waitFor('streaming', () => slotStreaming(source, name));
      await source.query("INSERT INTO orders SELECT i, 'a' FROM generate_series(1, 3) i");
      const count = async (): Promise<number> => Number((await target.query('SELECT count(*) AS n FROM orders').catch(() => ({ rows: [{ n: 0 }] }))).rows[0]?.n);
      await waitFor('first rows at the target', async () => (await count()) === 3, 60_000, 200);

      // Capture's write of the new definition waits on this lock; its changes are published meanwhile.
      await locker.query('BEGIN');
      await locker.query('LOCK TABLE syncline.schema_versions IN SHARE MODE');
      proxy.arm();
      await source.query('ALTER TABLE orders ADD COLUMN w text');
      await source.query("INSERT INTO orders VALUES (100, 'b', 'new')");
      const written = (await source.query<{ lsn: string }>('SELECT pg_current_wal_lsn()::text AS lsn')).rows[0]?.lsn as string;
      // Apply read the definition (not there yet) and now asks whether capture may still record it.
      await waitFor('apply asks mayStillRecord', () => proxy.caught(), 60_000, 50);
      // Capture stores the definition and confirms the slot past the change.
      await locker.query('COMMIT');
      await waitFor('slot confirmed past the change', async () => (await source.query<{ ok: boolean }>(
        'SELECT confirmed_flush_lsn >= $2::pg_lsn AS ok FROM pg_replication_slots WHERE slot_name = $1', [name, written])).rows[0]?.ok === true, 30_000, 50);
      const recorded = await source.query("SELECT version FROM syncline.schema_versions WHERE table_name = 'orders' ORDER BY version");
      expect(recorded.rows.map((r: { version: number }) => r.version)).toEqual([1, 2]);
      proxy.release();

      await waitFor('row 100 at the target or dead-lettered', async () => {
        const at = await target.query("SELECT w FROM orders WHERE id = 100").catch(() => ({ rows: [] }));
        const dead = await target.query('SELECT 1 FROM syncline.dead_letter').catch(() => ({ rows: [] }));
        return at.rows.length > 0 || dead.rows.length > 0;
      }, 60_000, 200);
      const dead = await target.query<{ error_code: string; error: string }>('SELECT error_code, error FROM syncline.dead_letter').catch(() => ({ rows: [] as { error_code: string; error: string }[] }));
      expect(dead.rows).toEqual([]);
      expect((await target.query('SELECT w FROM orders WHERE id = 100')).rows).toEqual([{ w: 'new' }]);
    } finally {
      proxy.release();
      await locker.query('ROLLBACK').catch(() => undefined);
      applyCtl.abort();
      captureCtl.abort();
      await Promise.allSettled([apply, capture]);
    }
  }, 180_000);
});
