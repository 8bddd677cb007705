import http from 'node:http';
import { afterEach, describe, expect, it } from 'vitest';
import { createDashboard, type Dashboard } from '../../src/dashboard/routes.js';
import { startHttpServer, type HttpServer } from '../../src/http/server.js';
import { Metrics } from '../../src/metrics/metrics.js';

/** F13: the Host header is checked on every dashboard route (DNS rebinding), and with a token the data reads need it. */
const TOKEN = 'dash-access-token-5c1e';
let server: HttpServer | undefined;
let dashboard: Dashboard | undefined;

afterEach(async () => {
  await server?.close();
  await dashboard?.close();
  server = undefined;
  dashboard = undefined;
});

async function start(options: { token?: string; host?: string } = {}): Promise<number> {
  const metrics = new Metrics();
  dashboard = createDashboard({ metrics, group: 'g', sampleIntervalMs: 50, ...options });
  server = await startHttpServer({ metrics, host: '127.0.0.1', port: 0, dashboard });
  return Number(new URL(server.url).port);
}

/** A GET with a Host header of our choosing (fetch would not let us set it). */
function get(port: number, path: string, host: string, headers: Record<string, string> = {}): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, path, method: 'GET', headers: { host, ...headers } }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('error', reject);
    req.end();
  });
}

describe('dashboard access (F13)', () => {
  it('refuses a Host header that is not one of its names (DNS rebinding), on every dashboard route', async () => {
    const port = await start();
    for (const path of ['/', '/api/status', '/api/dlq']) {
      const res = await get(port, path, `rebind.attacker.example:${port}`);
      expect(res.status, path).toBe(421);
      expect(res.body).toContain('monitoring.host');
    }
    for (const host of [`localhost:${port}`, `127.0.0.1:${port}`, `LOCALHOST:${port}`, 'localhost']) {
      expect((await get(port, '/api/status', host)).status, host).toBe(200);
    }
    // Prometheus and probes keep working whatever name they use.
    expect((await get(port, '/metrics', `syncline.internal:${port}`)).status).toBe(200);
    expect((await get(port, '/healthz', `syncline.internal:${port}`)).status).toBe(200);
  });

  it('accepts the configured monitoring.host name', async () => {
    const port = await start({ host: 'syncline.internal' });
    expect((await get(port, '/api/status', `syncline.internal:${port}`)).status).toBe(200);
    expect((await get(port, '/api/status', `other.internal:${port}`)).status).toBe(421);
  });

  it('with a token, the data reads need it; the page and /metrics do not', async () => {
    const port = await start({ token: TOKEN });
    const host = `127.0.0.1:${port}`;
    for (const path of ['/api/status', '/api/dlq']) {
      const none = await get(port, path, host);
      expect(none.status, path).toBe(401);
      expect(none.body).not.toContain('tables');
      expect((await get(port, path, host, { authorization: 'Bearer wrong' })).status, path).toBe(401);
      expect((await get(port, path, host, { authorization: `Bearer ${TOKEN}` })).status, path).toBe(200);
    }
    expect((await get(port, '/', host)).status).toBe(200);
    expect((await get(port, '/metrics', host)).status).toBe(200);
  });

  it('without a token the reads stay open (loopback by default), as before', async () => {
    const port = await start();
    expect((await get(port, '/api/dlq', `127.0.0.1:${port}`)).status).toBe(200);
  });
});
