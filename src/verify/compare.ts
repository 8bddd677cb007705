import { serverVersionNumber } from '../postgres/server-version.js';
import type pg from 'pg';
import { quoteQualified, type TableName } from '../core/sql.js';
import { tableLabel, type TableRoute } from '../core/table-mapping.js';
import { scanKeyed, scanKeyless, sqlKeylessSide, type Candidate, type ConnectionPair, type KeyedScan, type KeylessSide, type ScanOptions } from './checksum.js';
import { settle, type ApplyBarrier } from './recheck.js';
import { settleMultiset } from './recheck-multiset.js';
import { alignKeyCollations } from './key-collation.js';
import type { SideEncodings } from './key-encoding.js';
import { rowKeylessSide, scanKeyedRows } from './row-scan.js';
import { pinOutputSettings, readShape, SideSql, TargetTableMissing, uncarriedMessage, type UncarriedColumn, type VerifyShape, type VerifyWriter } from './shape.js';
import { isPostgresTarget, postgresTarget } from './targets/postgres.js';
import { isRowTarget, type VerifyTarget } from './targets/target.js';

/** A source connection and a target: a postgres client (in-server checksums) or any VerifyTarget. */
export interface TargetPair {
  source: pg.ClientBase;
  target: VerifyTarget;
}

const asTargetPair = (p: ConnectionPair | TargetPair): TargetPair => ('columns' in p.target && 'readKeys' in p.target ? (p as TargetPair) : { source: p.source, target: postgresTarget(p.target as pg.ClientBase) });

export interface TableDrift {
  /** The source table. */
  table: string;
  /** The target table when `sink.tables` routes it elsewhere. */
  target?: string;
  sourceRows: number;
  targetRows: number;
  /**
   * Primary-key column names, in key (index) order. Keys below are JSON arrays of their
   * text values. Empty for a keyless table: its keys are whole rows (a row present twice at
   * the source and once at the target is one missing key).
   */
  keyColumns: string[];
  /** Keys present at the source only (at most `sample`). */
  missing: string[];
  /** Keys present at the target only. */
  extra: string[];
  /** Keys whose column values differ. */
  different: string[];
}

export interface TableVerification extends TableDrift {
  /** Rows that differ: missing + extra + different, counted in full (lists are samples). */
  differing: number;
  /**
   * Keys that changed at the source in every re-check and could not be held still (lock
   * timeout): not counted as drift, not cleared either. Keyless: distinct rows whose copies
   * at the source changed in every round.
   */
  unsettled: number;
  /** Differences beyond the candidate limit: counted as read, not re-checked. */
  unchecked: number;
  /** Whether differences were re-checked after apply caught up (false: no pipeline to wait for). */
  lagChecked: boolean;
  /**
   * `sourceRows` and `targetRows` are the counts of the first read, and the re-check found
   * some of the differences between the sides then to be lag: apply has caught up with them
   * since, so the counts may differ although no row does (a backlog after a restart).
   */
  countsBeforeCatchUp: boolean;
  /**
   * Every differing key (not only the sample), for repair; absent for keyless tables.
   * `others`: the keys counted in `otherWriters`, which repair must not re-read.
   */
  keys?: { missing: Candidate[]; extra: Candidate[]; different: Candidate[]; others?: Candidate[] };
  /** Rows compared per second (the larger side). */
  rowsPerSecond: number;
  /** What made this table's comparison slower than it could be, or its values not syncline's, and how to fix it. */
  warnings?: string[];
  /**
   * Target columns compared that are generated at the source and plain at the target
   * (VerifyShape.uncarried): no change carries their values, so repair cannot fix them.
   */
  uncarried?: UncarriedColumn[];
  /**
   * Conflict tracking (VerifyOptions.writer): keys the source has whose row at the target
   * another writer wrote last (it won the conflict, or wrote since), or that another writer
   * deleted there (postgres target: its tombstone): not this source's drift, not counted in
   * `differing`, and repair leaves them alone.
   */
  otherWriters?: number;
}

export interface VerifyOptions extends ScanOptions {
  /** How many keys of each kind to list (default 20). */
  sample?: number;
  /** Waits for apply to pass a source position: differences that are only lag are then cleared. */
  barrier?: ApplyBarrier;
  /** Keep every differing key in `keys` (repair). */
  keepKeys?: boolean;
  /** Several writers share the target (conflict tracking): compare only this one's rows there. */
  writer?: VerifyWriter;
}

const SAMPLE = 20;

/**
 * Verifies one table on one or more (source, target) connection pairs: checksums computed
 * in both servers by key range, bisected down to the differing rows (checksum.ts) for a
 * postgres target; for a mysql or sqlite target, the target's rows turned back into source
 * text and compared by key in two constant-memory passes (row-scan.ts). Differing keys are
 * then re-checked so that a difference that is only replication lag is not reported
 * (recheck.ts, with a barrier; keyless tables by digest group, recheck-multiset.ts). Compares the source's columns (the target's extra columns
 * such as `_syncline_lsn` are ignored; soft-deleted target rows count as absent); with a
 * `route` (`sink.tables`) the routed table under its target column names, excluded columns
 * left out. Output settings are pinned on every PostgreSQL connection for the duration.
 */
export async function verifyTable(pairs: readonly (ConnectionPair | TargetPair)[], t: TableName, route: TableRoute | undefined, options: VerifyOptions = {}): Promise<TableVerification> {
  const targets = pairs.map(asTargetPair);
  const first = targets[0];
  if (!first) throw new Error('no connections');
  const pinned = targets.flatMap((p) => [p.source, ...(isPostgresTarget(p.target) ? [p.target.client] : [])]);
  const restore = await Promise.all(pinned.map((c) => pinOutputSettings(c)));
  const started = Date.now();
  try {
    const shape = await readTargetShape(first, t, route, options.barrier, options.writer);
    if (shape instanceof TargetTableMissing) return missingTarget(shape, t, route);
    const encodings = await serverEncodings(first);
    shape.utf8Bytes = encodings.source !== encodings.target;
    if (shape.utf8Bytes) shape.encodings = encodings;
    if (shape.digest === 'record') shape.hashValues = !shape.utf8Bytes && (await Promise.all(pinned.map(hasRecordHash))).every(Boolean);
    // Every pair's target is the same database: its collations are read on the first.
    const warnings = isPostgresTarget(first.target) ? await alignKeyCollations(shape, first.source, first.target.client) : [];
    if (shape.uncarried) warnings.push(uncarriedMessage(shape.targetLabel ?? shape.label, shape.uncarried));
    const sample = options.sample ?? SAMPLE;
    const base = {
      table: shape.label,
      ...(shape.targetLabel ? { target: shape.targetLabel } : {}),
      keyColumns: shape.key.map((c) => c.from),
      ...(warnings.length > 0 ? { warnings } : {}),
      ...(shape.uncarried ? { uncarried: shape.uncarried } : {}),
    };
    const rate = (rows: number): number => Math.round(rows / Math.max((Date.now() - started) / 1000, 0.001));
    if (shape.key.length === 0) {
      const src = new SideSql(shape, 'source');
      const dst = keylessSide(shape, first.target);
      const scan = await scanKeyless(sqlKeylessSide(first.source, src), dst, options);
      const tableRows = Math.max(scan.sourceRows, scan.targetRows);
      const settled = await settleMultiset(first.source, src, dst, scan.differences, options.barrier, async () => options.throttle?.(tableRows));
      const missing: string[] = [];
      const extra: string[] = [];
      let differing = scan.overflow;
      for (const d of settled.drift) {
        const n = Math.abs(d.sourceCount - d.targetCount);
        differing += n;
        const list = d.sourceCount > d.targetCount ? missing : extra;
        for (let i = 0; i < n && list.length < sample; i++) list.push(d.key);
      }
      return {
        ...base,
        sourceRows: scan.sourceRows,
        targetRows: scan.targetRows,
        missing,
        extra,
        different: [],
        differing,
        unsettled: settled.unsettled.length,
        unchecked: scan.overflow,
        lagChecked: settled.lagChecked,
        countsBeforeCatchUp: settled.drift.length + settled.unsettled.length < scan.differences.length,
        rowsPerSecond: rate(Math.max(scan.sourceRows, scan.targetRows)),
      };
    }
    const scan = await scanKeyedOn(shape, targets, options);
    const settled = await settle(shape, first.source, (keys) => first.target.readKeys(shape, keys), [...scan.candidates.values()], options.barrier);
    let others: Candidate[] = [];
    if (shape.writer && settled.missing.length > 0) {
      // Missing from this writer's rows, yet held at the target (another writer's version
      // stands) or deleted there by another writer (its delete decided the key): not drift.
      const held = await first.target.readKeys({ ...shape, writer: undefined }, settled.missing);
      const absent = settled.missing.filter((c) => !held.has(c.key));
      const deleted = (await first.target.deletedByOthers?.(shape, absent)) ?? new Set<string>();
      others = settled.missing.filter((c) => held.has(c.key) || deleted.has(c.key));
      settled.missing = absent.filter((c) => !deleted.has(c.key));
    }
    const otherWriters = others.length;
    // Keys another writer holds are not lag either: the counts differ by them for good.
    const kept = settled.missing.length + settled.extra.length + settled.different.length + settled.unsettled.length + otherWriters;
    const keys = (list: Candidate[]): string[] => list.slice(0, sample).map((c) => c.key);
    return {
      ...base,
      sourceRows: scan.sourceRows,
      targetRows: scan.targetRows,
      missing: keys(settled.missing),
      extra: keys(settled.extra),
      different: keys(settled.different),
      differing: settled.missing.length + settled.extra.length + settled.different.length + scan.overflow,
      unsettled: settled.unsettled.length,
      unchecked: scan.overflow,
      lagChecked: options.barrier !== undefined,
      // Also when no key was a candidate: a range whose counts differed was caught up by the
      // time its parts were compared (the counts are those of the range's first read).
      countsBeforeCatchUp: kept < scan.candidates.size || (settled.missing.length + settled.extra.length + scan.overflow + otherWriters === 0 && scan.sourceRows !== scan.targetRows),
      ...(options.keepKeys ? { keys: { missing: settled.missing, extra: settled.extra, different: settled.different, ...(shape.writer ? { others } : {}) } } : {}),
      rowsPerSecond: rate(Math.max(scan.sourceRows, scan.targetRows)),
      ...(shape.writer ? { otherWriters } : {}),
    };
  } finally {
    for (const r of restore) await r().catch(() => undefined);
  }
}

/**
 * The shape of `t` on `pair`, or TargetTableMissing for an empty source table whose target
 * table apply has not created yet (it does so with the first row). A target table missing
 * while the source has rows is an error, after waiting for apply to catch up (a table
 * whose first rows are still on their way).
 */
async function readTargetShape(pair: TargetPair, t: TableName, route: TableRoute | undefined, barrier: ApplyBarrier | undefined, writer: VerifyWriter | undefined): Promise<VerifyShape | TargetTableMissing> {
  const digest = pair.target.type === 'postgres' ? 'record' : 'text-array';
  for (let caughtUp = false; ; caughtUp = true) {
    try {
      return await readShape(pair.source, pair.target.columns, t, route, digest, writer);
    } catch (err) {
      if (!(err instanceof TargetTableMissing)) throw err;
      const { rows } = await pair.source.query<{ empty: boolean }>(`SELECT NOT EXISTS (SELECT 1 FROM ${quoteQualified(t.schema, t.table)}) AS empty`);
      if (rows[0]?.empty === true) return err;
      if (caughtUp || !barrier) throw new Error(`${err.message}, but the source table ${t.schema}.${t.table} has rows: is apply running (with sink.create_tables, or the table created by hand)?`);
      const { rows: at } = await pair.source.query<{ lsn: string }>('SELECT pg_current_wal_lsn()::text AS lsn');
      await barrier((at[0] as { lsn: string }).lsn);
    }
  }
}

/** An empty source table with no target table yet: nothing differs. */
function missingTarget(missing: TargetTableMissing, t: TableName, route: TableRoute | undefined): TableVerification {
  return {
    table: tableLabel(t),
    ...(route ? { target: tableLabel(route.target) } : {}),
    keyColumns: missing.keyColumns,
    sourceRows: 0,
    targetRows: 0,
    missing: [],
    extra: [],
    different: [],
    differing: 0,
    unsettled: 0,
    unchecked: 0,
    lagChecked: false,
    countsBeforeCatchUp: false,
    rowsPerSecond: 0,
    warnings: [`${missing.message}: the source table is empty (sink.create_tables creates the target table with its first row)`],
  };
}

/** The target side of a keyless comparison: sums in the server (postgres) or in Node (mysql, sqlite). */
function keylessSide(shape: VerifyShape, target: VerifyTarget): KeylessSide {
  if (isPostgresTarget(target)) return sqlKeylessSide(target.client, new SideSql(shape, 'target'));
  if (isRowTarget(target)) return rowKeylessSide(shape, target);
  throw new Error(`no keyless comparison for a ${target.type} target`);
}

/** The keyed scan for the pairs' kind of target. */
function scanKeyedOn(shape: VerifyShape, pairs: readonly TargetPair[], options: ScanOptions): Promise<KeyedScan> {
  const postgres = pairs.flatMap((p) => (isPostgresTarget(p.target) ? [{ source: p.source, target: p.target.client }] : []));
  if (postgres.length > 0) return scanKeyed(shape, postgres, options);
  return scanKeyedRows(shape, pairs.flatMap((p) => (isRowTarget(p.target) ? [{ source: p.source, target: p.target }] : [])), options);
}

/**
 * Compares one table between source and target on one connection each (see verifyTable),
 * without waiting for a pipeline: differences are reported as they are when re-read.
 */
export async function compareTable(source: pg.ClientBase, target: pg.ClientBase, t: TableName, sample = SAMPLE, route?: TableRoute): Promise<TableDrift & { differing: number }> {
  return verifyTable([{ source, target }], t, route, { sample });
}

/**
 * The server encodings of the source and the target: the two would hash different bytes for
 * the same text where they differ (a mysql or sqlite target's digests are computed in Node,
 * over UTF-8: UTF8). SQL_ASCII stores bytes unconverted, as they were sent: taken as UTF8.
 */
async function serverEncodings(pair: TargetPair): Promise<SideEncodings> {
  const encoding = async (c: pg.ClientBase): Promise<string> => {
    const value = (await c.query<{ e: string }>(`SELECT current_setting('server_encoding') AS e`)).rows[0]?.e ?? 'UTF8';
    return value === 'SQL_ASCII' ? 'UTF8' : value;
  };
  return { source: await encoding(pair.source), target: isPostgresTarget(pair.target) ? await encoding(pair.target.client) : 'UTF8' };
}

/** PostgreSQL 14+ has hash_record_extended. */
async function hasRecordHash(client: pg.ClientBase): Promise<boolean> {
  return (await serverVersionNumber(client)) >= 140000;
}
