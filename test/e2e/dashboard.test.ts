import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import pg from 'pg';
import pino from 'pino';
import { chromium, type Browser, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runPipeline } from '../../src/api/run-pipeline.js';
import { parseConfig } from '../../src/config/load.js';
import { createDashboard } from '../../src/dashboard/routes.js';
import { startHttpServer } from '../../src/http/server.js';
import { Metrics } from '../../src/metrics/metrics.js';
import { freePort, freshDatabase, machinePg15, waitFor, slotStreaming, uniqueName } from '../helpers/postgres.js';

const SLOT = uniqueName('syncline_dash');

/**
 * The web dashboard end to end: a real pipeline (machine PostgreSQL 15, embedded stream,
 * PostgreSQL sink) serving the page, driven by Debian's Chromium through playwright-core.
 */
const CHROMIUM = '/usr/bin/chromium';
const TOKEN = 'syncline-dash-test-token-7f3a9c';
const SCREENSHOT = path.resolve('test-output/dashboard.png');

function launchChromium(): Promise<Browser> {
  if (!existsSync(CHROMIUM)) {
    throw new Error(`Chromium is missing at ${CHROMIUM}; the dashboard test drives a real browser: apt-get install chromium (.ci/run installs it)`);
  }
  return chromium.launch({
    executablePath: CHROMIUM,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
}

describe('web dashboard (Chromium against a running pipeline)', () => {
  let dir: string;
  let source: pg.Client;
  let target: pg.Client;
  let browser: Browser | undefined;
  let stopPipeline: (() => Promise<void>) | undefined;
  let baseUrl: string;
  const logLines: string[] = [];

  beforeAll(async () => {
    browser = await launchChromium();
    const server = await machinePg15();
    dir = await mkdtemp(path.join(os.tmpdir(), 'syncline-dash-'));
    const sourceUrl = await freshDatabase(server, 'syncline_dash_source');
    const targetUrl = await freshDatabase(server, 'syncline_dash_target');
    source = new pg.Client({ connectionString: sourceUrl });
    target = new pg.Client({ connectionString: targetUrl });
    // A server restart surfaces as a failed query, not as an uncaught 'error' event.
    source.on('error', () => undefined);
    target.on('error', () => undefined);
    await source.connect();
    await target.connect();
    await source.query('CREATE TABLE items (id integer PRIMARY KEY, v integer NOT NULL, note text)');
    // The target refuses v = 13: that change is dead-lettered, every other one applies.
    await target.query('CREATE TABLE items (id integer PRIMARY KEY, v integer NOT NULL CONSTRAINT no_thirteen CHECK (v <> 13), note text)');
    const port = await freePort();
    const config = parseConfig(
      `source:
  url: ${sourceUrl}
  slots: [{ name: ${SLOT}, publication: syncline_dash_pub, tables: [items] }]
  snapshot: never # the page's totals are compared with the rows written; a first snapshot running late (busy machine) would count rows a second time
  heartbeat_interval_ms: 1000
stream: { path: ${path.join(dir, 'stream')}, partitions: 2 }
consumer: { group_id: syncline_dash, retry: { backoff_base_ms: 10, backoff_max_ms: 100 } }
sink: { url: ${targetUrl} }
monitoring: { port: ${port}, dashboard_token: ${TOKEN} }
`,
      {},
    );
    // Every log line is kept: the token must never appear in one.
    const sinkStream = new Writable({
      write(chunk: Buffer, _enc, cb) {
        logLines.push(chunk.toString('utf8'));
        cb();
      },
    });
    const log = pino({ level: 'debug' }, sinkStream);
    const ctl = new AbortController();
    const done = runPipeline(config, 'run', log, ctl.signal, new Metrics());
    done.catch(() => undefined);
    stopPipeline = async () => {
      ctl.abort();
      await done;
    };
    baseUrl = `http://127.0.0.1:${port}`;
    await waitFor('slot active', async () => (await slotStreaming(source, SLOT)), 60_000);
  }, 120_000);

  afterAll(async () => {
    await browser?.close();
    await stopPipeline?.();
    await source?.end();
    await target?.end();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  /** Writes `count` small transactions of `rows` rows each, `gapMs` apart, from id `from`. */
  async function writeRows(from: number, count: number, rows: number, gapMs: number): Promise<number> {
    let id = from;
    for (let i = 0; i < count; i++) {
      await source.query("INSERT INTO items SELECT g, g % 1000 + 1000, 'row ' || g FROM generate_series($1::int, $2::int) g", [id, id + rows - 1]);
      id += rows;
      await new Promise((r) => setTimeout(r, gapMs));
    }
    return id;
  }

  async function text(page: Page, selector: string): Promise<string> {
    return (await page.locator(selector).textContent()) ?? '';
  }

  it('shows live numbers, lists the dead letter, refuses replay without the token and replays with it', async () => {
    const page = await (browser as Browser).newPage({ viewport: { width: 1400, height: 900 } });
    const errors: string[] = [];
    page.on('pageerror', (e) => errors.push(e.message));
    page.on('console', (m) => {
      // The refused replay is logged by Chromium itself; anything else is a page error.
      if (m.type() === 'error' && !/status of 401/.test(m.text())) errors.push(m.text());
    });
    await page.goto(`${baseUrl}/`);
    // A token is configured: the page shows no data until it is given.
    await expect.poll(() => text(page, '#updated'), { timeout: 10_000 }).toMatch(/access token required/);
    await page.locator('#token').fill(TOKEN);
    await page.locator('#token-save').click();
    await expect.poll(() => text(page, '#updated'), { timeout: 10_000 }).toMatch(/^live/);
    expect(await page.title()).toBe('syncline dashboard');

    // Live numbers: totals and throughput follow the rows written at the source.
    const capturedBefore = await text(page, '#captured-total');
    const seen = new Set<string>([capturedBefore]);
    let maxRate = 0;
    let nextId = 1;
    const writing = writeRows(nextId, 25, 40, 150).then((n) => (nextId = n));
    const watch = (async () => {
      for (let i = 0; i < 40; i++) {
        seen.add(await text(page, '#applied-total'));
        maxRate = Math.max(maxRate, Number((await text(page, '#applied-rate')).replace(/,/g, '')) || 0);
        await page.waitForTimeout(250);
      }
    })();
    await Promise.all([writing, watch]);
    expect(seen.size, `applied totals seen: ${[...seen].join(' | ')}`).toBeGreaterThanOrEqual(3);
    expect(maxRate).toBeGreaterThan(0);
    await expect.poll(() => text(page, '#applied-total'), { timeout: 20_000 }).toBe(`${(nextId - 1).toLocaleString('en-US')} applied`);
    await expect.poll(() => text(page, '#tables-body'), { timeout: 5000 }).toContain('public.items');
    expect(await text(page, '#capture-lsn')).toMatch(/^[0-9A-F]+\/[0-9A-F]+$/);
    expect(await text(page, '#apply-lsn')).toMatch(/^[0-9A-F]+\/[0-9A-F]+$/);
    expect((await fetch(`${baseUrl}/api/status`)).status).toBe(401);
    expect((await fetch(`${baseUrl}/api/dlq`)).status).toBe(401);
    const status = (await (await fetch(`${baseUrl}/api/status`, { headers: { authorization: `Bearer ${TOKEN}` } })).json()) as {
      samples: unknown[]; totals: { captured: number; applied: number }; tables: { table: string; captured: number; applied: number }[];
    };
    expect(status.samples.length).toBeGreaterThan(3);
    expect(status.tables).toContainEqual(expect.objectContaining({ table: 'public.items', captured: nextId - 1, applied: nextId - 1 }));

    // A poison change lands in the dead-letter queue and in the page's table.
    const poisonId = 900_001;
    await source.query("INSERT INTO items VALUES ($1, 13, '<img src=x onerror=alert(1)>')", [poisonId]);
    const row = page.locator('#dlq-body tr[data-id]');
    await expect.poll(() => row.count(), { timeout: 30_000 }).toBe(1);
    expect(await row.first().textContent()).toContain('public.items');
    expect(await row.first().textContent()).toContain('no_thirteen');
    await expect.poll(() => text(page, '#dlq-depth'), { timeout: 5000 }).toBe('1');

    // The actions need the token: without it the server answers 401 and the page says so.
    const refused = await fetch(`${baseUrl}/api/dlq/replay`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ ids: ['1'] }) });
    expect(refused.status).toBe(401);
    const wrong = await fetch(`${baseUrl}/api/dlq/purge`, { method: 'POST', headers: { authorization: 'Bearer nope' }, body: JSON.stringify({ ids: ['1'] }) });
    expect(wrong.status).toBe(401);
    expect(((await wrong.json()) as { error: string }).error).toMatch(/Bearer/);
    // In the page, with a wrong token: reads and the replay are refused, and the page says so.
    await page.locator('#token').fill('not-the-token');
    await page.locator('#token-save').click();
    await expect.poll(() => text(page, '#updated'), { timeout: 10_000 }).toMatch(/wrong access token/);
    await row.first().locator('button[data-action="replay"]').click();
    await expect.poll(() => text(page, '#dlq-message'), { timeout: 10_000 }).toMatch(/401/);
    expect(await row.count()).toBe(1);

    // Fix the cause, give the token, replay: the entry leaves and the row reaches the target.
    await target.query('ALTER TABLE items DROP CONSTRAINT no_thirteen');
    await page.locator('#token').fill(TOKEN);
    await page.locator('#token-save').click();
    expect(await page.evaluate<string | null>("window.sessionStorage.getItem('syncline.dashboard.token')")).toBe(TOKEN);
    await row.first().locator('button[data-action="replay"]').click();
    await expect.poll(() => text(page, '#dlq-message'), { timeout: 15_000 }).toMatch(/^Replayed 1/);
    await expect.poll(() => row.count(), { timeout: 10_000 }).toBe(0);
    const replayed = await target.query<{ v: number; note: string }>('SELECT v, note FROM items WHERE id = $1', [poisonId]);
    expect(replayed.rows).toEqual([{ v: 13, note: '<img src=x onerror=alert(1)>' }]);
    await expect.poll(() => text(page, '#dlq-depth'), { timeout: 5000 }).toBe('0');

    // A definition change: the schema panel shows it with the LSN of its first change and its column diff.
    await source.query('ALTER TABLE items ADD COLUMN extra text');
    await source.query("INSERT INTO items VALUES (900002, 1, 'after the DDL', 'x')");
    let firstLsn = '';
    await waitFor('version 2 recorded', async () => {
      const { rows } = await source.query<{ first_lsn: string }>("SELECT first_lsn::text FROM syncline.schema_versions WHERE slot_name = $1 AND table_name = 'items' AND version = 2", [SLOT]);
      firstLsn = rows[0]?.first_lsn ?? '';
      return rows.length === 1;
    }, 30_000, 100);
    expect(firstLsn).toMatch(/^[0-9A-F]+\/[0-9A-F]+$/);
    const version2 = page.locator('#schemas-body tr[data-table="public.items"][data-version="2"]');
    await expect.poll(() => version2.count(), { timeout: 20_000 }).toBe(1);
    const cells = await version2.locator('td').allTextContents();
    expect(cells[0]).toBe('public.items');
    expect(cells[1]).toBe('2');
    expect(cells[2]).toBe(firstLsn);
    expect(cells[4]).toBe('+ extra text');
    expect(await page.locator('#schemas-body tr[data-version="1"] td').nth(4).textContent()).toBe('first definition');
    const withSchemas = (await (await fetch(`${baseUrl}/api/status`, { headers: { authorization: `Bearer ${TOKEN}` } })).json()) as { schemas: { versions: unknown[] } };
    expect(withSchemas.schemas.versions[0]).toEqual({ table: 'public.items', version: 2, first_lsn: firstLsn, recorded_at: expect.any(String), changes: ['+ extra text'] });

    // A little more traffic so the screenshot shows the charts moving.
    await writeRows(nextId, 10, 30, 200);
    await page.waitForTimeout(1500);
    await mkdir(path.dirname(SCREENSHOT), { recursive: true });
    await page.screenshot({ path: SCREENSHOT, fullPage: true });

    expect(errors).toEqual([]);
    expect(logLines.join('')).not.toContain(TOKEN);
    expect(logLines.join('')).toContain('dashboard: dead-letter entries replayed');
    await page.close();
  }, 180_000);

  it('serves the API read-only without a token and explains how to enable actions when none is configured', async () => {
    const metrics = new Metrics();
    const dashboard = createDashboard({ metrics, group: 'g', sampleIntervalMs: 50 });
    const server = await startHttpServer({ metrics, host: '127.0.0.1', port: 0, dashboard });
    try {
      expect(server.url).toMatch(/^http:\/\/127\.0\.0\.1:/);
      const page = await fetch(`${server.url}/`);
      expect(page.status).toBe(200);
      expect(page.headers.get('content-security-policy')).toContain("default-src 'none'");
      const html = await page.text();
      expect(html).not.toMatch(/https?:\/\/(?!www\.w3\.org\/2000\/svg)/);
      metrics.captured.inc({ table: 'public.items' }, 5);
      metrics.applied.inc({ table: 'public.items' }, 4);
      type Status = { tables: unknown[]; actions: { enabled: boolean; hint: string }; dlq: { enabled: boolean }; schemas: unknown };
      const readStatus = async (): Promise<Status> => (await (await fetch(`${server.url}/api/status`)).json()) as Status;
      await waitFor('the sampler to read the counters', async () => (await readStatus()).tables.length > 0, 5000, 20);
      const status = await readStatus();
      expect(status.tables).toEqual([{ table: 'public.items', captured: 5, applied: 4, stale: 0, duplicate: 0, lag_seconds: null }]);
      expect(status.actions.enabled).toBe(false);
      expect(status.dlq.enabled).toBe(false);
      expect(status.schemas).toEqual({ versions: [], note: 'no source to read the definitions from' });
      expect(await (await fetch(`${server.url}/api/dlq?limit=5`)).json()).toEqual({ enabled: false, entries: [] });
      expect((await fetch(`${server.url}/api/dlq?limit=x`)).status).toBe(400);
      const purge = await fetch(`${server.url}/api/dlq/purge`, { method: 'POST', headers: { authorization: `Bearer ${TOKEN}` }, body: '{"ids":["1"]}' });
      expect(purge.status).toBe(403);
      expect(((await purge.json()) as { error: string }).error).toMatch(/monitoring\.dashboard_token.*SYNCLINE_DASHBOARD_TOKEN/);
      expect((await fetch(`${server.url}/api/dlq/replay`)).status).toBe(405);
      expect((await fetch(`${server.url}/metrics`)).status).toBe(200);
      expect((await fetch(`${server.url}/nope`)).status).toBe(404);
    } finally {
      await server.close();
      await dashboard.close();
    }
  });
});
