// What the pipeline benchmarks share: one-shot queries, metric totals, polling.
import pg from 'pg';

/** Runs one statement on its own connection. */
export async function query(url, sql, params) {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  try { return await c.query(sql, params); } finally { await c.end(); }
}

/** The sum of a metric's values over its labels. */
export async function counter(metrics, name) {
  const m = await metrics.registry.getSingleMetric(name)?.get();
  return (m?.values ?? []).reduce((s, v) => s + v.value, 0);
}

/** Polls `check` every 20 ms until it holds. */
export async function until(check, timeoutMs = 600_000) {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) { if (await check()) return; await new Promise((r) => setTimeout(r, 20)); }
  throw new Error('benchmark timed out');
}
