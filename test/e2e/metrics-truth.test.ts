import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseTableName } from '../../src/core/sql.js';
import { compareTable } from '../../src/verify/compare.js';
import { freePort, freshDatabase, machinePg15, waitFor, uniqueName } from '../helpers/postgres.js';
import { installApplyAudit, Workload, WORKLOAD_DDL, WORKLOAD_TABLES } from '../helpers/workload.js';

const CLI = path.resolve('dist/cli/main.js');
const SLOT = uniqueName('syncline_metrics');
const GROUP = 'syncline_metrics';
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** One scrape of a /metrics page: metric name → its samples (labels text → value). */
type Scrape = Map<string, Map<string, number>>;

async function scrape(port: number, timeoutMs = 1000): Promise<Scrape | undefined> {
  let text: string;
  try {
    const res = await fetch(`http://127.0.0.1:${port}/metrics`, { signal: AbortSignal.timeout(timeoutMs) });
    text = await res.text();
  } catch {
    return undefined; // a stopped process does not answer
  }
  const out: Scrape = new Map();
  for (const line of text.split('\n')) {
    const m = /^(\w+)(\{[^}]*\})?\s+(\S+)$/.exec(line);
    if (!m) continue;
    const [, name = '', labels = '', value = ''] = m;
    let samples = out.get(name);
    if (!samples) out.set(name, (samples = new Map()));
    samples.set(labels, Number(value));
  }
  return out;
}

function maxOf(s: Scrape, name: string): number {
  return Math.max(0, ...(s.get(name)?.values() ?? []));
}

function sumOf(s: Scrape, name: string): number {
  let sum = 0;
  for (const v of s.get(name)?.values() ?? []) sum += v;
  return sum;
}

async function mustScrape(port: number): Promise<Scrape> {
  const s = await scrape(port, 5000);
  if (!s) throw new Error(`no /metrics answer on port ${port}`);
  return s;
}

/** The Workload paced at `perSecond` changes per second until stopped. */
function steadyLoad(workload: Workload, perSecond: number): { stop: () => Promise<void> } {
  let running = true;
  const started = performance.now();
  const base = workload.changes;
  const loop = (async () => {
    while (running) {
      await workload.transaction();
      const due = started + ((workload.changes - base) / perSecond) * 1000;
      const wait = due - performance.now();
      if (wait > 0) await sleep(wait);
    }
  })();
  return {
    stop: async () => {
      running = false;
      await loop;
    },
  };
}

/**
 * The metrics tell the truth, measured on real processes: `syncline capture` and
 * `syncline apply` as two children sharing an embedded stream, PostgreSQL 15 on both ends.
 * Lag is provoked with a real pause (SIGSTOP) of apply, idleness with real silence at the
 * source while another database writes WAL, duplicates with a real replay of the stream.
 */
describe('metrics tell the truth (capture + apply processes, PostgreSQL 15)', () => {
  let dir: string;
  let sourceUrl: string;
  let targetUrl: string;
  let otherUrl: string;
  let capturePort: number;
  let applyPort: number;
  let source: pg.Client;
  let target: pg.Client;
  let other: pg.Client;
  let workload: Workload;
  let apply: ChildProcess;
  const children: ChildProcess[] = [];
  const tables = WORKLOAD_TABLES.map((t) => parseTableName(t));

  async function configFor(name: string, port: number): Promise<string> {
    const file = path.join(dir, `${name}.yaml`);
    await writeFile(
      file,
      `source:
  url: ${sourceUrl}
  heartbeat_interval_ms: 1000
  slots: [{ name: ${SLOT}, publication: ${SLOT}_pub, tables: [${WORKLOAD_TABLES.map((t) => `'${t}'`).join(', ')}] }]
stream: { broker: embedded, path: ${path.join(dir, 'stream')}, partitions: 3 }
consumer: { group_id: ${GROUP}, retry: { backoff_base_ms: 50, backoff_max_ms: 500 } }
sink: { url: ${targetUrl} }
monitoring: { port: ${port} }
`,
    );
    return file;
  }

  async function start(role: 'capture' | 'apply', port: number, n = 0): Promise<ChildProcess> {
    const child = spawn(process.execPath, [CLI, role, '-c', await configFor(role, port)], { stdio: ['ignore', 'pipe', 'pipe'] });
    const log = createWriteStream(path.join(dir, `${role}-${n}.log`));
    child.stdout?.pipe(log);
    child.stderr?.pipe(log);
    children.push(child);
    await waitFor(`${role} to serve /metrics`, async () => (await scrape(port)) !== undefined, 30_000, 100);
    return child;
  }

  async function slot(): Promise<{ active: boolean; confirmed: string | null }> {
    const { rows } = await source.query<{ active: boolean; confirmed: string | null }>(
      'SELECT active, confirmed_flush_lsn::text AS confirmed FROM pg_replication_slots WHERE slot_name = $1',
      [SLOT],
    );
    return rows[0] ?? { active: false, confirmed: null };
  }

  /** apply has consumed everything capture published (counters of the two processes). */
  async function caughtUp(): Promise<boolean> {
    const [c, a] = await Promise.all([scrape(capturePort), scrape(applyPort)]);
    if (!c || !a) return false;
    const published = sumOf(c, 'sync_events_published_total');
    return published > 0 && sumOf(a, 'sync_events_consumed_total') === published && maxOf(a, 'sync_lag_seconds') === 0;
  }

  async function inSync(): Promise<boolean> {
    return (await Promise.all(tables.map((t) => compareTable(source, target, t)))).every((d) => d.differing === 0 && d.sourceRows === d.targetRows);
  }

  async function auditRows(): Promise<number> {
    return (await target.query<{ n: number }>('SELECT count(*)::int AS n FROM apply_audit')).rows[0]?.n ?? -1;
  }

  beforeAll(async () => {
    const server = await machinePg15();
    dir = await mkdtemp(path.join(os.tmpdir(), 'syncline-metrics-'));
    sourceUrl = await freshDatabase(server, 'syncline_metrics_source');
    targetUrl = await freshDatabase(server, 'syncline_metrics_target');
    otherUrl = await freshDatabase(server, 'syncline_metrics_other');
    source = new pg.Client({ connectionString: sourceUrl });
    target = new pg.Client({ connectionString: targetUrl });
    other = new pg.Client({ connectionString: otherUrl });
    await Promise.all([source.connect(), target.connect(), other.connect()]);
    await source.query(WORKLOAD_DDL);
    await target.query(WORKLOAD_DDL);
    await installApplyAudit(target);
    await other.query('CREATE TABLE noise (id serial PRIMARY KEY, pad text)');
    capturePort = await freePort();
    applyPort = await freePort();
    await start('capture', capturePort);
    await waitFor('the slot to be streamed', async () => (await slot()).active, 30_000);
    apply = await start('apply', applyPort);
    workload = new Workload(source);
    await workload.transaction();
  });

  afterAll(async () => {
    for (const c of children) {
      if (c.exitCode !== null || c.signalCode !== null) continue;
      c.kill('SIGCONT');
      c.kill('SIGKILL');
    }
    // The server has few slots: free ours (its walsender may take a moment to notice the kill).
    await waitFor('the test slot to be dropped', async () => {
      try {
        await source?.query('SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1', [SLOT]);
        return true;
      } catch {
        return false;
      }
    }, 10_000, 200).catch(() => undefined);
    await Promise.all([source?.end(), target?.end(), other?.end()].map((p) => p?.catch(() => undefined)));
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('lag rises to the length of a real 10 s pause of apply and falls back once it resumes', async () => {
    const load = steadyLoad(workload, 300);
    try {
      // Apply is going (a loaded machine can take seconds to start a process) before the window is read.
      await waitFor('apply applying', async () => sumOf(await mustScrape(applyPort), 'sync_events_applied_total') > 500, 60_000, 200);
      // Under steady load, before the pause: lag stays low.
      let before = 0;
      let samples = 0;
      const warmEnd = Date.now() + 5000;
      while (Date.now() < warmEnd) {
        const s = await scrape(applyPort);
        if (s) {
          before = Math.max(before, maxOf(s, 'sync_lag_seconds'));
          samples++;
        }
        await sleep(200);
      }
      expect(samples).toBeGreaterThan(10);
      expect(before).toBeLessThan(2);
      const appliedBefore = sumOf(await mustScrape(applyPort), 'sync_events_applied_total');
      expect(appliedBefore).toBeGreaterThan(500);

      apply.kill('SIGSTOP');
      const pausedAt = Date.now();
      await sleep(10_000);
      apply.kill('SIGCONT');
      const resumedAt = Date.now();
      expect(resumedAt - pausedAt).toBeLessThan(10_500);

      // Every ~200 ms (50 ms for the first 2 s: catching up 10 s of load takes a few hundred
      // ms, and the peak is only true that long): the peak, and when lag is under 2 s again.
      const series: { t: number; lag: number }[] = [];
      let peak = 0;
      let peakAt = 0;
      let fellAt: number | undefined;
      while (Date.now() - resumedAt < 15_000) {
        const s = await scrape(applyPort);
        if (s) {
          const lag = maxOf(s, 'sync_lag_seconds');
          const t = Date.now() - resumedAt;
          series.push({ t, lag });
          if (lag > peak) {
            peak = lag;
            peakAt = t;
            fellAt = undefined;
          } else if (peak >= 8 && lag < 2 && fellAt === undefined) {
            fellAt = t;
          }
          // Back under 2 s for a full second after the peak: done.
          if (fellAt !== undefined && t - fellAt > 1000) break;
        }
        await sleep(Date.now() - resumedAt < 2000 ? 50 : 200);
      }
      process.stdout.write(
        `lag before pause max ${before.toFixed(2)} s; after a ${((resumedAt - pausedAt) / 1000).toFixed(1)} s pause: peak ${peak.toFixed(2)} s at +${peakAt} ms, ` +
          `under 2 s at +${fellAt ?? 'never'} ms; series ${series.map((p) => `${p.t}:${p.lag.toFixed(1)}`).join(' ')}\n`,
      );
      expect(peak).toBeGreaterThanOrEqual(8);
      expect(peak).toBeLessThanOrEqual(14);
      expect(fellAt).toBeDefined();
      expect(fellAt ?? Infinity).toBeLessThan(15_000);
    } finally {
      await load.stop();
    }
  }, 120_000);

  it('idle with heartbeats: lag stays near 0 and the slot advances past WAL of other databases', async () => {
    await waitFor('apply to catch up', caughtUp, 30_000, 200);
    const c0 = await mustScrape(capturePort);
    const captureLsn0 = maxOf(c0, 'sync_capture_lsn');
    const { rows } = await other.query<{ lsn: string }>('SELECT pg_current_wal_lsn()::text AS lsn');
    const walAtStart = rows[0]?.lsn ?? '';
    const slotAtStart = (await slot()).confirmed;

    // 15 s without a write at the source, while another database of the server writes WAL.
    let maxLag = 0;
    const captureLsns: number[] = [captureLsn0];
    const idleEnd = Date.now() + 15_000;
    while (Date.now() < idleEnd) {
      await other.query("INSERT INTO noise (pad) SELECT repeat('x', 200) FROM generate_series(1, 2000)");
      const [a, c] = await Promise.all([scrape(applyPort), scrape(capturePort)]);
      if (a) maxLag = Math.max(maxLag, maxOf(a, 'sync_lag_seconds'));
      if (c) captureLsns.push(maxOf(c, 'sync_capture_lsn'));
      await sleep(500);
    }
    const slotAtEnd = (await slot()).confirmed;
    const { rows: cmp } = await source.query<{ passed_other_wal: boolean; moved: boolean }>(
      'SELECT $1::pg_lsn > $2::pg_lsn AS passed_other_wal, $1::pg_lsn > $3::pg_lsn AS moved',
      [slotAtEnd, walAtStart, slotAtStart],
    );
    const distinct = new Set(captureLsns).size;
    process.stdout.write(
      `idle 15 s: max lag ${maxLag.toFixed(2)} s; sync_capture_lsn took ${distinct} values; slot ${slotAtStart} -> ${slotAtEnd} (WAL at start ${walAtStart})\n`,
    );
    expect(maxLag).toBeLessThan(2);
    // Heartbeats move the confirmed position every second or so.
    expect(distinct).toBeGreaterThanOrEqual(5);
    for (let i = 1; i < captureLsns.length; i++) expect(captureLsns[i]).toBeGreaterThanOrEqual(captureLsns[i - 1] ?? 0);
    expect(cmp[0]).toEqual({ passed_other_wal: true, moved: true });
  }, 40_000);

  it('a real replay of the stream shows as duplicates, and the rate is the replayed share', async () => {
    await waitFor('apply to catch up', caughtUp, 30_000, 200);
    expect(await inSync()).toBe(true);
    const old = sumOf(await mustScrape(capturePort), 'sync_events_published_total');
    const audit0 = await auditRows();

    const exited = new Promise<number | null>((r) => apply.once('exit', (code) => r(code)));
    apply.kill('SIGTERM');
    expect(await exited).toBe(0);
    const deleted = await target.query('DELETE FROM syncline.positions WHERE group_id = $1', [GROUP]);
    expect(deleted.rowCount).toBeGreaterThan(0);
    apply = await start('apply', applyPort, 1);
    const restartedAt = Date.now();

    // Only old changes: the whole stream is re-read and every change is skipped.
    await waitFor('the replay to finish', async () => sumOf(await mustScrape(applyPort), 'sync_events_consumed_total') >= old, 30_000, 200);
    // The rate is fed once a batch's outcome is known, a moment after its changes count as consumed.
    await waitFor('the replay rate', async () => maxOf(await mustScrape(applyPort), 'sync_duplicate_rate') > 0.9, 10_000, 100);
    const replay = await mustScrape(applyPort);
    const replayRate = maxOf(replay, 'sync_duplicate_rate');
    const stale = sumOf(replay, 'sync_events_stale_total');
    const applied = sumOf(replay, 'sync_events_applied_total');
    expect(sumOf(replay, 'sync_events_consumed_total')).toBe(old);
    expect(replayRate).toBeGreaterThan(0.9);
    expect(stale).toBeGreaterThan(0);
    // Not one row written. (A replayed DELETE that the first run folded into a re-insert of
    // the same key in one batch writes its tombstone now, which the sink counts as applied.)
    expect(applied).toBeLessThan(old * 0.01);
    // The target did not change: still equal to the source, and no row version was written.
    expect(await inSync()).toBe(true);
    expect(await auditRows()).toBe(audit0);

    // Then new changes: inside the same 60 s window the rate is the replayed share.
    while (workload.changes < 1.6 * old) await workload.transaction();
    const fresh = sumOf(await waitForPublished(old), 'sync_events_published_total') - old;
    await waitFor('apply to catch up', caughtUp, 30_000, 200);
    const mixed = await mustScrape(applyPort);
    const mixedRate = maxOf(mixed, 'sync_duplicate_rate');
    const expected = old / (old + fresh);
    const elapsed = Date.now() - restartedAt;
    process.stdout.write(
      `replay of ${old} changes: duplicate rate ${replayRate.toFixed(3)}, stale ${stale}, applied ${applied}; ` +
        `then ${fresh} new: rate ${mixedRate.toFixed(3)} (expected ${expected.toFixed(3)}), ${elapsed} ms after the restart\n`,
    );
    // Every bucket still inside SlidingRate's 60 s window.
    expect(elapsed).toBeLessThan(55_000);
    expect(Math.abs(mixedRate - expected)).toBeLessThan(0.05);
    expect(sumOf(mixed, 'sync_events_applied_total')).toBeGreaterThan(0);
    expect(await inSync()).toBe(true);

    async function waitForPublished(moreThan: number): Promise<Scrape> {
      let last: Scrape | undefined;
      await waitFor('capture to publish the new changes', async () => {
        last = await mustScrape(capturePort);
        const published = sumOf(last, 'sync_events_published_total');
        return published > moreThan && published === sumOf(last, 'sync_events_captured_total');
      }, 30_000, 200);
      return last as Scrape;
    }
  }, 60_000);
});
