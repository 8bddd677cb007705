import { createHash, timingSafeEqual } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { errorMessage, SynclineError } from '../core/errors.js';
import { formatLsn } from '../core/lsn.js';
import { redactUrl } from '../core/redact.js';
import { deadLetterSummary, type DeadLetterQueue } from '../dlq/dead-letter-queue.js';
import { replayDeadLetters } from '../dlq/replay.js';
import type { Logger } from '../log/logger.js';
import type { Metrics } from '../metrics/metrics.js';
import type { Sink } from '../sink/sink.js';
import { DASHBOARD_HTML, DASHBOARD_SCRIPT, DASHBOARD_STYLE } from './page.js';

export interface DashboardOptions {
  metrics: Metrics;
  /** The dead-letter queue to list, replay and purge; undefined when it is disabled. */
  deadLetters?: DeadLetterQueue | undefined;
  /** The sink replays go through; undefined for a capture-only process (replay is refused). */
  sink?: Sink | undefined;
  /** Consumer group whose positions the sink keeps (replays write rows only, no positions). */
  group: string;
  /**
   * Access token for replay and purge; undefined or empty disables both. When set, the read
   * endpoints that reveal data (`/api/status`, `/api/dlq`) need it too.
   */
  token?: string | undefined;
  /**
   * `monitoring.host`: a name the dashboard is reached by, accepted in the Host header next
   * to localhost, 127.0.0.1, [::1] and the address the connection came in on.
   */
  host?: string | undefined;
  log?: Logger | undefined;
  sampleIntervalMs?: number;
  maxSamples?: number;
}

/** Request handling for the dashboard, mounted next to `/metrics` by `startMetricsServer`. */
export interface Dashboard {
  /** Handles the request and returns true, or returns false when the path is not the dashboard's. */
  handle(req: IncomingMessage, res: ServerResponse): boolean;
  /** Stops sampling and waits for a running replay or purge. */
  close(): Promise<void>;
}

/** One point of the history ring: taken every second. */
export interface DashboardSample {
  /** Unix milliseconds. */
  t: number;
  lag_seconds: number;
  captured_per_s: number;
  applied_per_s: number;
}

interface Totals {
  captured: number;
  applied: number;
}

const THROUGHPUT_WINDOW = 5;
const MAX_BODY_BYTES = 64 * 1024;
const MAX_IDS = 1000;
/** Entry ids: digits (the table's), or the topic's `<source>:<commit_lsn>:<seq>` / `<partition>-<offset>`. */
const ID = /^(?:[0-9]{1,19}|[0-9]{1,19}-[0-9]{1,19}|[A-Za-z0-9_.-]{1,100}:[0-9A-F]{1,8}\/[0-9A-F]{1,8}:[0-9]{1,10})$/;

const DISABLED_MESSAGE =
  'dashboard actions are disabled: set monitoring.dashboard_token in the config (or the SYNCLINE_DASHBOARD_TOKEN environment variable) and restart syncline to enable replay and purge';
const UNAUTHORIZED_MESSAGE = 'missing or wrong access token: send the header "Authorization: Bearer <monitoring.dashboard_token>"';
const DASHBOARD_PATHS = ['/', '/dashboard', '/api/status', '/api/dlq', '/api/dlq/replay', '/api/dlq/purge'];
/** Host names every dashboard accepts: the loopback ones. */
const LOOPBACK_HOSTS = ['localhost', '127.0.0.1', '[::1]'];

const sha256 = (text: string): Buffer => createHash('sha256').update(text).digest();
const cspHash = (text: string): string => `'sha256-${createHash('sha256').update(text).digest('base64')}'`;

// Only the page's own inline script and style may run; it may fetch only from this origin.
const PAGE_CSP = [
  "default-src 'none'",
  `script-src ${cspHash(DASHBOARD_SCRIPT)}`,
  `style-src ${cspHash(DASHBOARD_STYLE)}`,
  "connect-src 'self'",
  "img-src 'self' data:",
  "base-uri 'none'",
  "form-action 'none'",
  "frame-ancestors 'none'",
].join('; ');

class HttpError extends Error {
  constructor(readonly status: number, message: string) {
    super(message);
  }
}

/**
 * The dashboard: `GET /` (the page), `GET /api/status`, `GET /api/dlq?limit=` (both need
 * the token when one is configured), and the token-guarded actions `POST /api/dlq/replay`
 * and `POST /api/dlq/purge` (`{"ids": [...]}`). Every route checks the Host header.
 * Samples the metrics every second into a ring of the last `maxSamples` points, so
 * throughput is computed here from counter deltas rather than in every browser.
 */
export function createDashboard(options: DashboardOptions): Dashboard {
  return new DashboardRoutes(options);
}

class DashboardRoutes implements Dashboard {
  private readonly samples: DashboardSample[] = [];
  private readonly totalsRing: (Totals & { t: number })[] = [];
  private readonly maxSamples: number;
  private readonly timer: NodeJS.Timeout;
  private readonly startedAt = Date.now();
  private readonly tokenDigest: Buffer | undefined;
  private sampling = false;
  private dlqDepth: { count: number; oldestAgeSeconds: number; note?: string } | undefined;
  private sinkReady: Promise<void> | undefined;
  /** Replays and purges run one at a time. */
  private actions: Promise<unknown> = Promise.resolve();

  constructor(private readonly options: DashboardOptions) {
    this.maxSamples = options.maxSamples ?? 300;
    this.tokenDigest = options.token ? sha256(options.token) : undefined;
    this.timer = setInterval(() => void this.sample(), options.sampleIntervalMs ?? 1000);
    this.timer.unref();
    void this.sample();
  }

  handle(req: IncomingMessage, res: ServerResponse): boolean {
    const url = new URL(req.url ?? '/', 'http://localhost');
    if (!DASHBOARD_PATHS.includes(url.pathname)) return false;
    if (!this.hostAllowed(req)) {
      req.resume();
      json(res, 421, {
        error: `the Host header ${JSON.stringify(req.headers.host ?? '')} is not a name of this dashboard: open it at http://localhost:<port>/ or http://127.0.0.1:<port>/, or set monitoring.host to the name you use`,
      });
      return true;
    }
    const route = `${req.method ?? 'GET'} ${url.pathname}`;
    let work: Promise<void>;
    switch (route) {
      case 'GET /':
      case 'GET /dashboard':
        // The page holds no data (it fetches it from the API), so it needs no token.
        this.page(res);
        return true;
      case 'GET /api/status':
        work = this.checkReadAccess(req).then(() => this.status()).then((body) => json(res, 200, body));
        break;
      case 'GET /api/dlq':
        work = this.checkReadAccess(req).then(() => this.list(url.searchParams.get('limit'))).then((body) => json(res, 200, body));
        break;
      case 'POST /api/dlq/replay':
        work = this.action(req, 'replay').then((body) => json(res, 200, body));
        break;
      case 'POST /api/dlq/purge':
        work = this.action(req, 'purge').then((body) => json(res, 200, body));
        break;
      default:
        json(res, 405, { error: `${req.method ?? '?'} is not allowed on ${url.pathname}` });
        return true;
    }
    work.catch((err: unknown) => {
      if (err instanceof HttpError) {
        const headers: Record<string, string> = err.status === 401 ? { 'www-authenticate': 'Bearer realm="syncline"' } : {};
        json(res, err.status, { error: err.message }, headers);
      } else {
        json(res, 503, { error: redactUrl(errorMessage(err)) });
      }
    });
    return true;
  }

  async close(): Promise<void> {
    clearInterval(this.timer);
    await this.actions.catch(() => undefined);
  }

  private page(res: ServerResponse): void {
    res.writeHead(200, {
      'content-type': 'text/html; charset=utf-8',
      'content-security-policy': PAGE_CSP,
      'x-content-type-options': 'nosniff',
      'referrer-policy': 'no-referrer',
      'cache-control': 'no-store',
    });
    res.end(DASHBOARD_HTML);
  }

  /** Takes one point of history; skipped when the previous one has not finished. */
  private async sample(): Promise<void> {
    if (this.sampling) return;
    this.sampling = true;
    try {
      const { metrics } = this.options;
      const [captured, applied, lag] = await Promise.all([metrics.captured.get(), metrics.applied.get(), metrics.lagSeconds.get()]);
      const now = Date.now();
      const totals = { t: now, captured: sum(captured.values), applied: sum(applied.values) };
      const prev = this.totalsRing[this.totalsRing.length - 1];
      const dt = prev ? (now - prev.t) / 1000 : 0;
      push(this.totalsRing, totals, THROUGHPUT_WINDOW + 1);
      push(
        this.samples,
        {
          t: now,
          lag_seconds: round(max(lag.values), 3),
          captured_per_s: prev && dt > 0 ? round(Math.max(0, totals.captured - prev.captured) / dt, 1) : 0,
          applied_per_s: prev && dt > 0 ? round(Math.max(0, totals.applied - prev.applied) / dt, 1) : 0,
        },
        this.maxSamples,
      );
      await this.refreshDepth();
    } catch (err) {
      this.options.log?.warn({ err: errorMessage(err) }, 'dashboard: sampling the metrics failed');
    } finally {
      this.sampling = false;
    }
  }

  private async refreshDepth(): Promise<void> {
    const dlq = this.options.deadLetters;
    if (!dlq) return;
    try {
      this.dlqDepth = await dlq.depth();
    } catch (err) {
      // Apply creates the table on its first start; until then the queue is empty.
      this.dlqDepth = isMissingTable(err) ? { count: 0, oldestAgeSeconds: 0, note: 'not created yet' } : undefined;
    }
  }

  private async status(): Promise<Record<string, unknown>> {
    const m = this.options.metrics;
    const [captured, applied, stale, duplicate, lag, published, consumed, retried, deadlettered, dupRate, dlqCount, dlqAge, wal, captureLsn, applyLsn] = await Promise.all([
      m.captured.get(),
      m.applied.get(),
      m.stale.get(),
      m.duplicate.get(),
      m.lagSeconds.get(),
      m.published.get(),
      m.consumed.get(),
      m.retried.get(),
      m.deadlettered.get(),
      m.duplicateRate.get(),
      m.deadletterCount.get(),
      m.deadletterOldestAge.get(),
      m.slotRetainedWalBytes.get(),
      m.captureLsn.get(),
      m.applyLsn.get(),
    ]);
    const held = (await m.tableBlocked.get()).values.filter((v) => v.value > 0).map((v) => String(v.labels.table));
    const tables = new Map<string, { table: string; captured: number; applied: number; stale: number; duplicate: number; lag_seconds: number | null }>();
    const names = [...applied.values, ...stale.values, ...duplicate.values, ...lag.values, ...captured.values].map((v) => labelOf(v.labels));
    const row = (label: string): { table: string; captured: number; applied: number; stale: number; duplicate: number; lag_seconds: number | null } => {
      const name = qualify(label, names);
      let r = tables.get(name);
      if (!r) {
        r = { table: name, captured: 0, applied: 0, stale: 0, duplicate: 0, lag_seconds: null };
        tables.set(name, r);
      }
      return r;
    };
    for (const v of captured.values) row(labelOf(v.labels)).captured += v.value;
    for (const v of applied.values) row(labelOf(v.labels)).applied += v.value;
    for (const v of stale.values) row(labelOf(v.labels)).stale += v.value;
    for (const v of duplicate.values) row(labelOf(v.labels)).duplicate += v.value;
    for (const v of lag.values) row(labelOf(v.labels)).lag_seconds = round(v.value, 3);

    const ring = this.totalsRing;
    const first = ring[0];
    const last = ring[ring.length - 1];
    const span = first && last ? (last.t - first.t) / 1000 : 0;
    const perSecond = (k: keyof Totals): number => (first && last && span > 0 ? round(Math.max(0, last[k] - first[k]) / span, 1) : 0);
    const depth = this.dlqDepth;
    const tokenSet = this.tokenDigest !== undefined;
    return {
      time: new Date().toISOString(),
      uptime_seconds: Math.round((Date.now() - this.startedAt) / 1000),
      tables: [...tables.values()].sort((a, b) => a.table.localeCompare(b.table)),
      totals: {
        captured: sum(captured.values),
        published: sum(published.values),
        consumed: sum(consumed.values),
        applied: sum(applied.values),
        stale: sum(stale.values),
        duplicate: sum(duplicate.values),
        retried: sum(retried.values),
        deadlettered: sum(deadlettered.values),
      },
      lag_seconds: round(max(lag.values), 3),
      throughput: { captured_per_s: perSecond('captured'), applied_per_s: perSecond('applied'), window_seconds: round(span, 1) },
      duplicate_rate: round(sum(dupRate.values), 4),
      dlq: {
        enabled: this.options.deadLetters !== undefined,
        depth: depth?.count ?? sum(dlqCount.values),
        oldest_age_seconds: round(depth?.oldestAgeSeconds ?? sum(dlqAge.values), 1),
        /** Tables held because their target does not fit (sync_table_blocked). */
        blocked_tables: held.sort(),
        ...(depth?.note ? { note: depth.note } : {}),
      },
      slot: { retained_wal_bytes: sum(wal.values) },
      lsn: { capture: lsnText(sum(captureLsn.values)), apply: lsnText(sum(applyLsn.values)) },
      actions: {
        enabled: tokenSet && this.options.deadLetters !== undefined,
        replay: tokenSet && this.options.deadLetters !== undefined && this.options.sink !== undefined,
        ...(tokenSet ? {} : { hint: DISABLED_MESSAGE }),
      },
      sample_interval_ms: this.options.sampleIntervalMs ?? 1000,
      samples: this.samples,
    };
  }

  private async list(limitParam: string | null): Promise<Record<string, unknown>> {
    let limit = 100;
    if (limitParam !== null) {
      if (!/^[0-9]{1,6}$/.test(limitParam) || Number(limitParam) < 1) throw new HttpError(400, 'limit must be a positive integer');
      limit = Math.min(Number(limitParam), 1000);
    }
    const dlq = this.options.deadLetters;
    if (!dlq) return { enabled: false, entries: [] };
    try {
      const entries = await dlq.list({ limit });
      return { enabled: true, limit, entries: entries.map(deadLetterSummary) };
    } catch (err) {
      if (isMissingTable(err)) return { enabled: true, limit, entries: [], note: 'not created yet' };
      throw err;
    }
  }

  private async action(req: IncomingMessage, kind: 'replay' | 'purge'): Promise<Record<string, unknown>> {
    if (!this.tokenDigest) {
      req.resume();
      throw new HttpError(403, DISABLED_MESSAGE);
    }
    if (!this.authorized(req)) {
      req.resume();
      throw new HttpError(401, UNAUTHORIZED_MESSAGE);
    }
    const dlq = this.options.deadLetters;
    if (!dlq) {
      req.resume();
      throw new HttpError(409, 'the dead-letter queue is disabled (dead_letter.enabled: false)');
    }
    const ids = parseIds(await readBody(req));
    const sink = this.options.sink;
    if (kind === 'replay' && !sink) throw new HttpError(409, 'replay needs a sink: this process runs capture only; use the dashboard of a run or apply process, or syncline dlq replay');
    const run = async (): Promise<Record<string, unknown>> => {
      const entries = await dlq.list({ ids, limit: ids.length });
      const found = new Set(entries.map((e) => e.id));
      const missing = ids.filter((id) => !found.has(id));
      if (kind === 'purge') {
        const purged = await dlq.remove(entries.map((e) => e.id));
        this.options.log?.info({ purged, requested: ids.length }, 'dashboard: dead-letter entries purged');
        await this.refreshDepth();
        return { ok: true, purged, missing };
      }
      await this.prepareSink(sink as Sink);
      const result = await replayDeadLetters(entries, sink as Sink, dlq, this.options.group);
      this.options.log?.info({ replayed: result.replayed, failed: result.failed.length, held: result.held.length, requested: ids.length }, 'dashboard: dead-letter entries replayed');
      await this.refreshDepth();
      return { ok: result.failed.length === 0, ...result, failed: result.failed.map((f) => ({ id: f.id, error: redactUrl(f.error) })), missing };
    };
    const done = this.actions.then(run, run);
    this.actions = done.catch(() => undefined);
    return done;
  }

  private prepareSink(sink: Sink): Promise<void> {
    this.sinkReady ??= sink.prepare().catch((err: unknown) => {
      this.sinkReady = undefined;
      throw err;
    });
    return this.sinkReady;
  }

  /**
   * DNS rebinding guard: a page of another site that got its name to resolve to this machine
   * reaches the dashboard with that name in the Host header, so only our own names pass —
   * the loopback names, `monitoring.host` when it is a name or a specific address, and the
   * local address the connection arrived on (what a browser sends when opened by IP). The
   * port is not compared: SSH tunnels and `kubectl port-forward` change it, and the attack
   * depends on the name alone. /metrics, /healthz and /readyz (served before the dashboard,
   * in metrics/server.ts) are not checked: Prometheus and probes send the target address
   * they were configured with, and those endpoints hold counts, not row data.
   */
  private hostAllowed(req: IncomingMessage): boolean {
    const header = req.headers.host;
    if (header === undefined) return true; // HTTP/1.0 without Host: not a browser of today
    const name = hostName(header);
    if (LOOPBACK_HOSTS.includes(name)) return true;
    const configured = this.options.host ? hostName(this.options.host) : '';
    if (configured !== '' && !['0.0.0.0', '[::]', '::'].includes(configured) && name === configured) return true;
    const local = req.socket.localAddress;
    if (local === undefined) return false;
    const mapped = local.startsWith('::ffff:') ? local.slice(7) : local;
    return name === mapped.toLowerCase() || name === `[${local.toLowerCase()}]`;
  }

  /** With a token configured, the data of the read endpoints is for its holders only. */
  private async checkReadAccess(req: IncomingMessage): Promise<void> {
    if (this.tokenDigest && !this.authorized(req)) throw new HttpError(401, UNAUTHORIZED_MESSAGE);
  }

  private authorized(req: IncomingMessage): boolean {
    const header = req.headers.authorization ?? '';
    const m = /^Bearer\s+(\S+)\s*$/i.exec(header);
    if (!m?.[1] || !this.tokenDigest) return false;
    // Compare digests: constant time, and equal lengths whatever was sent.
    return timingSafeEqual(sha256(m[1]), this.tokenDigest);
  }
}


/** The host part of a Host header (or address), lower case, IPv6 kept in brackets. */
function hostName(header: string): string {
  const h = header.trim().toLowerCase();
  if (h.startsWith('[')) {
    const end = h.indexOf(']');
    return end < 0 ? h : h.slice(0, end + 1);
  }
  // A bare IPv6 address (monitoring.host: ::1) has colons but no port.
  if (h.split(':').length > 2) return `[${h}]`;
  const colon = h.indexOf(':');
  return colon < 0 ? h : h.slice(0, colon);
}

function parseIds(body: string): string[] {
  let parsed: unknown;
  try {
    parsed = JSON.parse(body);
  } catch {
    throw new HttpError(400, 'the body must be JSON: {"ids": ["1", "2"]}');
  }
  const ids: unknown = parsed !== null && typeof parsed === 'object' && !Array.isArray(parsed) ? (parsed as { ids?: unknown }).ids : undefined;
  if (!Array.isArray(ids) || ids.length === 0) throw new HttpError(400, 'ids must be a non-empty array of entry ids');
  if (ids.length > MAX_IDS) throw new HttpError(400, `at most ${MAX_IDS} ids per request`);
  const out: string[] = [];
  for (const id of ids as unknown[]) {
    const text = typeof id === 'number' && Number.isSafeInteger(id) ? String(id) : id;
    if (typeof text !== 'string' || !ID.test(text)) throw new HttpError(400, 'every id must be an entry id (digits, source:commit_lsn:seq or partition-offset)');
    if (!out.includes(text)) out.push(text);
  }
  return out;
}

function readBody(req: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > MAX_BODY_BYTES) {
        reject(new HttpError(413, `the body is larger than ${MAX_BODY_BYTES} bytes`));
        req.destroy();
        return;
      }
      chunks.push(chunk);
    });
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

function json(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  if (res.headersSent) {
    res.end();
    return;
  }
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'cache-control': 'no-store', 'x-content-type-options': 'nosniff', ...headers });
  res.end(`${JSON.stringify(body)}\n`);
}

function isMissingTable(err: unknown): boolean {
  const cause = err instanceof SynclineError ? err.cause : err;
  return cause !== null && typeof cause === 'object' && (cause as { code?: unknown }).code === '42P01';
}

interface Value {
  value: number;
  labels: Partial<Record<string, string | number>>;
}

function labelOf(labels: Value['labels']): string {
  const t = labels.table;
  return t === undefined ? '(all)' : String(t);
}

/** Capture labels tables by name, apply by `schema.name`: join a bare name to its unique qualified one. */
function qualify(label: string, all: readonly string[]): string {
  if (label.includes('.')) return label;
  const matches = new Set(all.filter((n) => n.endsWith(`.${label}`)));
  const [only] = matches;
  return matches.size === 1 && only !== undefined ? only : label;
}

function sum(values: readonly Value[]): number {
  let s = 0;
  for (const v of values) s += v.value;
  return s;
}

function max(values: readonly Value[]): number {
  let m = 0;
  for (const v of values) if (v.value > m) m = v.value;
  return m;
}

function round(n: number, digits: number): number {
  const f = 10 ** digits;
  return Math.round(n * f) / f;
}

function lsnText(n: number): string | null {
  return n > 0 && Number.isSafeInteger(n) ? formatLsn(BigInt(n)) : null;
}

function push<T>(ring: T[], item: T, limit: number): void {
  ring.push(item);
  while (ring.length > limit) ring.shift();
}
