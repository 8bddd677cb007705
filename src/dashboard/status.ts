import { formatLsn } from '../core/lsn.js';
import type { Metrics } from '../metrics/metrics.js';
import type { StatusResponse, TableStatus } from './api.js';
import { ACTIONS_DISABLED_MESSAGE } from './dlq-actions.js';
import { max, round, sum, type MetricValue } from './metric-values.js';
import type { Sampler } from './sampler.js';

export interface StatusSources {
  metrics: Metrics;
  sampler: Sampler;
  /** Unix milliseconds. */
  startedAt: number;
  sampleIntervalMs: number;
  /** The dead-letter queue is on. */
  deadLetters: boolean;
  /** This process has a sink to replay through (run and apply). */
  sink: boolean;
  /** monitoring.dashboard_token is set. */
  token: boolean;
  /** The recorded table definitions (schema-versions.ts). */
  schemas: StatusResponse['schemas'];
}

/** `GET /api/status`: the metrics read back and added up per table, with the sampler's history. */
export async function readStatus(s: StatusSources): Promise<StatusResponse> {
  const m = s.metrics;
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
  const tables = new Map<string, TableStatus>();
  const row = (name: string): TableStatus => {
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

  const depth = s.sampler.dlqDepth();
  return {
    time: new Date().toISOString(),
    uptime_seconds: Math.round((Date.now() - s.startedAt) / 1000),
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
    throughput: s.sampler.throughput(),
    duplicate_rate: round(sum(dupRate.values), 4),
    dlq: {
      enabled: s.deadLetters,
      depth: depth?.count ?? sum(dlqCount.values),
      oldest_age_seconds: round(depth?.oldestAgeSeconds ?? sum(dlqAge.values), 1),
      blocked_tables: held.sort(),
      ...(depth?.note ? { note: depth.note } : {}),
    },
    slot: { retained_wal_bytes: sum(wal.values) },
    lsn: { capture: lsnText(sum(captureLsn.values)), apply: lsnText(sum(applyLsn.values)) },
    actions: {
      enabled: s.token && s.deadLetters,
      replay: s.token && s.deadLetters && s.sink,
      ...(s.token ? {} : { hint: ACTIONS_DISABLED_MESSAGE }),
    },
    schemas: s.schemas,
    sample_interval_ms: s.sampleIntervalMs,
    samples: s.sampler.samples,
  };
}

function labelOf(labels: MetricValue['labels']): string {
  const t = labels.table;
  return t === undefined ? '(all)' : String(t);
}

function lsnText(n: number): string | null {
  return n > 0 && Number.isSafeInteger(n) ? formatLsn(BigInt(n)) : null;
}
