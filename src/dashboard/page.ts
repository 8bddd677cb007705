import type { ServerResponse } from 'node:http';
import { PAGE_HTML, PAGE_SCRIPT_HASH, PAGE_STYLE_HASH } from './assets.generated.js';

/**
 * The dashboard page: one self-contained HTML document built from ui/ (index.html, style.css
 * and app.ts, see scripts/build-dashboard.mjs), with no external URL. It holds no data (it
 * fetches it from the API), so it needs no token.
 */

// Only the page's own inline script and style may run; it may fetch only from this origin.
const PAGE_CSP = [
  "default-src 'none'",
  `script-src ${PAGE_SCRIPT_HASH}`,
  `style-src ${PAGE_STYLE_HASH}`,
  "connect-src 'self'",
  "img-src 'self' data:",
  "base-uri 'none'",
  "form-action 'none'",
  "frame-ancestors 'none'",
].join('; ');

export function sendPage(res: ServerResponse): void {
  res.writeHead(200, {
    'content-type': 'text/html; charset=utf-8',
    'content-security-policy': PAGE_CSP,
    'x-content-type-options': 'nosniff',
    'referrer-policy': 'no-referrer',
    'cache-control': 'no-store',
  });
  res.end(PAGE_HTML);
}
