import pg from 'pg';
import type { SynclineConfig } from '../config/schema.js';
import { sourceNameOf } from '../config/load.js';
import { errorMessage, PrerequisiteError } from '../core/errors.js';
import { retry } from '../core/retry.js';
import { isRetriablePgError } from '../core/sqlstate.js';
import type { Logger } from '../log/logger.js';
import type { TableName } from '../core/sql.js';
import { TableMapping } from '../core/table-mapping.js';
import { connectPostgres } from '../ops/connect.js';
import { rebaseVersions, recordedServer } from '../sink/postgres/source-servers.js';
import { systemIdentifierOf } from '../source/server-identity.js';
import { withSource } from './source-connection.js';

/** The target whose versions are checked against the source's cluster: a postgres sink's. */
function versionedTarget(config: SynclineConfig): { url: string; stateSchema: string } | undefined {
  const s = config.sink;
  return s.type === 'postgres' && s.url && s.version_gate ? { url: s.url, stateSchema: s.state_schema } : undefined;
}

/**
 * Before apply starts (`run`, `apply`): refuses when the source is another PostgreSQL cluster
 * than the one the target's row versions came from (see sink/postgres/source-servers.ts).
 * Applying would not fail: the version gate would skip the new cluster's changes of every
 * row the old one wrote as stale, silently. Records the identifier on a first start. While
 * the source or the target does not answer it waits and asks again (as apply and capture do
 * at start), until `signal` aborts.
 */
export async function checkSourceServer(config: SynclineConfig, signal: AbortSignal, log: Logger): Promise<void> {
  const target = versionedTarget(config);
  if (!target) return;
  const r = config.consumer.retry;
  await retry(() => compareSourceServer(config, target), { maxAttempts: r.max_attempts, baseMs: r.backoff_base_ms, maxMs: r.backoff_max_ms, jitter: r.jitter }, {
    signal,
    untilStopped: true,
    retriable: (err) => !(err instanceof PrerequisiteError) && isRetriablePgError(err),
    onRetry: ({ attempt, delayMs, error }) => log.warn({ err: errorMessage(error), attempt, delayMs }, "checking the source's cluster against the target's: retrying"),
  });
}

async function compareSourceServer(config: SynclineConfig, target: { url: string; stateSchema: string }): Promise<void> {
  const current = await withSource(config, systemIdentifierOf);
  const source = sourceNameOf(config);
  const pipeline = { source, group: config.consumer.group_id };
  const c = await connectPostgres({ connectionString: target.url }, 10_000);
  let recorded: string;
  try {
    recorded = await recordedServer(c, target.stateSchema, pipeline, current);
  } finally {
    await c.end().catch(() => undefined);
  }
  if (recorded !== current) {
    throw new PrerequisiteError(
      `source ${source} is another PostgreSQL cluster (system identifier ${current}) than the one the target's rows were written from (${recorded}): ` +
        `its LSNs do not compare with the versions the rows carry, so its changes of those rows would be skipped as stale`,
      `if the source was moved on purpose (dump/restore, a new server), stop every syncline process of this pipeline and run syncline resync --force: it re-reads every table from the new source and resets the target's versions of them; otherwise point source.url back at the old cluster`,
    );
  }
}

/** What rebaseSourceServer did. */
export interface Rebase {
  from: string;
  to: string;
  /** Target rows whose version was reset. */
  rows: number;
}

/**
 * For `syncline resync`: when the source is another cluster than the one the target's
 * versions came from, resets the versions of `tables` (the tables resync re-reads, in source
 * names) at the target and records the new cluster; undefined when nothing was to do.
 */
export async function rebaseSourceServer(config: SynclineConfig, tables: readonly TableName[]): Promise<Rebase | undefined> {
  const target = versionedTarget(config);
  if (!target) return undefined;
  const current = await withSource(config, systemIdentifierOf);
  const pipeline = { source: sourceNameOf(config), group: config.consumer.group_id };
  const mapping = TableMapping.fromConfig(config.sink.tables);
  const targets = tables.map((t) => mapping.routeOf(t)?.target ?? t);
  // No query timeout: resetting the versions rewrites whole tables.
  const c = new pg.Client({ connectionString: target.url });
  c.on('error', () => undefined);
  await c.connect();
  try {
    const recorded = await recordedServer(c, target.stateSchema, pipeline, current);
    if (recorded === current) return undefined;
    const rows = await rebaseVersions(c, target.stateSchema, pipeline, current, targets);
    return { from: recorded, to: current, rows };
  } finally {
    await c.end().catch(() => undefined);
  }
}
