import { parseTableName } from '../core/sql.js';
import { tableLabel } from '../core/table-mapping.js';
import { sourceNameOf } from './load.js';
import { builtInResolver, withDeltas, type ConflictResolver } from '../sink/conflicts/resolve.js';
import type { ConflictOptions } from '../sink/sql/sql-sink.js';
import type { SynclineConfig } from './schema.js';
import type { VerifyWriter } from '../verify/shape.js';


/**
 * Conflict tracking for the sink: on with a strategy other than source_lsn_priority, delta
 * columns, or a library resolver (which replaces the strategy's).
 */
export function conflictOptionsOf(config: SynclineConfig, resolveConflict?: ConflictResolver): ConflictOptions | undefined {
  const s = config.sink;
  const deltas = Object.entries(s.delta_columns);
  if (s.conflict_strategy === 'source_lsn_priority' && deltas.length === 0 && !resolveConflict) return undefined;
  const resolver = resolveConflict ?? builtInResolver(s.conflict_strategy, s.source_priority);
  return {
    strategy: resolveConflict ? 'custom' : s.conflict_strategy,
    resolver: withDeltas(resolver),
    deltaColumns: new Map(deltas.map(([table, cols]) => [tableLabel(parseTableName(table)), cols])),
    ...(s.lww_column !== undefined ? { lwwColumn: s.lww_column } : {}),
    localSource: s.local_source ?? 'local',
  };
}

/**
 * Whose target rows verify and repair compare: with conflict tracking on, the target may hold
 * other writers' rows (fan-in, a bidirectional pair), which are not this source's drift.
 */
export function verifyWriterOf(config: SynclineConfig): VerifyWriter | undefined {
  if (!conflictOptionsOf(config)) return undefined;
  const source = sourceNameOf(config);
  return { source, local: (config.sink.local_source ?? 'local') === source, stateSchema: config.sink.state_schema };
}
