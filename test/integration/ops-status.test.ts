import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLI, ensureBuilt, ROOT } from '../helpers/cli.js';
import { collectStatus, type StatusReport } from '../../src/ops/status.js';
import { runPipeline, type Role } from '../../src/api/run-pipeline.js';
import { parseConfig } from '../../src/config/load.js';
import { silentLogger } from '../../src/log/logger.js';
import { freshDatabase, machinePg15, waitFor, withClient, type PgServer, slotStreaming, uniqueName } from '../helpers/postgres.js';

const SLOT = uniqueName('syncline_ops_status');


function status(configFile: string, json: boolean): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [CLI, 'status', '-c', configFile, ...(json ? ['--json'] : [])], { cwd: ROOT, encoding: 'utf8', timeout: 60_000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

describe('syncline status against PostgreSQL 15', () => {
  let server: PgServer;
  let dir: string;
  let sourceUrl: string;
  let targetUrl: string;
  let configFile: string;
  let configText: string;

  beforeAll(async () => {
    ensureBuilt();
    server = await machinePg15();
    dir = await mkdtemp(path.join(os.tmpdir(), 'syncline-ops-status-'));
    sourceUrl = await freshDatabase(server, 'syncline_ops_status_src');
    targetUrl = await freshDatabase(server, 'syncline_ops_status_tgt');
    for (const url of [sourceUrl, targetUrl]) await withClient(url, (c) => c.query('CREATE TABLE items (id int PRIMARY KEY, v text)'));
    configText = `source:
  url: ${sourceUrl}
  slots: [{ name: ${SLOT}, publication: syncline_ops_status_pub, tables: [items] }]
  # Counted offsets below assume only streamed changes: no initial snapshot of the rows.
  snapshot: never
stream: { path: ${path.join(dir, 'stream')}, partitions: 3 }
consumer: { group_id: ops_status }
sink: { url: ${targetUrl} }
monitoring: { enabled: false }
`;
    configFile = path.join(dir, 'sync.yaml');
    await writeFile(configFile, configText);
  }, 120_000);

  afterAll(async () => {
    await withClient(server.url('postgres'), (c) =>
      c.query("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1 AND NOT active", [SLOT]),
    );
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  /** Runs `role` until `until` holds; `started` runs once the role is up (the slot is active for capture). */
  async function runFor(role: Role, until: () => Promise<boolean>, started?: () => Promise<unknown>): Promise<void> {
    const ctl = new AbortController();
    const done = runPipeline(parseConfig(configText, {}), role, silentLogger(), ctl.signal);
    done.catch(() => undefined);
    try {
      if (started) {
        await waitFor('slot active', () =>
          withClient(sourceUrl, async (c) => (await slotStreaming(c, SLOT))),
        );
        await started();
      }
      await waitFor(`${role} progress`, until, 30_000, 100);
    } finally {
      ctl.abort();
      await done;
    }
  }

  const insert = (from: number, n: number): Promise<unknown> =>
    withClient(sourceUrl, (c) => c.query('INSERT INTO items SELECT g, md5(g::text) FROM generate_series($1::int, $2::int) g', [from, from + n - 1]));
  const targetCount = (): Promise<number> => withClient(targetUrl, async (c) => (await c.query<{ n: number }>('SELECT count(*)::int AS n FROM items')).rows[0]?.n ?? -1);
  const sumEnd = (r: StatusReport): number => r.stream.partitions.reduce((n, p) => n + p.end, 0);

  it('before the first run: no slot, no stream, dead-letter depth counted when the table exists', async () => {
    const before = await collectStatus(parseConfig(configText, {}));
    expect(before.source.reachable).toBe(true);
    expect(before.source.currentLsn).toMatch(/^[0-9A-F]+\/[0-9A-F]+$/);
    expect(before.slot).toEqual({ name: SLOT, exists: false });
    expect(before.stream.reachable).toBe(false);
    expect(before.stream.error).toMatch(/no embedded stream at .* yet/);
    expect(existsSync(path.join(dir, 'stream'))).toBe(false);
    expect(before.dlq).toEqual({ exists: false, count: 0, blockedTables: [] });

    await withClient(targetUrl, (c) => c.query('CREATE SCHEMA syncline; CREATE TABLE syncline.dead_letter (id int); INSERT INTO syncline.dead_letter VALUES (1), (2)'));
    expect((await collectStatus(parseConfig(configText, {}))).dlq).toEqual({ exists: true, count: 2, blockedTables: [] });
    await withClient(targetUrl, (c) => c.query('DROP SCHEMA syncline CASCADE'));

    const text = status(configFile, false);
    expect(text.status).toBe(0);
    expect(text.stdout).toMatch(new RegExp(`slot\\s+${SLOT}: does not exist yet`));
    expect(text.stdout).toMatch(/dlq\s+0 \(not created\)/);
  });

  it('after apply caught up, then capture alone: slot lag in bytes, end offsets, positions and records behind per partition', async () => {
    // The slot is created by the first run: changes before it are not captured.
    await runFor('run', async () => (await targetCount()) === 30, () => insert(1, 30));

    const caughtUp = await collectStatus(parseConfig(configText, {}));
    expect(caughtUp.slot).toMatchObject({ name: SLOT, exists: true, active: false, walStatus: 'reserved' });
    expect(caughtUp.slot?.confirmedFlushLsn).toMatch(/^[0-9A-F]+\/[0-9A-F]+$/);
    expect(caughtUp.slot?.retainedWalBytes).toBeGreaterThan(0);
    expect(caughtUp.stream.reachable).toBe(true);
    expect(caughtUp.stream.partitions.map((p) => p.partition)).toEqual([0, 1, 2]);
    expect(sumEnd(caughtUp)).toBe(30);
    for (const p of caughtUp.stream.partitions) {
      expect(p.sinkPosition ?? 0).toBe(p.end);
      expect(p.recordsBehind).toBe(0);
    }
    expect(caughtUp.stream.recordsBehind).toBe(0);
    expect(caughtUp.consumer).toEqual({ group: 'ops_status', sinkPositions: 'read' });

    // Changes made while nothing runs: the slot falls behind the source's WAL.
    await insert(31, 10);
    const behindSlot = await collectStatus(parseConfig(configText, {}));
    expect(behindSlot.slot?.lagBytes).toBeGreaterThan(0);

    // Capture alone publishes them; the sink has not applied them.
    await runFor('capture', async () => sumEnd(await collectStatus(parseConfig(configText, {}))) === 40);
    const behind = await collectStatus(parseConfig(configText, {}));
    expect(behind.stream.recordsBehind).toBe(10);
    for (const p of behind.stream.partitions) expect(p.recordsBehind).toBe(p.end - (p.sinkPosition ?? 0));

    // The dead-letter depth is whatever the table holds, or 0 when it was never created.
    const dlqRows = await withClient(targetUrl, async (c) => {
      const exists = (await c.query("SELECT to_regclass('syncline.dead_letter') IS NOT NULL AS e")).rows[0]?.e === true;
      return exists ? Number((await c.query('SELECT count(*) AS n FROM syncline.dead_letter')).rows[0]?.n) : null;
    });
    expect(behind.dlq).toEqual(dlqRows === null ? { exists: false, count: 0, blockedTables: [] } : { exists: true, count: dlqRows, blockedTables: [] });

    const json = status(configFile, true);
    expect(json.status).toBe(0);
    const parsed = JSON.parse(json.stdout) as StatusReport;
    expect(parsed.stream.recordsBehind).toBe(10);
    expect(parsed.slot?.exists).toBe(true);
    const text = status(configFile, false);
    expect(text.stdout).toMatch(new RegExp(`slot\\s+${SLOT}: inactive, confirmed [0-9A-F]+/[0-9A-F]+, .* behind the current WAL, retains .* \\(wal_status reserved\\)`));
    expect(text.stdout).toMatch(/stream\s+embedded, 3 partitions, group ops_status: 10 records behind/);
    expect(text.stdout).toMatch(/partition\s+end\s+sink position\s+committed\s+behind/);

    // Apply catches up again: nothing behind.
    await runFor('apply', async () => (await targetCount()) === 40);
    const done = await collectStatus(parseConfig(configText, {}));
    expect(done.stream.recordsBehind).toBe(0);
    expect(done.stream.warnings).toEqual([]);

    // A sink position past the stream's end (the stream was recreated) is called out.
    await withClient(targetUrl, (c) => c.query("UPDATE syncline.positions SET next_offset = next_offset + 100 WHERE group_id = 'ops_status' AND stream_partition = 1"));
    const reset = await collectStatus(parseConfig(configText, {}));
    expect(reset.stream.warnings).toHaveLength(1);
    expect(reset.stream.warnings[0]).toMatch(/^partition 1: the group's position \d+ is past the stream's end \d+/);
    expect(status(configFile, false).stdout).toMatch(/WARNING partition 1: /);
  });

  it('exit 1 when the source is unreachable, without printing the password', async () => {
    const file = path.join(dir, 'down.yaml');
    await writeFile(file, configText.replace(sourceUrl, 'postgres://postgres:s3cretpw@127.0.0.1:1/nowhere'));
    const r = status(file, false);
    expect(r.status).toBe(1);
    expect(r.stdout).toMatch(/source\s+UNREACHABLE: .*ECONNREFUSED/);
    expect(r.stdout).not.toContain('s3cretpw');
    const j = status(file, true);
    expect(j.status).toBe(1);
    expect((JSON.parse(j.stdout) as StatusReport).source.reachable).toBe(false);
  });

  it('an unreadable sink is reported, not fatal', async () => {
    const r = await collectStatus(parseConfig(configText.replace(targetUrl, 'postgres://postgres@127.0.0.1:1/nowhere'), {}));
    expect(r.source.reachable).toBe(true);
    expect(r.consumer.sinkPositions).toBe('error');
    expect(r.consumer.error).toMatch(/ECONNREFUSED/);
  });
});
