import pg from 'pg';
import { verifyWriterOf } from '../config/conflict-options.js';
import type { SynclineConfig } from '../config/schema.js';
import { errorMessage } from '../core/errors.js';
import { parseDuration } from '../core/duration.js';
import { parseTableName } from '../core/sql.js';
import { TableMapping } from '../core/table-mapping.js';
import type { Logger } from '../log/logger.js';
import type { Metrics } from '../metrics/metrics.js';
import { SnapshotStore } from '../source/snapshot-store.js';
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
 * pass records its result there and sets `sync_verify_last_success_timestamp`; tables with a
 * snapshot in progress are left out of a pass (their target is still being filled). A failed
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
  const writer = verifyWriterOf(config);
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
        // A table being snapshotted is still being filled at the target: verified at a later pass.
        const filling = await snapshotting(deps.source, config.source.state_schema, slot.name);
        const now = tables.filter((t) => !filling.has(`${t.table.schema}.${t.table.table}`));
        if (now.length < tables.length) log.debug({ tables: [...filling] }, 'verification: skipping tables with a snapshot in progress');
        if (now.length === 0) return;
        const found = await verifyTables(now, {
          source: deps.source,
          targetUrl: url,
          targetType: type,
          parallelism: 1,
          ...(writer ? { writer } : {}),
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

/** `schema.table` of the tables with a pending or running snapshot job of `slot`; none when there is no job table yet. */
async function snapshotting(source: pg.ClientConfig, stateSchema: string, slot: string): Promise<Set<string>> {
  const client = new pg.Client(source);
  client.on('error', () => undefined);
  try {
    await client.connect();
    return await new SnapshotStore(client, stateSchema, slot).unfinishedTables();
  } catch (err) {
    if ((err as { code?: string }).code === '42P01') return new Set(); // no snapshot ever requested
    throw err;
  } finally {
    await client.end().catch(() => undefined);
  }
}
