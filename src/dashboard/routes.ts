import type { IncomingMessage, ServerResponse } from 'node:http';
import { errorMessage } from '../core/errors.js';
import { redactUrl } from '../core/redact.js';
import type { DeadLetterQueue } from '../dlq/dead-letter-queue.js';
import type { Logger } from '../log/logger.js';
import type { Metrics } from '../metrics/metrics.js';
import type { Sink } from '../sink/sink.js';
import type { DlqAction, PurgeResponse, ReplayResponse, StatusResponse } from './api.js';
import { ACTIONS_DISABLED_MESSAGE, DeadLetterActions } from './dlq-actions.js';
import { AccessToken, hostAllowed, HttpError, sendError, sendJson } from './http.js';
import { sendPage } from './page.js';
import { Sampler } from './sampler.js';
import { SchemaVersionsView } from './schema-versions.js';
import { readStatus } from './status.js';
import type { SchemaVersionReport } from '../ops/schemas.js';

export interface DashboardOptions {
  metrics: Metrics;
  /** The dead-letter queue to list, replay and purge; undefined when it is disabled. */
  deadLetters?: DeadLetterQueue | undefined;
  /** The sink replays go through; undefined for a capture-only process (replay is refused). */
  sink?: Sink | undefined;
  /** Consumer group whose positions the sink keeps (replays write rows only, no positions). */
  group: string;
  /** `sink.consistency: transactional`: a replay applies a source transaction's entries whole or not at all. */
  transactional?: boolean | undefined;
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
  /** The table definitions capture recorded (read from the source); none shown without. */
  schemaVersions?: (() => Promise<SchemaVersionReport[]>) | undefined;
  sampleIntervalMs?: number;
  maxSamples?: number;
}

/** Request handling for the dashboard, mounted next to `/metrics` by `startHttpServer`. */
export interface Dashboard {
  /** Handles the request and returns true, or returns false when the path is not the dashboard's. */
  handle(req: IncomingMessage, res: ServerResponse): boolean;
  /** Stops sampling and waits for a running replay or purge. */
  close(): Promise<void>;
}

const UNAUTHORIZED_MESSAGE = 'missing or wrong access token: send the header "Authorization: Bearer <monitoring.dashboard_token>"';
const DASHBOARD_PATHS = ['/', '/dashboard', '/api/status', '/api/dlq', '/api/dlq/replay', '/api/dlq/purge'];

/**
 * The dashboard: `GET /` (the page), `GET /api/status`, `GET /api/dlq?limit=` (both need
 * the token when one is configured), and the token-guarded actions `POST /api/dlq/replay`
 * and `POST /api/dlq/purge` (`{"ids": [...]}`). Every route checks the Host header. The JSON
 * is typed in api.ts.
 */
export function createDashboard(options: DashboardOptions): Dashboard {
  return new DashboardRoutes(options);
}

class DashboardRoutes implements Dashboard {
  private readonly startedAt = Date.now();
  private readonly sampleIntervalMs: number;
  private readonly token: AccessToken | undefined;
  private readonly sampler: Sampler;
  private readonly actions: DeadLetterActions;
  private readonly schemas: SchemaVersionsView | undefined;

  constructor(private readonly options: DashboardOptions) {
    this.sampleIntervalMs = options.sampleIntervalMs ?? 1000;
    this.token = options.token ? new AccessToken(options.token) : undefined;
    const { metrics, deadLetters, sink, group, transactional, log } = options;
    this.sampler = new Sampler({ metrics, deadLetters, log, intervalMs: this.sampleIntervalMs, maxSamples: options.maxSamples ?? 300 });
    this.actions = new DeadLetterActions({ deadLetters, sink, group, transactional, log, changed: () => this.sampler.refreshDepth() });
    this.schemas = options.schemaVersions ? new SchemaVersionsView(options.schemaVersions) : undefined;
  }

  handle(req: IncomingMessage, res: ServerResponse): boolean {
    const url = new URL(req.url ?? '/', 'http://localhost');
    if (!DASHBOARD_PATHS.includes(url.pathname)) return false;
    if (!hostAllowed(req, this.options.host)) {
      req.resume();
      sendError(
        res,
        421,
        `the Host header ${JSON.stringify(req.headers.host ?? '')} is not a name of this dashboard: open it at http://localhost:<port>/ or http://127.0.0.1:<port>/, or set monitoring.host to the name you use`,
      );
      return true;
    }
    const route = `${req.method ?? 'GET'} ${url.pathname}`;
    let work: Promise<object>;
    switch (route) {
      case 'GET /':
      case 'GET /dashboard':
        sendPage(res);
        return true;
      case 'GET /api/status':
        work = this.checkReadAccess(req).then(() => this.status());
        break;
      case 'GET /api/dlq':
        work = this.checkReadAccess(req).then(() => this.actions.list(url.searchParams.get('limit')));
        break;
      case 'POST /api/dlq/replay':
        work = this.action(req, 'replay');
        break;
      case 'POST /api/dlq/purge':
        work = this.action(req, 'purge');
        break;
      default:
        sendError(res, 405, `${req.method ?? '?'} is not allowed on ${url.pathname}`);
        return true;
    }
    work
      .then((body) => sendJson(res, 200, body))
      .catch((err: unknown) => {
        if (err instanceof HttpError) {
          sendError(res, err.status, err.message, err.status === 401 ? { 'www-authenticate': 'Bearer realm="syncline"' } : {});
        } else {
          sendError(res, 503, redactUrl(errorMessage(err)));
        }
      });
    return true;
  }

  async close(): Promise<void> {
    this.sampler.stop();
    await this.actions.close();
  }

  private async status(): Promise<StatusResponse> {
    const { metrics, deadLetters, sink } = this.options;
    return readStatus({
      schemas: this.schemas ? await this.schemas.current() : { versions: [], note: 'no source to read the definitions from' },
      metrics,
      sampler: this.sampler,
      startedAt: this.startedAt,
      sampleIntervalMs: this.sampleIntervalMs,
      deadLetters: deadLetters !== undefined,
      sink: sink !== undefined,
      token: this.token !== undefined,
    });
  }

  /** With a token configured, the data of the read endpoints is for its holders only. */
  private async checkReadAccess(req: IncomingMessage): Promise<void> {
    if (this.token && !this.token.admits(req)) throw new HttpError(401, UNAUTHORIZED_MESSAGE);
  }

  private async action(req: IncomingMessage, kind: DlqAction): Promise<ReplayResponse | PurgeResponse> {
    if (!this.token) {
      req.resume();
      throw new HttpError(403, ACTIONS_DISABLED_MESSAGE);
    }
    if (!this.token.admits(req)) {
      req.resume();
      throw new HttpError(401, UNAUTHORIZED_MESSAGE);
    }
    return this.actions.perform(req, kind);
  }
}
