import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { embeddedPg17, freePort, machinePg15, secondPg15, uniqueName, waitFor, type PgServer } from '../helpers/postgres.js';
import { AUDIT, writePairConfigs, createAccounts, dropDatabases, dropSlot, range, rowsOf, updateRounds } from '../helpers/many-writers.js';
import { CLI, ensureBuilt } from '../helpers/cli.js';

const ROWS = 'SELECT id, name, hits::text, updated_at::text FROM accounts ORDER BY id';

/**
 * Active-active between two servers, each pipeline its own `syncline run` process, killed
 * with SIGKILL in the middle of concurrent updates of the same rows (a delta counter and
 * last_write_wins on the application's clock). Afterwards both databases are identical, each
 * increment counts once, an audit trigger at each side shows no source change written twice,
 * conflicts were recorded, and nothing flows once the writes stop (no loop).
 */
const PAIRS: [string, () => Promise<[PgServer, PgServer]>][] = [
  ['two PostgreSQL 17 servers', async () => [await embeddedPg17('logical'), await embeddedPg17('logical')]],
  ['two PostgreSQL 15 clusters', async () => [await machinePg15(), await secondPg15()]],
];

describe.each(PAIRS)('active-active with kill -9 (%s, syncline run processes)', (_, startPair) => {
  let servers: PgServer[] = [];
  let dir: string;
  const urls: Record<'a' | 'b', string> = { a: '', b: '' };
  const names = { a: uniqueName('aa_a'), b: uniqueName('aa_b') };
  const ports: Record<'a' | 'b', number> = { a: 0, b: 0 };
  const children = new Map<'a' | 'b', ChildProcess>();
  let runs = 0;

  beforeAll(async () => {
    ensureBuilt();
    servers = await startPair();
    dir = await mkdtemp(path.join(os.tmpdir(), 'syncline-aa-kill-'));
    for (const [side, server] of [['a', servers[0]], ['b', servers[1]]] as const) {
      const admin = new pg.Client({ connectionString: (server as PgServer).url('postgres') });
      await admin.connect();
      await admin.query(`DROP DATABASE IF EXISTS ${pg.escapeIdentifier(names[side])} WITH (FORCE)`);
      await admin.query(`CREATE DATABASE ${pg.escapeIdentifier(names[side])}`);
      await admin.end();
      urls[side] = (server as PgServer).url(names[side]);
      await createAccounts(urls[side], 100);
      const c = new pg.Client({ connectionString: urls[side] });
      await c.connect();
      await c.query(AUDIT);
      await c.end();
      ports[side] = await freePort();
    }
    await writePairConfigs(dir, names, urls, ports);
  }, 180_000);

  afterAll(async () => {
    for (const child of children.values()) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    if (process.env.SYNCLINE_TEST_KEEP) return; // to look at both databases and the logs after a failure
    for (const [side, server] of [['a', servers[0]], ['b', servers[1]]] as const) {
      if (!server || !urls[side]) continue;
      await dropSlot(urls[side], names[side], [`from_${names.a}`, `from_${names.b}`]).catch(() => undefined);
      await dropDatabases(server.url('postgres'), [names[side]]).catch(() => undefined);
    }
    for (const s of servers) await s.stop();
    if (dir && !process.env.SYNCLINE_TEST_KEEP) await rm(dir, { recursive: true, force: true });
  }, 60_000);

  const logs = new Map<'a' | 'b', string>();

  function start(side: 'a' | 'b'): void {
    const file = path.join(dir, `run-${side}-${runs++}.log`);
    logs.set(side, file);
    const log = createWriteStream(file);
    const child = spawn(process.execPath, [CLI, 'run', '-c', path.join(dir, `${side}.yaml`)], { stdio: ['ignore', 'pipe', 'pipe'] });
    child.stdout?.pipe(log);
    child.stderr?.pipe(log);
    children.set(side, child);
  }

  async function kill(side: 'a' | 'b'): Promise<void> {
    const child = children.get(side);
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise((r) => child.once('exit', r));
    child.kill('SIGKILL');
    await exited;
  }

  /** `sync_events_captured_total` + `sync_events_applied_total` of a running pipeline, or undefined. */
  async function traffic(side: 'a' | 'b'): Promise<number | undefined> {
    try {
      const text = await (await fetch(`http://127.0.0.1:${ports[side]}/metrics`)).text();
      let n = 0;
      for (const m of text.matchAll(/^sync_events_(?:captured|applied)_total\{[^}]*\} (\d+)/gm)) n += Number(m[1]);
      return n;
    } catch {
      return undefined;
    }
  }

  /**
   * The capture of `side` streams from its slot. Not the slot's `active` flag: a slot is active
   * while it is being created, and what commits before its consistent point is not decoded
   * (with `snapshot: never` the sync starts at the slot; a busy server delays that point).
   */
  const streaming = async (side: 'a' | 'b'): Promise<boolean> => (await readFile(logs.get(side) as string, 'utf8').catch(() => '')).includes('pgoutput protocol negotiated');

  it('converges with every increment counted once, no change written twice, conflicts recorded, and no loop', async () => {
    start('a');
    start('b');
    await waitFor('both captures streaming', async () => (await streaming('a')) && (await streaming('b')), 60_000, 200);

    const rounds = 30;
    const pause = (): Promise<void> => new Promise((resolve) => setTimeout(resolve, 30));
    // a's pipeline is killed a third of the way through and near the end, b's at two thirds.
    const [onA, onB] = await Promise.all([
      updateRounds(urls.a, 'a', range(21, 60), rounds, async (r) => {
        if (r === 10 || r === 26) {
          await kill('a');
          start('a');
        }
        await pause();
      }),
      updateRounds(urls.b, 'b', range(61, 100), rounds, async (r) => {
        if (r === 20) {
          await kill('b');
          start('b');
        }
        await pause();
      }),
    ]);
    const increments = onA + onB;

    let last = '';
    await waitFor(
      'both databases identical',
      async () => {
        const [ra, rb] = [await rowsOf(urls.a, ROWS), await rowsOf(urls.b, ROWS)];
        const sum = (rows: string): number => (JSON.parse(rows) as { hits: string }[]).reduce((n, r) => n + Number(r.hits), 0);
        const differing = (JSON.parse(ra) as { id: number }[]).filter((r, i) => JSON.stringify(r) !== JSON.stringify((JSON.parse(rb) as unknown[])[i]));
        last = `increments ${onA + onB}, hits at a ${sum(ra)}, at b ${sum(rb)}; rows differing at a: ${JSON.stringify(differing).slice(0, 400)}`;
        return ra === rb;
      },
      120_000,
      250,
      () => last,
    );
    const rows = JSON.parse(await rowsOf(urls.a, ROWS)) as { id: number; name: string; hits: string }[];
    // Every increment of both sides counts once, on both sides (delta merge, kills included).
    expect(rows.reduce((sum, r) => sum + Number(r.hits), 0)).toBe(increments);
    expect(rows.filter((r) => r.id >= 21 && r.id <= 60).every((r) => r.name.startsWith('a-'))).toBe(true);
    expect(rows.filter((r) => r.id >= 61).every((r) => r.name.startsWith('b-'))).toBe(true);

    for (const s of ['a', 'b'] as const) {
      // No source change was written twice at either side (the audit trigger's record).
      const twice = await rowsOf(urls[s], 'SELECT src, lsn::text, seq, count(*)::int AS n FROM applied_audit GROUP BY 1, 2, 3 HAVING count(*) > 1');
      expect(twice).toBe('[]');
      const audited = JSON.parse(await rowsOf(urls[s], 'SELECT count(*)::int AS n FROM applied_audit')) as { n: number }[];
      expect(audited[0]?.n).toBeGreaterThan(0);
      // The shared rows were updated at both sides at once: conflicts were recorded.
      const conflicts = JSON.parse(await rowsOf(urls[s], `SELECT count(*)::int AS n FROM syncline.conflicts WHERE strategy = 'last_write_wins' AND (row_key::jsonb->>0)::int <= 20`)) as { n: number }[];
      expect(conflicts[0]?.n).toBeGreaterThan(0);
      expect(await rowsOf(urls[s], 'SELECT count(*)::int AS n FROM syncline.dead_letter')).toBe('[{"n":0}]');
    }

    // No loop: once both are caught up, neither captures nor applies anything more.
    await waitFor('metrics of both pipelines', async () => (await traffic('a')) !== undefined && (await traffic('b')) !== undefined, 30_000, 200);
    let before: [number | undefined, number | undefined] = [undefined, undefined];
    await waitFor(
      'traffic stops',
      async () => {
        const now: [number | undefined, number | undefined] = [await traffic('a'), await traffic('b')];
        const still = now[0] === before[0] && now[1] === before[1];
        before = now;
        return still;
      },
      30_000,
      3000,
    );
    const audit = async (): Promise<string> => `${await rowsOf(urls.a, 'SELECT count(*) FROM applied_audit')} ${await rowsOf(urls.b, 'SELECT count(*) FROM applied_audit')}`;
    const audits = await audit();
    await new Promise((r) => setTimeout(r, 3000));
    expect([await traffic('a'), await traffic('b'), await audit()]).toEqual([...before, audits]);
  }, 300_000);
});
