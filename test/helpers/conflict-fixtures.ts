import type { ChangeEvent, Row } from '../../src/core/change.js';
import { formatLsn } from '../../src/core/lsn.js';
import { builtInResolver, withDeltas, type ConflictResolver } from '../../src/sink/conflicts/resolve.js';
import type { ConflictOptions } from '../../src/sink/sql/sql-sink.js';

/** Conflict tracking options of a sink under test: last_write_wins unless a resolver is given; `deltas`: delta columns by table. */
export function tracking(resolver: ConflictResolver = builtInResolver('last_write_wins'), deltas: [string, string[]][] = []): ConflictOptions {
  return { strategy: 'last_write_wins', resolver: withDeltas(resolver), deltaColumns: new Map(deltas), localSource: 'local' };
}

/** source_priority tracking, the first of `order` first. */
export function priorityTracking(order: string[]): ConflictOptions {
  return { strategy: 'source_priority', resolver: withDeltas(builtInResolver('source_priority', order)), deltaColumns: new Map(), localSource: 'local' };
}

/**
 * Changes to `public.acc` (id, v, n) of any source, each with a larger LSN than the one
 * before, whatever its source: LSNs of different sources say nothing about which came last.
 */
export function changeMaker(table = 'acc'): (source: string, op: ChangeEvent['op'], id: string, payload: Row | null, commitTs: string, before?: Row) => ChangeEvent {
  let lsn = 0x1000n;
  return (source, op, id, payload, commitTs, before) => {
    lsn += 0x10n;
    return {
      source, schema: 'public', table, op, lsn: formatLsn(lsn), commit_lsn: formatLsn(lsn), xid: 1, seq: 1, commit_ts: commitTs,
      key: { id }, payload, ...(before ? { before } : {}), _version: String((lsn << 32n) + 1n), _schema_version: 1,
    };
  };
}
