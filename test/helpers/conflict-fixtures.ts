import type { ChangeEvent, Row } from '../../src/core/change.js';
import { formatLsn } from '../../src/core/lsn.js';
import { builtInResolver, withDeltas, type ConflictResolver } from '../../src/sink/conflicts/resolve.js';
import type { ConflictOptions } from '../../src/sink/sql/sql-sink.js';

/** Conflict tracking as `conflictOptionsOf` builds it: `resolver` (default last_write_wins) with the delta columns merged. */
export function tracking(resolver: ConflictResolver = builtInResolver('last_write_wins'), deltas: [string, string[]][] = []): ConflictOptions {
  return { strategy: 'last_write_wins', resolver: withDeltas(resolver), deltaColumns: new Map(deltas), localSource: 'local' };
}

/** source_priority tracking: the writers listed first win. */
export function priorityTracking(priority: string[]): ConflictOptions {
  return { strategy: 'source_priority', resolver: withDeltas(builtInResolver('source_priority', priority)), deltaColumns: new Map(), localSource: 'local' };
}

let lsn = 0x1000n;

/**
 * A change of `source` to `public.acc` keyed by `id`, each with a larger LSN than the last
 * (whatever its source: LSNs of different sources say nothing about which write came last).
 */
export function conflictChange(source: string, op: ChangeEvent['op'], id: string, payload: Row | null, commitTs: string, before?: Row): ChangeEvent {
  lsn += 0x10n;
  return {
    source, schema: 'public', table: 'acc', op, lsn: formatLsn(lsn), commit_lsn: formatLsn(lsn), xid: 1, seq: 1, commit_ts: commitTs,
    key: { id }, payload, ...(before ? { before } : {}), _version: String((lsn << 32n) + 1n), _schema_version: 1,
  };
}
