import { createHash, timingSafeEqual } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { ErrorResponse } from './api.js';

// The dashboard's HTTP plumbing: errors as answers, JSON, bodies, the Host check and the token.

/** An answer other than 200: its status and the message the page shows. */
export class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

const MAX_BODY_BYTES = 64 * 1024;
/** Host names every dashboard accepts: the loopback ones. */
const LOOPBACK_HOSTS = ['localhost', '127.0.0.1', '[::1]'];

export function sendJson(res: ServerResponse, status: number, body: object, headers: Record<string, string> = {}): void {
  if (res.headersSent) {
    res.end();
    return;
  }
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'cache-control': 'no-store', 'x-content-type-options': 'nosniff', ...headers });
  res.end(`${JSON.stringify(body)}\n`);
}

export function sendError(res: ServerResponse, status: number, message: string, headers: Record<string, string> = {}): void {
  const body: ErrorResponse = { error: message };
  sendJson(res, status, body, headers);
}

export function readBody(req: IncomingMessage): Promise<string> {
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

/**
 * DNS rebinding guard: a page of another site that got its name to resolve to this machine
 * reaches the dashboard with that name in the Host header, so only our own names pass —
 * the loopback names, `monitoring.host` (`configuredHost`) when it is a name or a specific
 * address, and the local address the connection arrived on (what a browser sends when
 * opened by IP). The port is not compared: SSH tunnels and `kubectl port-forward` change it,
 * and the attack depends on the name alone. /metrics, /healthz and /readyz (served before
 * the dashboard, in http/server.ts) are not checked: Prometheus and probes send the target
 * address they were configured with, and those endpoints hold counts, not row data.
 */
export function hostAllowed(req: IncomingMessage, configuredHost: string | undefined): boolean {
  const header = req.headers.host;
  if (header === undefined) return true; // HTTP/1.0 without Host: not a browser of today
  const name = hostName(header);
  if (LOOPBACK_HOSTS.includes(name)) return true;
  const configured = configuredHost ? hostName(configuredHost) : '';
  if (configured !== '' && !['0.0.0.0', '[::]', '::'].includes(configured) && name === configured) return true;
  const local = req.socket.localAddress;
  if (local === undefined) return false;
  const mapped = local.startsWith('::ffff:') ? local.slice(7) : local;
  return name === mapped.toLowerCase() || name === `[${local.toLowerCase()}]`;
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

const sha256 = (text: string): Buffer => createHash('sha256').update(text).digest();

/** `monitoring.dashboard_token`, kept as its digest. */
export class AccessToken {
  private readonly digest: Buffer;

  constructor(token: string) {
    this.digest = sha256(token);
  }

  /** Whether the request sends the token as `Authorization: Bearer <token>`. */
  admits(req: IncomingMessage): boolean {
    const m = /^Bearer\s+(\S+)\s*$/i.exec(req.headers.authorization ?? '');
    if (!m?.[1]) return false;
    // Compare digests: constant time, and equal lengths whatever was sent.
    return timingSafeEqual(sha256(m[1]), this.digest);
  }
}
