import { changeIdOf, tableLabelOf, type ChangeEvent } from '../../core/change.js';
import { PrerequisiteError, SynclineError, errorMessage } from '../../core/errors.js';
import type { ApplyOutcome, Sink } from '../sink.js';

export interface WebhookSinkOptions {
  /** The receiver's endpoint; `user:password@` in it becomes an `Authorization: Basic` header. */
  url: string;
  /**
   * true (default): each POST carries a JSON array of change events and the header
   * `Idempotency-Keys` (comma-separated, in array order). false: one POST per change, its
   * body the event, with a real `Idempotency-Key` header.
   */
  batch?: boolean;
  /** Per request, response body included. Default 10 s. */
  timeoutMs?: number;
  /** Limits of one batched POST (a batch is split into several POSTs, sent in order). */
  maxChangesPerRequest?: number;
  /** Default 1 MiB (a single larger change still goes alone). */
  maxRequestBytes?: number;
  /**
   * Default 8 KiB: the `Idempotency-Keys` header stays below common server header limits
   * (Node 16 KiB, nginx 8 KiB per line).
   */
  maxKeysHeaderBytes?: number;
  /** Extra request headers (e.g. an API token), for library users. */
  headers?: Record<string, string>;
}

/** The identity of a change for receivers: its change id (changeIdOf), the same on every replay. */
export function idempotencyKeyOf(change: ChangeEvent): string {
  return changeIdOf(change);
}

/** Header-safe form of a key: `%`, `,` and anything outside visible ASCII percent-encoded. */
export function headerKey(key: string): string {
  return key.replace(/[^\x21-\x7e]|[%,]/gu, (c) => encodeURIComponent(c));
}

/** Statuses that mean the endpoint itself is wrong: every request would fail the same way. */
const ENDPOINT_WRONG = new Set([401, 403, 404, 405, 407, 410, 411, 415]);

/** Bounded memory of changes the receiver acknowledged in a batch that failed later on. */
const MAX_REMEMBERED = 100_000;

interface Request {
  keys: string[];
  body: string;
}

/**
 * POSTs change events to an HTTP endpoint. Changes go out in stream order, every one, with
 * an idempotency key; there is no version gate at the receiver, so a replay is delivered
 * again unless the dedup backend (`consumer.deduplication.backend: redis`) filters it or the
 * receiver ignores keys it has seen. Positions stay with the stream (no shared transaction).
 *
 * Errors: a timeout, a network error, 408, 425, 429 and 5xx are retriable; 401, 403, 404,
 * 405, 407, 410, 411, 415 and redirects stop apply (the endpoint is wrong for every change);
 * other 4xx are permanent for the request, so apply bisects the batch down to the change the
 * receiver refuses and dead-letters it. A non-2xx response must mean the receiver took none
 * of the request's changes.
 */
export class WebhookSink implements Sink {
  readonly storesPositions = false;
  private readonly url: string;
  private readonly headers: Record<string, string>;
  private readonly batch: boolean;
  private readonly timeoutMs: number;
  private readonly maxChanges: number;
  private readonly maxBytes: number;
  private readonly maxKeysBytes: number;
  private readonly closing = new AbortController();
  /**
   * Keys the receiver acknowledged during an `apply` that then failed (a later request of the
   * same batch). Apply retries or bisects that batch; these are not sent again. Forgotten once
   * a batch containing them succeeds.
   */
  private readonly acknowledged = new Set<string>();

  constructor(options: WebhookSinkOptions) {
    const url = new URL(options.url);
    this.headers = { 'content-type': 'application/json', 'user-agent': 'syncline', ...options.headers };
    if (url.username || url.password) {
      const user = decodeURIComponent(url.username);
      const password = decodeURIComponent(url.password);
      this.headers.authorization = `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}`;
      url.username = '';
      url.password = '';
    }
    this.url = url.toString();
    this.batch = options.batch ?? true;
    this.timeoutMs = options.timeoutMs ?? 10_000;
    this.maxChanges = options.maxChangesPerRequest ?? 500;
    this.maxBytes = options.maxRequestBytes ?? 1024 * 1024;
    this.maxKeysBytes = options.maxKeysHeaderBytes ?? 8 * 1024;
  }

  async prepare(): Promise<void> {
    // Nothing to create; the first POST tells whether the endpoint answers.
  }

  async positions(): Promise<Map<number, bigint>> {
    return new Map();
  }

  async apply(changes: readonly ChangeEvent[]): Promise<ApplyOutcome> {
    const outcome: ApplyOutcome = { applied: 0, stale: 0, superseded: 0, byTable: new Map() };
    const count = (c: ChangeEvent, field: 'applied' | 'stale'): void => {
      const table = tableLabelOf(c);
      const t = outcome.byTable.get(table) ?? { applied: 0, stale: 0 };
      t[field]++;
      outcome.byTable.set(table, t);
      outcome[field]++;
    };
    const inBatch = new Set<string>();
    const resent: string[] = [];
    const requests: Request[] = [];
    let current: { keys: string[]; events: string[]; bytes: number; keyBytes: number } | undefined;
    const flush = (): void => {
      if (!current) return;
      requests.push({ keys: current.keys, body: this.batch ? `[${current.events.join(',')}]` : (current.events[0] ?? '') });
      current = undefined;
    };
    for (const c of changes) {
      const key = idempotencyKeyOf(c);
      if (inBatch.has(key)) {
        // The same change twice in one batch (capture republished it): once is enough.
        count(c, 'stale');
        continue;
      }
      inBatch.add(key);
      count(c, 'applied');
      if (this.acknowledged.has(key)) {
        resent.push(key);
        continue;
      }
      const event = `{"idempotency_key":${JSON.stringify(key)},${JSON.stringify(c).slice(1)}`;
      const bytes = Buffer.byteLength(event) + 1;
      const keyBytes = headerKey(key).length + 1;
      if (current && (!this.batch || current.keys.length >= this.maxChanges || current.bytes + bytes > this.maxBytes || current.keyBytes + keyBytes > this.maxKeysBytes)) flush();
      current ??= { keys: [], events: [], bytes: 2, keyBytes: 0 };
      current.keys.push(key);
      current.events.push(event);
      current.bytes += bytes;
      current.keyBytes += keyBytes;
    }
    flush();
    // In order, one at a time: the receiver sees each row's changes in commit order.
    for (const request of requests) {
      await this.post(request);
      if (this.acknowledged.size >= MAX_REMEMBERED) this.acknowledged.clear();
      for (const key of request.keys) this.acknowledged.add(key);
    }
    for (const request of requests) for (const key of request.keys) this.acknowledged.delete(key);
    for (const key of resent) this.acknowledged.delete(key);
    return outcome;
  }

  async close(): Promise<void> {
    this.closing.abort();
  }

  private async post(request: Request): Promise<void> {
    const headers: Record<string, string> = { ...this.headers };
    if (this.batch) headers['idempotency-keys'] = request.keys.map(headerKey).join(',');
    else headers['idempotency-key'] = headerKey(request.keys[0] ?? '');
    const what = `POST ${this.url} (${request.keys.length} change${request.keys.length === 1 ? '' : 's'}, first ${request.keys[0]})`;
    let res: Response;
    try {
      res = await fetch(this.url, {
        method: 'POST',
        headers,
        body: request.body,
        redirect: 'manual',
        signal: AbortSignal.any([AbortSignal.timeout(this.timeoutMs), this.closing.signal]),
      });
      if (res.ok) {
        await res.arrayBuffer(); // read to the end: the connection goes back to the pool
        return;
      }
    } catch (err) {
      const timeout = err instanceof Error && err.name === 'TimeoutError';
      const reason = timeout ? `no response within ${this.timeoutMs} ms` : errorMessage(err instanceof Error && err.cause instanceof Error ? err.cause : err);
      throw new SynclineError(timeout ? 'WEBHOOK_TIMEOUT' : 'WEBHOOK_NETWORK', `${what} failed: ${reason}`, { retriable: true, cause: err });
    }
    const text = (await res.text().catch(() => '')).slice(0, 500);
    const status = res.status;
    const detail = `${what} answered ${status} ${res.statusText}${text ? `: ${text}` : ''}`;
    if (status >= 300 && status < 400) {
      throw new PrerequisiteError(`${detail} (redirect to ${res.headers.get('location') ?? '?'})`, 'set sink.url to the final URL: a redirected POST may lose its body');
    }
    if (ENDPOINT_WRONG.has(status)) {
      throw new PrerequisiteError(detail, 'check sink.url and the credentials in it: the endpoint refuses every request, so apply stops instead of dead-lettering every change');
    }
    const retriable = status === 408 || status === 425 || status === 429 || status >= 500;
    const retryAfter = res.headers.get('retry-after');
    throw new SynclineError(`WEBHOOK_${status}`, retryAfter ? `${detail} (Retry-After: ${retryAfter})` : detail, { retriable });
  }
}
