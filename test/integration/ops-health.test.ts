import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { pipelineReadiness } from '../../src/api/monitoring.js';
import { runPipeline } from '../../src/api/run-pipeline.js';
import { openStream } from '../../src/compose/stream.js';
import { parseConfig } from '../../src/config/load.js';
import { silentLogger } from '../../src/log/logger.js';
import { Metrics } from '../../src/metrics/metrics.js';
import { lagCheck, readinessProbe, type ReadinessReport } from '../../src/http/readiness.js';
import { startHttpServer, type HttpServer } from '../../src/http/server.js';
import type { Stream } from '../../src/stream/stream.js';
import { freePort, freshDatabase, machinePg15, waitFor, type PgServer, uniqueName } from '../helpers/postgres.js';

const SLOT = uniqueName('syncline_ops_health');

interface ReadyBody extends ReadinessReport {
  failing?: string[];
}

async function get(url: string): Promise<{ status: number; body: string }> {
  const res = await fetch(url);
  return { status: res.status, body: await res.text() };
}

async function readyz(server: HttpServer): Promise<{ status: number; body: ReadyBody }> {
  const r = await get(`${server.url}/readyz`);
  return { status: r.status, body: JSON.parse(r.body) as ReadyBody };
}

describe('/readyz from plain check callbacks', () => {
  it('200 with every check when all pass; 503 naming each failing check and why', async () => {
    const metrics = new Metrics();
    let sinkDown = false;
    const server = await startHttpServer({
      metrics,
      host: '127.0.0.1',
      port: 0,
      readiness: readinessProbe(
        {
          source: async () => 'SELECT 1 in 1 ms',
          sink: async () => {
            if (sinkDown) throw new Error('connect ECONNREFUSED for postgres://app:hunter2@db:5432/x');
            return 'SELECT 1 in 2 ms';
          },
          stream: () => (sinkDown ? new Promise<string>(() => undefined) : Promise.resolve('end offsets of 4 partitions')),
        },
        300,
      ),
    });
    try {
      const up = await readyz(server);
      expect(up.status).toBe(200);
      expect(up.body).toEqual({
        ready: true,
        checks: { source: { ok: true, detail: 'SELECT 1 in 1 ms' }, sink: { ok: true, detail: 'SELECT 1 in 2 ms' }, stream: { ok: true, detail: 'end offsets of 4 partitions' } },
      });
      sinkDown = true;
      const t0 = Date.now();
      const down = await readyz(server);
      expect(Date.now() - t0).toBeLessThan(2000);
      expect(down.status).toBe(503);
      expect(down.body.ready).toBe(false);
      expect(down.body.failing).toEqual(['sink', 'stream']);
      expect(down.body.checks.source?.ok).toBe(true);
      expect(down.body.checks.sink?.detail).toMatch(/ECONNREFUSED/);
      expect(down.body.checks.sink?.detail).not.toContain('hunter2');
      expect(down.body.checks.stream?.detail).toBe('no answer within 300 ms');
      // Liveness and metrics are unaffected.
      expect((await get(`${server.url}/healthz`)).status).toBe(200);
      const m = await get(`${server.url}/metrics`);
      expect(m.status).toBe(200);
      expect(m.body).toContain('sync_deadletter_count 0');
    } finally {
      await server.close();
    }
  });

  it('without a readiness function /readyz is 200 with no checks', async () => {
    const server = await startHttpServer({ metrics: new Metrics(), host: '127.0.0.1', port: 0 });
    try {
      expect(await readyz(server)).toEqual({ status: 200, body: { ready: true, checks: {} } });
    } finally {
      await server.close();
    }
  });

  it('lag: ready while max(sync_lag_seconds) < lag_critical, names the worst table otherwise', async () => {
    const metrics = new Metrics();
    const check = lagCheck(metrics, 30);
    expect(await check()).toBe('no change applied yet');
    metrics.lagSeconds.set({ table: 'public.a' }, 2.5);
    metrics.lagSeconds.set({ table: 'public.b' }, 1);
    expect(await check()).toMatch(/2\.5 s \(public\.a\) < 30 s/);
    metrics.lagSeconds.set({ table: 'public.b' }, 45);
    await expect(check()).rejects.toThrow(/max sync_lag_seconds is 45 s \(public\.b\), not below monitoring\.alerts\.lag_critical = 30 s/);
    metrics.lagSeconds.set({ table: 'public.b' }, 30);
    await expect(check()).rejects.toThrow(/not below/);
  });
});

describe('pipeline readiness against PostgreSQL 15', () => {
  let server: PgServer;
  let dir: string;
  let sourceUrl: string;
  let targetUrl: string;

  beforeAll(async () => {
    server = await machinePg15();
    dir = await mkdtemp(path.join(os.tmpdir(), 'syncline-ops-health-'));
    sourceUrl = await freshDatabase(server, 'syncline_ops_health_src');
    targetUrl = await freshDatabase(server, 'syncline_ops_health_tgt');
    for (const url of [sourceUrl, targetUrl]) {
      const c = new pg.Client({ connectionString: url });
      await c.connect();
      await c.query('CREATE TABLE items (id int PRIMARY KEY, v text)');
      await c.end();
    }
  }, 120_000);

  afterAll(async () => {
    const admin = new pg.Client({ connectionString: server.url('postgres') });
    await admin.connect();
    await admin.query('SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1 AND NOT active', [SLOT]);
    await admin.end();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  const configFor = (src: string, tgt: string, port = 0): ReturnType<typeof parseConfig> =>
    parseConfig(
      `source:
  url: ${src}
  slots: [{ name: ${SLOT}, publication: syncline_ops_health_pub, tables: [items] }]
stream: { path: ${path.join(dir, 'stream')}, partitions: 2 }
consumer: { group_id: ops_health }
sink: { url: ${tgt} }
monitoring: { port: ${port}, alerts: { lag_critical: 30 } }
`,
      {},
    );

  it('run: /readyz is 200 with source, stream, sink and lag checks while the pipeline runs', async () => {
    const metrics = new Metrics();
    const port = await freePort();
    const ctl = new AbortController();
    const done = runPipeline(configFor(sourceUrl, targetUrl, port), 'run', silentLogger(), ctl.signal, metrics);
    done.catch(() => undefined);
    const url = `http://127.0.0.1:${port}/readyz`;
    try {
      let last: { status: number; body: string } | undefined;
      await waitFor('/readyz 200', async () => {
        last = await get(url).catch(() => undefined);
        return last?.status === 200;
      }, 30_000, 200);
      const body = JSON.parse(last?.body ?? '{}') as ReadyBody;
      expect(Object.keys(body.checks).sort()).toEqual(['lag', 'sink', 'source', 'stream']);
      expect(body.checks.source?.detail).toMatch(/^SELECT 1 in \d+ ms$/);
      expect(body.checks.sink?.detail).toMatch(/^SELECT 1 in \d+ ms$/);
      expect(body.checks.stream?.detail).toMatch(/embedded stream answered end offsets of 2 partitions/);
      // A change flows through; readiness stays green.
      const c = new pg.Client({ connectionString: sourceUrl });
      await c.connect();
      await c.query("INSERT INTO items VALUES (1, 'x')");
      await c.end();
      const t = new pg.Client({ connectionString: targetUrl });
      await t.connect();
      await waitFor('row applied', async () => (await t.query('SELECT count(*)::int AS n FROM items')).rows[0]?.n === 1);
      await t.end();
      expect((await get(url)).status).toBe(200);
    } finally {
      ctl.abort();
      await done;
    }
  });

  it('names an unreachable source and sink with the reason, without passwords; checks follow the role', async () => {
    const stream = await openStream(configFor(sourceUrl, targetUrl));
    try {
      const bad = configFor('postgres://postgres:hunter2@127.0.0.1:1/nowhere', 'postgres://postgres:hunter2@127.0.0.1:1/nowhere');
      const report = await pipelineReadiness(bad, 'run', new Metrics(), () => stream)();
      expect(report.ready).toBe(false);
      expect(report.checks.source).toMatchObject({ ok: false, detail: expect.stringMatching(/ECONNREFUSED/) });
      expect(report.checks.sink).toMatchObject({ ok: false, detail: expect.stringMatching(/ECONNREFUSED/) });
      expect(report.checks.stream?.ok).toBe(true);
      expect(report.checks.lag?.ok).toBe(true);
      expect(JSON.stringify(report)).not.toContain('hunter2');

      const notOpen = await pipelineReadiness(configFor(sourceUrl, targetUrl), 'capture', new Metrics(), () => undefined)();
      expect(Object.keys(notOpen.checks).sort()).toEqual(['source', 'stream']);
      expect(notOpen.checks.stream).toEqual({ ok: false, detail: 'stream not opened yet' });
      expect(notOpen.checks.source?.ok).toBe(true);

      const apply = await pipelineReadiness(configFor(sourceUrl, targetUrl), 'apply', new Metrics(), () => stream)();
      expect(apply.ready).toBe(true);
      expect(Object.keys(apply.checks).sort()).toEqual(['lag', 'sink', 'stream']);
    } finally {
      await stream.close();
    }
  });

  it('a stream that does not answer within 2 s fails the stream check', async () => {
    const hanging = { endOffsets: () => new Promise<Map<number, bigint>>(() => undefined) } as unknown as Stream;
    const t0 = Date.now();
    const report = await pipelineReadiness(configFor(sourceUrl, targetUrl), 'apply', new Metrics(), () => hanging)();
    expect(Date.now() - t0).toBeGreaterThanOrEqual(1900);
    expect(Date.now() - t0).toBeLessThan(5000);
    expect(report.checks.stream).toEqual({ ok: false, detail: 'no answer within 2000 ms' });
    expect(report.checks.sink?.ok).toBe(true);
  });
});
