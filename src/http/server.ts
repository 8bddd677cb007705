import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { errorMessage } from '../core/errors.js';
import { redactUrl } from '../core/redact.js';
import type { Metrics } from '../metrics/metrics.js';
import type { ReadinessReport } from './readiness.js';

export interface HttpServer {
  url: string;
  close(): Promise<void>;
}

/** Extra routes served next to the metrics: returns true when it handled the request. */
export interface DashboardHandler {
  handle(req: http.IncomingMessage, res: http.ServerResponse): boolean;
}

export interface HttpServerOptions {
  metrics: Metrics;
  host: string;
  /** 0 picks a free port (see the returned `url`). */
  port: number;
  /** The pipeline's readiness; without it `/readyz` reports ready with no checks. */
  readiness?: (() => Promise<ReadinessReport>) | undefined;
  /** The web dashboard (`/`, `/api/...`); its paths are tried after the metrics and health paths. */
  dashboard?: DashboardHandler | undefined;
}

/**
 * The process's one HTTP server (`monitoring.host:monitoring.port`). Serves `/metrics`
 * (Prometheus text), `/healthz` (liveness: the process answers) and `/readyz` (readiness:
 * 200 `{"ready":true,"checks":{...}}`, or 503 with `failing` naming each failed check and
 * its detail saying why), with the web dashboard's routes mounted next to them.
 */
export async function startHttpServer(options: HttpServerOptions): Promise<HttpServer> {
  const { metrics, readiness, dashboard } = options;
  const server = http.createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    if (req.method === 'GET' && path === '/metrics') {
      metrics.registry
        .metrics()
        .then((body) => {
          res.writeHead(200, { 'content-type': metrics.registry.contentType });
          res.end(body);
        })
        .catch((err: unknown) => {
          res.writeHead(500, { 'content-type': 'text/plain' });
          res.end(String(err));
        });
      return;
    }
    if (req.method === 'GET' && path === '/healthz') {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ status: 'ok' }));
      return;
    }
    if (req.method === 'GET' && path === '/readyz') {
      const probe = readiness ?? (() => Promise.resolve<ReadinessReport>({ ready: true, checks: {} }));
      probe()
        .catch((err: unknown): ReadinessReport => ({ ready: false, checks: { readiness: { ok: false, detail: redactUrl(errorMessage(err)) } } }))
        .then((report) => {
          const failing = Object.entries(report.checks).filter(([, c]) => !c.ok).map(([name]) => name);
          const body = report.ready ? { ready: true, checks: report.checks } : { ready: false, failing, checks: report.checks };
          res.writeHead(report.ready ? 200 : 503, { 'content-type': 'application/json', 'cache-control': 'no-store' });
          res.end(`${JSON.stringify(body)}\n`);
        })
        .catch(() => res.destroy());
      return;
    }
    if (dashboard?.handle(req, res)) return;
    res.writeHead(404, { 'content-type': 'text/plain' });
    res.end('not found\n');
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port, options.host, () => resolve());
  });
  const addr = server.address() as AddressInfo;
  const shownHost = addr.family === 'IPv6' ? `[${addr.address}]` : addr.address;
  return {
    url: `http://${shownHost}:${addr.port}`,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}
