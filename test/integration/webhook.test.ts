import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runPipeline } from '../../src/api/run-pipeline.js';
import { parseConfig } from '../../src/config/load.js';
import type { ChangeEvent } from '../../src/core/change.js';
import { PrerequisiteError, SynclineError } from '../../src/core/errors.js';
import { Metrics } from '../../src/metrics/metrics.js';
import { WebhookSink, idempotencyKeyOf } from '../../src/sink/webhook/webhook-sink.js';
import { ChangeFactory } from '../contract/sink-contract.js';
import { freshDatabase, machinePg15, testLogger, waitFor, slotStreaming, uniqueName } from '../helpers/postgres.js';
import { REDIS_URL, dropKeys, requireRedis } from '../helpers/redis.js';

const SLOT = uniqueName('syncline_hook');

type HookEvent = ChangeEvent & { idempotency_key: string };

interface Delivery {
  headers: http.IncomingHttpHeaders;
  events: HookEvent[];
  status: number;
}

/**
 * A webhook receiver on node:http. `decide` picks each request's status; the events of a 2xx
 * request are counted per idempotency key (a non-2xx request takes none of its changes).
 */
class Receiver {
  readonly deliveries: Delivery[] = [];
  readonly counts = new Map<string, number>();
  decide: (events: HookEvent[], headers: http.IncomingHttpHeaders) => number = () => 200;
  /** Milliseconds before answering. */
  delayMs = 0;
  private server!: http.Server;
  url = '';

  async start(): Promise<void> {
    this.server = http.createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        const body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as HookEvent | HookEvent[];
        const events = Array.isArray(body) ? body : [body];
        const status = this.decide(events, req.headers);
        this.deliveries.push({ headers: req.headers, events, status });
        if (status < 300) for (const e of events) this.counts.set(e.idempotency_key, (this.counts.get(e.idempotency_key) ?? 0) + 1);
        setTimeout(() => res.writeHead(status, { 'content-type': 'text/plain' }).end(status < 300 ? 'ok' : `refused (${status})`), this.delayMs);
      });
    });
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', resolve));
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}/hook`;
  }

  delivered(): number {
    return this.counts.size;
  }

  async stop(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise((resolve) => this.server.close(resolve));
  }
}

async function counter(metrics: Metrics, name: string): Promise<number> {
  const m = await metrics.registry.getSingleMetric(name)?.get();
  return (m?.values ?? []).reduce((s, v) => s + v.value, 0);
}

describe('webhook sink: PostgreSQL 15 → embedded stream → HTTP receiver, with the Redis dedup backend', () => {
  const run = randomBytes(3).toString('hex');
  const dedupPrefix = `synchook_${run}`;
  let redis: Awaited<ReturnType<typeof requireRedis>>;
  let dir: string;
  let source: pg.Client;
  let dlq: pg.Client;
  let receiver: Receiver;
  let configText: string;

  beforeAll(async () => {
    redis = await requireRedis();
    const server = await machinePg15();
    dir = await mkdtemp(path.join(os.tmpdir(), 'syncline-hook-'));
    const sourceUrl = await freshDatabase(server, 'syncline_hook_src');
    const dlqUrl = await freshDatabase(server, 'syncline_hook_dlq');
    source = new pg.Client({ connectionString: sourceUrl });
    dlq = new pg.Client({ connectionString: dlqUrl });
    await source.connect();
    await dlq.connect();
    await source.query('CREATE TABLE hook (id integer PRIMARY KEY, v integer NOT NULL, note text)');
    receiver = new Receiver();
    await receiver.start();
    configText = `source:
  url: ${sourceUrl}
  slots: [{ name: ${SLOT}, publication: syncline_hook_pub, tables: [hook] }]
  snapshot: never # the tests count the WAL's changes; a first snapshot running late (busy machine) would deliver the rows a second time
stream: { path: ${path.join(dir, 'stream')}, partitions: 3 }
consumer:
  group_id: hook
  batch_size: 64
  retry: { backoff_base_ms: 20, backoff_max_ms: 200 }
  deduplication: { backend: redis, url: ${REDIS_URL}, ttl_seconds: 3600, key_pattern: "${dedupPrefix}:{source}:{table}:{lsn}" }
sink: { type: webhook, url: ${receiver.url} }
dead_letter: { url: ${dlqUrl} }
monitoring: { enabled: false }
`;
  }, 120_000);

  afterAll(async () => {
    await source?.end();
    await dlq?.end();
    await receiver?.stop();
    if (redis) {
      await dropKeys(redis, dedupPrefix);
      redis.disconnect();
    }
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  async function start(role: 'run' | 'apply', metrics: Metrics): Promise<{ stop: () => Promise<void> }> {
    const ctl = new AbortController();
    const done = runPipeline(parseConfig(configText, {}), role, await testLogger(), ctl.signal, metrics);
    done.catch(() => undefined);
    return {
      stop: async () => {
        ctl.abort();
        await done;
      },
    };
  }

  async function deadLetters(): Promise<{ row_key: string; error_code: string; error: string }[]> {
    try {
      return (await dlq.query('SELECT row_key, error_code, error FROM syncline.dead_letter ORDER BY id')).rows;
    } catch {
      return []; // not created yet
    }
  }

  const expectedKeys = new Set<string>();
  let poisonKey = '';

  it('delivers batches with idempotency keys, retries a 503, dead-letters the one change refused with 400', async () => {
    let refusedFirst = false;
    receiver.decide = (events) => {
      if (!refusedFirst) {
        refusedFirst = true;
        return 503;
      }
      return events.some((e) => e.payload?.v === '13') ? 400 : 200;
    };
    const metrics = new Metrics();
    const p = await start('run', metrics);
    await waitFor('slot active', async () => (await slotStreaming(source, SLOT)));
    await source.query("INSERT INTO hook SELECT g, CASE WHEN g = 50 THEN 13 ELSE g * 2 END, 'n' || g FROM generate_series(1, 200) g");
    // COPY writes up to 1,000 rows per WAL record: these 100 changes share one `lsn`, so the
    // dedup key pattern (…:{lsn}) is the same for all of them, and none may be lost to it.
    await source.query("COPY hook (id, v) FROM PROGRAM 'seq 1001 1100 | sed \"s/$/\\t7/\"'");
    const { rows } = await source.query<{ n: number }>('SELECT count(*)::int AS n FROM hook');
    expect(rows[0]?.n).toBe(300);
    await waitFor('299 changes delivered and 1 dead-lettered', async () => receiver.delivered() === 299 && (await deadLetters()).length === 1, 30_000);
    await p.stop();

    // Every change delivered exactly once, each request's header naming its events' keys.
    expect([...receiver.counts.values()].every((n) => n === 1)).toBe(true);
    for (const d of receiver.deliveries) {
      expect(d.headers['idempotency-keys']).toBe(d.events.map((e) => e.idempotency_key).join(','));
      for (const e of d.events) expect(e.idempotency_key).toBe(idempotencyKeyOf(e));
    }
    expect(receiver.deliveries.some((d) => d.status === 200 && d.events.length > 1)).toBe(true);
    expect(receiver.deliveries[0]?.status).toBe(503);
    expect(await counter(metrics, 'sync_events_retried_total')).toBeGreaterThan(0);
    // The COPY rows share WAL records (so `lsn` and the dedup key) and still all arrived.
    const copied = receiver.deliveries.filter((d) => d.status === 200).flatMap((d) => d.events).filter((e) => Number(e.key.id) > 1000);
    expect(copied).toHaveLength(100);
    expect(new Set(copied.map((e) => e.lsn)).size).toBeLessThan(copied.length);
    const letters = await deadLetters();
    expect(letters[0]).toMatchObject({ row_key: '["50"]', error_code: 'WEBHOOK_400' });
    expect(letters[0]?.error).toContain('refused (400)');
    for (const k of receiver.counts.keys()) expectedKeys.add(k);
    poisonKey = receiver.deliveries.flatMap((d) => d.events).find((e) => e.payload?.v === '13')?.idempotency_key ?? '';
    expect(poisonKey).not.toBe('');
    expect(receiver.counts.has(poisonKey)).toBe(false);
  }, 90_000);

  it('replaying the whole stream delivers nothing twice: the dedup backend skips and counts the duplicates', async () => {
    receiver.decide = () => 200;
    const before = receiver.deliveries.length;
    // Forget the group's stream offsets (the webhook stores no positions): apply re-reads everything.
    await rm(path.join(dir, 'stream', 'groups'), { recursive: true, force: true });
    const metrics = new Metrics();
    const p = await start('apply', metrics);
    await waitFor('the replay to be read', async () => (await counter(metrics, 'sync_events_consumed_total')) >= 300, 30_000);
    // Every replayed change accounted for, so none is still on its way to the receiver: 299
    // skipped as duplicates, and the refused one parked again behind its dead letter.
    await waitFor('the replayed duplicates counted and the parked change dead-lettered', async () => (await counter(metrics, 'sync_events_duplicate_total')) >= 299 && (await counter(metrics, 'sync_events_deadlettered_total')) >= 1, 10_000);
    await p.stop();
    expect([...receiver.counts.values()].every((n) => n === 1)).toBe(true);
    expect(receiver.delivered()).toBe(299);
    // Nothing new reached the receiver (the dead-lettered row stays parked behind its letter).
    expect(receiver.deliveries.slice(before).filter((d) => d.status === 200)).toEqual([]);
    const rate = (await metrics.registry.getSingleMetric('sync_duplicate_rate')?.get())?.values[0]?.value ?? 0;
    expect(rate).toBeGreaterThan(0.9);
  }, 60_000);

  it('a failed apply is retried, not deduplicated away: delivered exactly once after 503s and a restart', async () => {
    let refused = 0;
    let accept = false;
    receiver.decide = (events) => {
      if (!accept && events.some((e) => e.key.id === '9001')) {
        refused++;
        return 503;
      }
      return 200;
    };
    const metrics = new Metrics();
    let p = await start('run', metrics);
    await source.query("INSERT INTO hook VALUES (9001, 1, 'retry me')");
    await waitFor('two refused attempts', async () => refused >= 2, 30_000);
    // Stop while the batch keeps failing: the next apply re-reads it and asks the dedup backend
    // again, which must not know the change (keys are recorded only after a delivery).
    await p.stop();
    accept = true;
    const restarted = new Metrics();
    p = await start('run', restarted);
    // Counted as applied: the sink has its answer, the batch is done and will not be sent again.
    await waitFor('row 9001 delivered and applied', async () => [...receiver.counts.keys()].some((k) => !expectedKeys.has(k)) && (await counter(restarted, 'sync_events_applied_total')) >= 1, 30_000);
    await p.stop();
    const fresh = [...receiver.counts].filter(([k]) => !expectedKeys.has(k));
    expect(fresh).toHaveLength(1);
    expect(fresh[0]?.[1]).toBe(1);
    expect([...receiver.counts.values()].every((n) => n === 1)).toBe(true);
  }, 90_000);
});

describe('WebhookSink against a node:http receiver', () => {
  const f = new ChangeFactory('public', 'unit');
  let receiver: Receiver;

  beforeAll(async () => {
    receiver = new Receiver();
    await receiver.start();
  });

  afterAll(async () => {
    await receiver.stop();
  });

  const batchOf = (n: number, from = 1): ChangeEvent[] => Array.from({ length: n }, (_, i) => f.insert('t', String(from + i), from + i, `v${from + i}`));

  it('webhook_batch: false sends one POST per change with an Idempotency-Key header', async () => {
    receiver.decide = () => 200;
    const from = receiver.deliveries.length;
    const sink = new WebhookSink({ url: receiver.url, batch: false });
    const batch = batchOf(3);
    expect(await sink.apply(batch)).toMatchObject({ applied: 3, stale: 0 });
    const got = receiver.deliveries.slice(from);
    expect(got.map((d) => d.headers['idempotency-key'])).toEqual(batch.map(idempotencyKeyOf));
    expect(got.every((d) => d.events.length === 1 && d.headers['idempotency-keys'] === undefined)).toBe(true);
  });

  it('splits a large batch into requests below the header and size limits, in order', async () => {
    receiver.decide = () => 200;
    const from = receiver.deliveries.length;
    const sink = new WebhookSink({ url: receiver.url });
    const batch = batchOf(2000, 10_000);
    expect(await sink.apply(batch)).toMatchObject({ applied: 2000 });
    const got = receiver.deliveries.slice(from);
    expect(got.length).toBeGreaterThan(1);
    expect(got.every((d) => String(d.headers['idempotency-keys']).length <= 8 * 1024)).toBe(true);
    expect(got.flatMap((d) => d.events.map((e) => e.idempotency_key))).toEqual(batch.map(idempotencyKeyOf));
  });

  it('classifies answers: 4xx permanent, 429/5xx/timeout retriable, 404 and redirects stop apply', async () => {
    const sink = new WebhookSink({ url: receiver.url, timeoutMs: 300 });
    const one = batchOf(1, 50_000);
    const outcome = async (status: number): Promise<unknown> => {
      receiver.decide = () => status;
      return sink.apply(one).catch((e: unknown) => e);
    };
    expect(await outcome(422)).toMatchObject({ code: 'WEBHOOK_422', retriable: false });
    expect(await outcome(429)).toMatchObject({ retriable: true });
    expect(await outcome(502)).toMatchObject({ retriable: true });
    expect(await outcome(404)).toBeInstanceOf(PrerequisiteError);
    expect(await outcome(308)).toBeInstanceOf(PrerequisiteError);
    receiver.decide = () => 200;
    receiver.delayMs = 1000;
    try {
      expect(await sink.apply(one).catch((e: unknown) => e)).toMatchObject({ code: 'WEBHOOK_TIMEOUT', retriable: true });
    } finally {
      receiver.delayMs = 0;
    }
    const down = new WebhookSink({ url: 'http://127.0.0.1:1/hook' });
    const err = await down.apply(one).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(SynclineError);
    expect(err).toMatchObject({ code: 'WEBHOOK_NETWORK', retriable: true });
  });

  it('a retried batch does not resend the requests the receiver already acknowledged', async () => {
    const sink = new WebhookSink({ url: receiver.url, maxChangesPerRequest: 10 });
    const batch = batchOf(30, 60_000);
    let calls = 0;
    receiver.decide = () => (++calls === 2 ? 503 : 200); // the second request of three fails once
    const from = receiver.deliveries.length;
    await expect(sink.apply(batch)).rejects.toMatchObject({ retriable: true });
    expect(await sink.apply(batch)).toMatchObject({ applied: 30 });
    const ok = receiver.deliveries.slice(from).filter((d) => d.status === 200);
    expect(ok.flatMap((d) => d.events.map((e) => e.idempotency_key)).sort()).toEqual(batch.map(idempotencyKeyOf).sort());
    // Same change twice in one batch (a republish): sent once, counted stale.
    const dup = batchOf(1, 70_000);
    expect(await sink.apply([...dup, ...dup])).toMatchObject({ applied: 1, stale: 1 });
  });
});
