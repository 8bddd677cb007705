/**
 * The names every SQL sink shares: the columns syncline adds to target tables and its own
 * bookkeeping tables. Each dialect quotes them (and places the bookkeeping tables: a schema
 * in PostgreSQL, a name prefix in MySQL and SQLite).
 */

/** Commit LSN of the change that last wrote the row (with the seq: the row's version). */
export const VERSION_LSN_COLUMN = '_syncline_lsn';
/** Position in its transaction of the change that last wrote the row. */
export const VERSION_SEQ_COLUMN = '_syncline_seq';
/** `delete_mode: soft`: when the row was deleted at the source (UTC); NULL for a live row. */
export const DELETED_AT_COLUMN = '_deleted_at';

/**
 * Conflict tracking (`sink.conflict_strategy` other than source_lsn_priority, delta columns,
 * or a custom resolver): the source that wrote the row's version (the version gate compares
 * versions only within one source), that version's clock (source commit time), and the
 * transaction that wrote it (its xid: a row whose xmin differs was changed at the target since).
 */
export const SOURCE_COLUMN = '_syncline_source';
export const CLOCK_COLUMN = '_syncline_ts';
export const WRITER_XID_COLUMN = '_syncline_xid';
/**
 * SQLite conflict tracking (SQLite has no xmin): a digest of the row's values as syncline last
 * wrote them; a row whose values no longer match was changed at the target since.
 */
export const FINGERPRINT_COLUMN = '_syncline_fp';

/** Columns syncline adds to target tables: never written from a change's payload (a chained or bidirectional source has them too). */
export const BOOKKEEPING_COLUMNS: ReadonlySet<string> = new Set([VERSION_LSN_COLUMN, VERSION_SEQ_COLUMN, DELETED_AT_COLUMN, SOURCE_COLUMN, CLOCK_COLUMN, WRITER_XID_COLUMN, FINGERPRINT_COLUMN]);

/** syncline's own tables in the target, quoted. */
export interface BookkeepingTables {
  /** Consumer positions: group, partition → next offset, committed with the rows. */
  positions: string;
  /** Newest delete per row key: a replayed older insert cannot resurrect the row. */
  tombstones: string;
  /** Newest truncation per table: rows older than it are gone, changes older are stale. */
  truncations: string;
  /** Keyless tables' high-water version and whether their snapshot reset was applied. */
  multisetVersions: string;
  /** Conflict tracking: decided conflicts (both versions, the winner). */
  conflicts: string;
  /** Conflict tracking: each source's own truncation watermark per table (LSNs of sources do not compare). */
  sourceTruncations: string;
  /** Conflict tracking: each source's own keyless high water per table. */
  sourceMultisetVersions: string;
  /** Conflict tracking: each source's own tombstone per key, with the delete's commit time. */
  sourceTombstones: string;
}

/** The bookkeeping tables, each named by `name` from its base name (`positions`, ...). */
export function bookkeepingTables(name: (table: string) => string): BookkeepingTables {
  return {
    positions: name('positions'),
    tombstones: name('tombstones'),
    truncations: name('truncations'),
    multisetVersions: name('multiset_versions'),
    conflicts: name('conflicts'),
    sourceTruncations: name('source_truncations'),
    sourceMultisetVersions: name('source_multiset_versions'),
    sourceTombstones: name('source_tombstones'),
  };
}
