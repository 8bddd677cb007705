/**
 * Loads node-postgres before any command module does, without its Cloudflare Workers probe
 * loading Node's fetch implementation.
 *
 * Why: when `pg` loads it asks whether it runs in a Cloudflare Worker: `navigator.userAgent`
 * where a `navigator` exists, else it constructs a `Response`. Node 20 has no `navigator`, and
 * its `Response` is a lazy global whose first use loads undici, ~30 ms of CPU in every
 * syncline process that talks to PostgreSQL (the probe's answer, false, is all pg keeps). With
 * a `navigator` present for the moment pg loads, the probe reads its user agent instead. Node
 * 21+ has a `navigator` of its own, left as it is. The CLI only: a library must not touch
 * globals, so `import { ... } from 'syncline'` loads pg as usual.
 */
export async function loadPg(): Promise<void> {
  if ('navigator' in globalThis) {
    await import('pg');
    return;
  }
  Object.defineProperty(globalThis, 'navigator', { value: { userAgent: 'Node.js' }, configurable: true, writable: true, enumerable: false });
  try {
    await import('pg');
  } finally {
    delete (globalThis as { navigator?: unknown }).navigator;
  }
}
