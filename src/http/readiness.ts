import { errorMessage } from '../core/errors.js';
import { redactUrl } from '../core/redact.js';
import type { Metrics } from '../metrics/metrics.js';

/**
 * Readiness (`/readyz`): is this process able to do its work right now? Each check is a
 * plain async callback that resolves with a short detail when healthy and throws (or
 * times out) when not; the pipeline decides which checks apply to its role.
 */
export interface CheckOutcome {
  ok: boolean;
  /** What was seen: "SELECT 1 in 3 ms", or why it failed. Never contains a password. */
  detail: string;
}

export interface ReadinessReport {
  ready: boolean;
  checks: Record<string, CheckOutcome>;
}

/** Resolves with a detail when healthy; throws with the reason when not. */
export type ReadinessCheck = () => Promise<string>;

export const DEFAULT_CHECK_TIMEOUT_MS = 2000;

/** Runs every check concurrently, each bounded by `timeoutMs`; ready when all pass. */
export async function evaluateReadiness(checks: Readonly<Record<string, ReadinessCheck>>, timeoutMs = DEFAULT_CHECK_TIMEOUT_MS): Promise<ReadinessReport> {
  const names = Object.keys(checks);
  const outcomes = await Promise.all(
    names.map(async (name): Promise<CheckOutcome> => {
      const check = checks[name];
      if (!check) return { ok: false, detail: 'no check' };
      try {
        return { ok: true, detail: redactUrl(await withTimeout(check(), timeoutMs)) };
      } catch (err) {
        return { ok: false, detail: redactUrl(errorMessage(err)) };
      }
    }),
  );
  const report: ReadinessReport = { ready: true, checks: {} };
  names.forEach((name, i) => {
    const o = outcomes[i] ?? { ok: false, detail: 'no result' };
    report.checks[name] = o;
    if (!o.ok) report.ready = false;
  });
  return report;
}

/** A readiness function for `startHttpServer` from named checks. */
export function readinessProbe(checks: Readonly<Record<string, ReadinessCheck>>, timeoutMs = DEFAULT_CHECK_TIMEOUT_MS): () => Promise<ReadinessReport> {
  return () => evaluateReadiness(checks, timeoutMs);
}

/** Passes while the worst table's `sync_lag_seconds` is below `criticalSeconds`. */
export function lagCheck(metrics: Metrics, criticalSeconds: number): ReadinessCheck {
  return async () => {
    const { values } = await metrics.lagSeconds.get();
    if (values.length === 0) return 'no change applied yet';
    let worst = values[0];
    for (const v of values) if (worst === undefined || v.value > worst.value) worst = v;
    const lag = worst?.value ?? 0;
    const where = worst?.labels.table === undefined ? '' : ` (${String(worst.labels.table)})`;
    if (!(lag < criticalSeconds)) {
      throw new Error(`max sync_lag_seconds is ${round(lag)} s${where}, not below monitoring.alerts.lag_critical = ${criticalSeconds} s`);
    }
    return `max sync_lag_seconds ${round(lag)} s${where} < ${criticalSeconds} s`;
  };
}

/** Wraps a callback, reporting how long it took: `timed(() => ping(), 'SELECT 1')` → "SELECT 1 in 3 ms". */
export function timed(what: string, fn: () => Promise<unknown>): ReadinessCheck {
  return async () => {
    const t0 = performance.now();
    await fn();
    return `${what} in ${Math.round(performance.now() - t0)} ms`;
  };
}

export function withTimeout<T>(p: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no answer within ${ms} ms`)), ms);
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}

function round(n: number): number {
  return Math.round(n * 1000) / 1000;
}
