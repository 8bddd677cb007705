import { tableLabelOf, type ChangeEvent } from '../core/change.js';
import { SynclineError } from '../core/errors.js';
import { parseTableName } from '../core/sql.js';
import { tableLabel } from '../core/table-mapping.js';

/**
 * `sink.writers`: single-writer boundaries. A table declared under one or more sources may be
 * written only by them; a change of another source to it is refused (dead-lettered with code
 * NOT_OWNER), so a second writer is caught instead of silently racing the owner. Tables
 * declared nowhere are open to every source. Tables are named as the source names them.
 */
export class WriterBoundaries {
  /** Owners by `schema.table`. */
  private readonly owners = new Map<string, Set<string>>();

  constructor(writers: Readonly<Record<string, readonly string[]>>) {
    for (const [source, tables] of Object.entries(writers)) {
      for (const t of tables) {
        const label = tableLabel(parseTableName(t));
        const set = this.owners.get(label) ?? new Set<string>();
        set.add(source);
        this.owners.set(label, set);
      }
    }
  }

  get isEmpty(): boolean {
    return this.owners.size === 0;
  }

  /** Tables declared with more than one owner, and those owners. */
  shared(): [string, string[]][] {
    return [...this.owners].filter(([, s]) => s.size > 1).map(([t, s]) => [t, [...s].sort()]);
  }

  /** The NOT_OWNER error when `change`'s source may not write its table; undefined when it may. */
  refuse(change: Pick<ChangeEvent, 'source' | 'schema' | 'table'>): SynclineError | undefined {
    const label = tableLabelOf(change);
    const owners = this.owners.get(label);
    if (!owners || owners.has(change.source)) return undefined;
    return new SynclineError('NOT_OWNER', `source ${change.source} does not own ${label} (sink.writers: ${[...owners].sort().join(', ')})`, { retriable: false });
  }
}
