import type pg from 'pg';
import type { SynclineConfig } from '../config/schema.js';
import { errorMessage } from '../core/errors.js';
import { parseDuration } from '../core/duration.js';
import { parseTableName } from '../core/sql.js';
import { TableMapping } from '../core/table-mapping.js';
import type { Logger } from '../log/logger.js';
import type { Metrics } from '../metrics/metrics.js';
import type { Stream } from '../stream/stream.js';
import { verifyTables } from './session.js';
import { isVerifiable, openVerifyTarget } from './targets/open.js';
import type { VerifyTarget } from './targets/target.js';

export interface ContinuousDeps {
  source: pg.ClientConfig;
  openStream: () => Promise<Stream>;
}

/**
 * Drift metrics of a run/apply process with a postgres, mysql or sqlite sink. Every 5 s,
 * `sync_drift_rows{table}` is set from the target's verify results
 * (`<sink.state_schema>.verify_results`; `<state_schema>_verify_results` on mysql and
 * sqlite: what the last verify of any process recorded). With `verify.interval`, the process also verifies the
 * replicated tables itself in the background, one pass per interval, at most
 * `verify.max_rows_per_second` rows/s, differences re-checked after apply passed them; each
 * pass records its result there and sets `sync_verify_last_success_timestamp`. A failed
 * pass is logged and tried at the next interval. Returns the stopper; undefined for other sinks.
 */
export function startContinuousVerification(config: SynclineConfig, metrics: Metrics, log: Logger, deps: ContinuousDeps): (() => Promise<void>) | undefined {
  const url = config.sink.url;
  const type = config.sink.type;
  if (!isVerifiable(type) || !url) return undefined;
  // One target connection for the results, opened on first use and again after a failure.
  let results: Promise<VerifyTarget> | undefined;
  const resultsTarget = (): Promise<VerifyTarget> => {
    results ??= openVerifyTarget(type, url).catch((err: unknown) => {
      results = undefined;
      throw err;
    });
    return results;
  };
  const read = async (): Promise<void> => {
    try {
      for (const r of await (await resultsTarget()).readResults(config.sink.state_schema)) metrics.driftRows.set({ table: r.table }, r.differing);
    } catch (err) {
      log.debug({ err: errorMessage(err) }, 'could not read the last verify results');
    }
  };
  void read();
  const reader = setInterval(() => void read(), 5_000);
  const stop = new AbortController();
  let pass: Promise<void> = Promise.resolve();
  let timer: NodeJS.Timeout | undefined;
  const slot = config.source.slots[0];
  const names = slot?.tables ?? [];
  if (config.verify.interval && slot && names.length > 0) {
    const every = parseDuration(config.verify.interval);
    const mapping = TableMapping.fromConfig(config.sink.tables);
    const tables = names.map((n) => {
      const table = parseTableName(n);
      const route = mapping.routeOf(table);
      return route ? { table, route } : { table };
    });
    const once = async (): Promise<void> => {
      const started = Date.now();
      try {
        const found = await verifyTables(tables, {
          source: deps.source,
          targetUrl: url,
          targetType: type,
          parallelism: 1,
          maxRowsPerSecond: config.verify.max_rows_per_second,
          signal: stop.signal,
          pipeline: { slot: slot.name, stateSchema: config.sink.state_schema, group: config.consumer.group_id, openStream: deps.openStream, timeoutMs: parseDuration(config.verify.lag_timeout) },
        });
        await (await resultsTarget()).recordResults(config.sink.state_schema, found);
        for (const r of found) metrics.driftRows.set({ table: r.table }, r.differing);
        metrics.verifyLastSuccess.set(Math.floor(Date.now() / 1000));
        const drift = found.filter((r) => r.differing > 0);
        const summary = { tables: found.length, seconds: (Date.now() - started) / 1000 };
        if (drift.length > 0) log.warn({ ...summary, drift: drift.map((r) => ({ table: r.table, differing: r.differing, missing: r.missing, extra: r.extra, different: r.different })) }, 'verification found drift: run syncline repair');
        else log.info(summary, 'verification: no drift');
      } catch (err) {
        if (!stop.signal.aborted) log.warn({ err: errorMessage(err) }, 'verification pass failed; trying again at the next interval');
      }
    };
    const schedule = (): void => {
      timer = setTimeout(() => {
        pass = once().finally(() => {
          if (!stop.signal.aborted) schedule();
        });
      }, every);
    };
    schedule();
  }
  return async () => {
    stop.abort();
    clearInterval(reader);
    if (timer) clearTimeout(timer);
    await pass;
    await (await results?.catch(() => undefined))?.close();
  };
}
