import type pg from 'pg';
import type { ColumnType } from '../core/schema-version.js';
import { PrerequisiteError } from '../core/errors.js';
import { quoteIdent, quoteLiteral, quoteQualified, type TableName } from '../core/sql.js';

export interface TableShape {
  /** Columns as pgoutput sends them: not dropped, not generated. */
  columns: string[];
  /** Type and modifier of each column, as a Relation message carries them (for `_schema_version`). */
  types: ColumnType[];
  /**
   * The row's key as streamed changes carry it (the primary key, or the replica identity
   * index), in index order: the chunking key. Empty for a keyless table (REPLICA IDENTITY
   * FULL, or an insert-only table, without a primary key), which is read whole.
   */
  key: string[];
}

/** Key values (PostgreSQL text) of one row, in key-column order. */
export type KeyValues = readonly string[];

/** Optional bounds on the first key column (text, inclusive), from `syncline snapshot --from/--to`. */
export interface KeyBounds {
  from: string | null;
  to: string | null;
}

/** Every value as PostgreSQL's text output, exactly as pgoutput would send it. */
export const RAW_TEXT = { getTypeParser: () => (value: string) => value };

export async function tableShape(client: pg.ClientBase, t: TableName): Promise<TableShape> {
  const qualified = quoteQualified(t.schema, t.table);
  // The key streamed changes carry: the replica identity index (USING INDEX), else the
  // primary key (DEFAULT, and FULL when there is one), else none.
  const { rows } = await client.query<{ name: string; type_oid: number; type_mod: number; key_pos: number | null }>(
    `WITH rel AS (SELECT c.oid, c.relreplident FROM pg_class c WHERE c.oid = to_regclass($1)),
          ident AS (SELECT i.indkey FROM pg_index i, rel
                     WHERE i.indrelid = rel.oid
                       AND CASE WHEN rel.relreplident = 'i' THEN i.indisreplident ELSE i.indisprimary AND rel.relreplident IN ('d', 'f') END)
     SELECT a.attname AS name, a.atttypid::int AS type_oid, a.atttypmod AS type_mod,
            (SELECT array_position(ident.indkey::int2[], a.attnum) FROM ident) AS key_pos
       FROM pg_attribute a, rel
      WHERE a.attrelid = rel.oid AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''
      ORDER BY a.attnum`,
    [qualified],
  );
  if (rows.length === 0) throw new PrerequisiteError(`cannot snapshot ${t.schema}.${t.table}: no such table at the source`, 'check the table name');
  const key = rows.filter((r) => r.key_pos !== null).sort((a, b) => (a.key_pos ?? 0) - (b.key_pos ?? 0)).map((r) => r.name);
  return { columns: rows.map((r) => r.name), types: rows.map((r) => ({ name: r.name, typeOid: r.type_oid, typeMod: r.type_mod })), key };
}

/** WHERE terms and parameters for keys in (after, upper] within `bounds`. */
function rangeWhere(shape: TableShape, after: KeyValues | null, upper: KeyValues | null, bounds: KeyBounds): { where: string; params: unknown[] } {
  const keyList = shape.key.map(quoteIdent).join(', ');
  const terms: string[] = [];
  const params: unknown[] = [];
  const placeholders = (values: KeyValues): string =>
    values
      .map((v) => {
        params.push(v);
        return `$${params.length}`;
      })
      .join(', ');
  if (after) terms.push(`(${keyList}) > (${placeholders(after)})`);
  if (upper) terms.push(`(${keyList}) <= (${placeholders(upper)})`);
  const first = quoteIdent(shape.key[0] as string);
  if (bounds.from !== null) {
    params.push(bounds.from);
    terms.push(`${first} >= $${params.length}`);
  }
  if (bounds.to !== null) {
    params.push(bounds.to);
    terms.push(`${first} <= $${params.length}`);
  }
  return { where: terms.length > 0 ? `WHERE ${terms.join(' AND ')}` : '', params };
}

/**
 * The key of the `size`-th row after `after` (and not past `cap`), or null when fewer rows
 * are left: the upper bound of the next chunk. It reads keys only (the primary-key index),
 * so chunks can be planned ahead of reading them and read on several connections at once.
 */
export async function chunkBoundary(
  client: pg.ClientBase,
  t: TableName,
  shape: TableShape,
  after: KeyValues | null,
  cap: KeyValues | null,
  bounds: KeyBounds,
  size: number,
): Promise<KeyValues | null> {
  const keyList = shape.key.map(quoteIdent).join(', ');
  const { where, params } = rangeWhere(shape, after, cap, bounds);
  params.push(size - 1);
  const sql = `SELECT ${keyList} FROM ${quoteQualified(t.schema, t.table)} ${where} ORDER BY ${keyList} OFFSET $${params.length} LIMIT 1`;
  const res = await client.query<string[]>({ text: sql, values: params, rowMode: 'array', types: RAW_TEXT });
  return res.rows[0] ?? null;
}

/**
 * Reads the rows whose key is in (after, upper] (upper null: to the end), in key order,
 * optionally bounded on the first key column. Values are text (null for NULL).
 */
export async function readChunk(
  client: pg.ClientBase,
  t: TableName,
  shape: TableShape,
  after: KeyValues | null,
  upper: KeyValues | null,
  bounds: KeyBounds,
): Promise<(string | null)[][]> {
  const keyList = shape.key.map(quoteIdent).join(', ');
  const { where, params } = rangeWhere(shape, after, upper, bounds);
  const sql = `SELECT ${shape.columns.map(quoteIdent).join(', ')} FROM ${quoteQualified(t.schema, t.table)} ${where} ORDER BY ${keyList}`;
  const res = await client.query<(string | null)[]>({ text: sql, values: params, rowMode: 'array', types: RAW_TEXT });
  return res.rows;
}

/**
 * `readChunk` in a REPEATABLE READ transaction, with the snapshot it read in
 * (`pg_current_snapshot()`): capture needs it to tell which changes of the chunk's window the
 * rows already include (see SnapshotWindows).
 */
export async function readChunkInSnapshot(
  client: pg.ClientBase,
  t: TableName,
  shape: TableShape,
  after: KeyValues | null,
  upper: KeyValues | null,
  bounds: KeyBounds,
): Promise<{ rows: (string | null)[][]; snapshot: string }> {
  await client.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
  try {
    const { rows } = await client.query<{ s: string }>('SELECT pg_current_snapshot()::text AS s');
    const read = await readChunk(client, t, shape, after, upper, bounds);
    await client.query('COMMIT');
    return { rows: read, snapshot: (rows[0] as { s: string }).s };
  } catch (err) {
    await client.query('ROLLBACK').catch(() => undefined);
    throw err;
  }
}

/**
 * Reads a keyless table whole, `batch` rows at a time, in the snapshot exported as
 * `snapshotId` (see SnapshotRunner), on `client`, which must not be in a transaction.
 * `begin` resolves once the snapshot is imported and the table locked (the exporter may
 * then end its transaction); `onRows` is awaited for every batch. A lock that cannot be
 * had at once fails with lock_not_available (55P03).
 */
export async function readKeylessTable(
  client: pg.ClientBase,
  t: TableName,
  shape: TableShape,
  snapshotId: string,
  batch: number,
  begin: () => Promise<void>,
  onRows: (rows: (string | null)[][]) => Promise<boolean>,
): Promise<void> {
  await client.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
  try {
    await client.query(`SET TRANSACTION SNAPSHOT ${quoteLiteral(snapshotId)}`);
    // Locked before the exporter ends its transaction, so no rewrite of the table (ALTER
    // COLUMN TYPE, TRUNCATE: not MVCC-safe) can run before the read: under the older
    // snapshot the rewritten table reads empty. One queued behind the exporter's lock gets
    // it first when that ends, and the read would wait behind it: NOWAIT, the caller cuts
    // again once it is through.
    await client.query(`LOCK TABLE ${quoteQualified(t.schema, t.table)} IN ACCESS SHARE MODE NOWAIT`);
    await begin();
    await client.query(`DECLARE syncline_keyless NO SCROLL CURSOR FOR SELECT ${shape.columns.map(quoteIdent).join(', ')} FROM ${quoteQualified(t.schema, t.table)}`);
    for (;;) {
      const res = await client.query<(string | null)[]>({ text: `FETCH ${Math.max(1, Math.floor(batch))} FROM syncline_keyless`, rowMode: 'array', types: RAW_TEXT });
      if (res.rows.length === 0) break;
      if (!(await onRows(res.rows))) break;
    }
    await client.query('COMMIT');
  } catch (err) {
    await client.query('ROLLBACK').catch(() => undefined);
    throw err;
  }
}
