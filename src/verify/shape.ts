import type pg from 'pg';
import { quoteIdent, quoteLiteral, quoteQualified, type TableName } from '../core/sql.js';
import { excludedKey, tableLabel, targetColumnOf, type TableRoute } from '../core/table-mapping.js';
import { SOURCE_COLUMN, WRITER_XID_COLUMN } from '../sink/sql/bookkeeping.js';
import { OUTPUT_SETTINGS } from '../source/replication-stream.js';
import { columnForm, formKey, formValue, type ColumnForm } from './column-form.js';
import { keyAsBytes, type SideEncodings } from './key-encoding.js';
import { sourceExpression } from './targets/source-text.js';

/** One compared column: its source name and type, and its name and type at the target. */
export interface VerifyColumn {
  from: string;
  to: string;
  /** format_type of the source column (with modifiers), e.g. `numeric(12,2)`; a domain as its base type. */
  type: string;
  targetType: string;
  /**
   * How the column is read on each side (column-form.ts). A mysql or sqlite target's values
   * are turned back into source text in Node instead: `same` (the source reads it as it is).
   */
  form: ColumnForm;
  /**
   * A key column's target collation (a qualified, quoted name) that the target's key is read
   * in when its own collation orders otherwise than the source's (key-collation.ts).
   */
  targetCollation?: string;
  /**
   * A string key ordered by bytes ("C") on both sides: when the servers' encodings differ
   * (VerifyShape.encodings), a side whose bytes do not order as code points reads it as its
   * UTF-8 bytes in ranges and ORDER BY (key-encoding.ts).
   */
  byteOrdered?: boolean;
}

/**
 * What verify compares of one table: the source's own columns (excluded ones left out) in
 * source order, the key in the source's primary-key index order (ranges follow that index),
 * and how each column reads at the target.
 */
export interface VerifyShape {
  source: TableName;
  target: TableName;
  /** `schema.table` of the source. */
  label: string;
  /** Set when `sink.tables` routes the table elsewhere. */
  targetLabel?: string;
  columns: VerifyColumn[];
  /** Key columns in index order; empty for a keyless table (a multiset). */
  key: VerifyColumn[];
  /** The target has `_deleted_at` (soft deletes): its rows with a value there count as absent. */
  softDeletes: boolean;
  /** pg_class.reltuples of the source: the progress estimate. */
  estimatedRows: number;
  /**
   * How rows are digested. `record`: `md5(ROW(...)::text)` computed by both servers (a
   * postgres target). `text-array`: `md5` of the JSON array of the values' source text, with
   * numerics in trim_scale form, computed by the source and, for a mysql or sqlite target, in
   * Node from its values turned back into source text (targets/source-text.ts).
   */
  digest: 'record' | 'text-array';
  /**
   * Conflict tracking (several writers into one target, see VerifyWriter): only the target
   * rows this writer wrote last are compared; set when the target table records writers.
   */
  writer?: VerifyWriter;
  /**
   * Range sums hash the row's values (`hash_record_extended`, PostgreSQL 14+ on both sides)
   * rather than its text: set by verifyTable when both servers have it.
   */
  hashValues?: boolean;
  /**
   * Rows are hashed as the UTF-8 bytes of their text: set by verifyTable when the two sides
   * would hash different bytes for the same text (a LATIN1 source and a UTF8 target, or a
   * non-UTF8 source against a digest computed in Node). md5 and hashtextextended hash the
   * server's own encoding, so 'café' would read as drift though both hold it.
   */
  utf8Bytes?: boolean;
  /** The two servers' encodings, set by verifyTable when they differ (key-encoding.ts). */
  encodings?: SideEncodings;
  /**
   * Compared columns that are generated at the source and plain at the target: logical
   * decoding never sends them, so the target's values are not syncline's (see readShape).
   */
  uncarried?: UncarriedColumn[];
}

/** A source generated column that a target keeps as a plain column. */
export interface UncarriedColumn {
  /** The column's target name. */
  column: string;
  /** Its generation expression at the source, as pg_get_expr prints it (`(a * 2)`). */
  expression: string;
}

/**
 * Why a target's plain copy of a source generated column is never written, and the fix;
 * `table` is the target table's label.
 */
export function uncarriedMessage(table: string, columns: readonly UncarriedColumn[]): string {
  const list = columns.map((c) => c.column).join(', ');
  const fix = columns.map((c) => `${c.column} GENERATED ALWAYS AS ${c.expression} STORED`).join(', ');
  return (
    `column(s) ${list} of ${table}: generated at the source, a plain column at the target; PostgreSQL's logical decoding does not send generated columns ` +
    `(nor does syncline's snapshot read them), so syncline never writes them and repair cannot fix their values: ` +
    `declare them generated at the target too (${fix}), or drop them at the target`
  );
}

/**
 * Types whose hash tells values apart exactly as their text does (equal hash ⇔ equal text),
 * so a range sum of value hashes misses no difference the text would show. Left out, hashed
 * as their text: numeric (the sign is not hashed, NaN hashes like NULL, 1.5 and 1.50 alike),
 * floats (0 and -0), interval ('1 day' and '24 hours'), jsonb (an empty container hashes
 * like NULL: {}, [] and [[]] alike; numbers as numeric), timestamps and times (a 64-bit value
 * hashed as the 32-bit fold lo ^ hi: values 2^32+1 µs apart alike), citext and other
 * case-folding types, json (no hash). bigint is hashed as its two 32-bit halves (bigintHalves).
 */
const VALUE_HASHED = /^(smallint|integer|bigint|boolean|text|uuid|date|bytea|oid|character varying(\(\d+\))?|character(\(\d+\))?)$/;

export type Side = 'source' | 'target';

/**
 * Whose rows verify compares when several writers share the target (conflict tracking on:
 * fan-in, or a bidirectional pair). Each target row records the source that wrote its version
 * (`_syncline_source`); a row another source wrote last, or one changed at the target since
 * syncline wrote it (the `local_source` writer's, as the sink decides conflicts), is not this
 * source's to compare: counting it as extra would make repair delete another writer's row.
 */
export interface VerifyWriter {
  /** `source.name` of the verified pipeline. */
  source: string;
  /** `sink.local_source` names this source too: the rows written at the target are its own. */
  local: boolean;
  /** `sink.state_schema`: where the sink records each writer's deletes (`source_tombstones`). */
  stateSchema: string;
}

/**
 * A bigint as its high and low 32 bits, two fields: hashint8 hashes a bigint as the 32-bit
 * fold of its halves (0 and 4294967297 alike), but is exact on values that fit 32 bits.
 */
const bigintHalves = (col: string): string => `${col} >> 32, ${col} & 4294967295`;

/** PostgreSQL's limit on the entries of a ROW(...) expression (and of a target list). */
const MAX_ROW_FIELDS = 1664;

/** A target table's columns as verify needs them. */
export interface TargetTableColumns {
  /** Column name → declared type: format_type's for a postgres target, the target's own names otherwise. */
  types: Map<string, string>;
  /** Columns the target computes itself (generated there): nothing is written into them. */
  generated: ReadonlySet<string>;
}

/** The target's columns of a table; undefined when it does not exist. */
export type TargetColumns = (t: TableName) => Promise<TargetTableColumns | undefined>;

/**
 * The target table does not exist: under `sink.create_tables` apply creates it with the
 * table's first change, so an empty source table has none yet.
 */
export class TargetTableMissing extends Error {
  constructor(
    readonly target: TableName,
    /** The source's primary-key column names, in key order. */
    readonly keyColumns: string[],
  ) {
    super(`target table ${target.schema}.${target.table} does not exist`);
  }
}

/**
 * Reads the shape of `t` at the source and checks its target has every compared column.
 * A generated column of the source is compared only where the target has it as a plain
 * column: pgoutput never sends it (nor does a snapshot read it), so no sink writes it; a
 * target that left it out (`sink.create_tables` does) or declares it generated too (a
 * `pg_dump --schema-only` copy, which computes it from the compared columns) has nothing to
 * compare, but a plain copy holds values syncline never wrote (NULL), and calling such a
 * table identical would hide that (`uncarried`).
 */
export async function readShape(
  source: pg.ClientBase,
  targetColumns: TargetColumns,
  t: TableName,
  route: TableRoute | undefined,
  digest: VerifyShape['digest'],
  writer?: VerifyWriter,
): Promise<VerifyShape> {
  const qualified = quoteQualified(t.schema, t.table);
  const to = route?.target ?? t;
  const { rows: cols } = await source.query<{ name: string; type: string; key_pos: number | null; generated: string | null }>(
    `SELECT a.attname AS name, ${baseTypeSql('a')} AS type,
            (SELECT k.n FROM pg_index i, unnest(i.indkey) WITH ORDINALITY AS k(att, n)
              WHERE i.indrelid = a.attrelid AND i.indisprimary AND k.att = a.attnum)::int AS key_pos,
            CASE WHEN a.attgenerated <> '' THEN
              (SELECT pg_get_expr(d.adbin, d.adrelid) FROM pg_attrdef d WHERE d.adrelid = a.attrelid AND d.adnum = a.attnum) END AS generated
       FROM pg_attribute a
      WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum`,
    [qualified],
  );
  if (cols.length === 0) throw new Error(`source table ${t.schema}.${t.table} does not exist`);
  const target = await targetColumns(to);
  if (!target) {
    const key = cols.filter((c) => c.key_pos !== null).sort((a, b) => (a.key_pos ?? 0) - (b.key_pos ?? 0)).map((c) => c.name);
    throw new TargetTableMissing(to, key);
  }
  const columns: VerifyColumn[] = [];
  const keyed: { pos: number; column: VerifyColumn }[] = [];
  const absent: string[] = [];
  const uncarried: UncarriedColumn[] = [];
  const targetTypes = target.types;
  for (const c of cols) {
    const name = route ? targetColumnOf(route, c.name) : c.name;
    if (name === undefined) {
      if (c.key_pos !== null && route) throw excludedKey(route, c.name);
      continue;
    }
    const targetType = targetTypes.get(name);
    if (c.generated !== null) {
      if (targetType === undefined || target.generated.has(name)) continue;
      uncarried.push({ column: name, expression: c.generated });
    } else if (targetType === undefined) {
      absent.push(name);
      continue;
    }
    const form = digest === 'record' ? columnForm(c.type, targetType, c.key_pos !== null) : { kind: 'same' as const, type: c.type, boundType: c.type };
    const column = { from: c.name, to: name, type: c.type, targetType, form };
    columns.push(column);
    if (c.key_pos !== null) keyed.push({ pos: c.key_pos, column });
  }
  if (absent.length > 0) throw new Error(`target table ${to.schema}.${to.table} lacks column(s) ${absent.join(', ')}`);
  const { rows: est } = await source.query<{ n: string }>('SELECT greatest(reltuples, 0)::bigint::text AS n FROM pg_class WHERE oid = to_regclass($1)', [qualified]);
  return {
    source: t,
    target: to,
    label: tableLabel(t),
    ...(route ? { targetLabel: tableLabel(route.target) } : {}),
    columns,
    key: keyed.sort((a, b) => a.pos - b.pos).map((k) => k.column),
    softDeletes: targetTypes.has('_deleted_at'),
    // A table the sink has not tracked yet records no writers: every row is compared.
    ...(writer && targetTypes.has(SOURCE_COLUMN) && (digest !== 'record' || targetTypes.has(WRITER_XID_COLUMN)) ? { writer } : {}),
    estimatedRows: Number(est[0]?.n ?? 0),
    digest,
    ...(uncarried.length > 0 ? { uncarried } : {}),
  };
}

/**
 * The format_type of pg_attribute row `a`'s type, a domain (or an array of one) given as its
 * base type with the base's modifiers (`numeric(12,2)` for a domain over it, `integer[]` for
 * an array of a domain over integer). Verify compares values, which a domain does not change:
 * by the declared name, a source column of a domain the target declares as its base type
 * would be read at the target cast to a domain the target lacks (an SQL error on equal rows),
 * and a domain over numeric at a mysql or sqlite target would not be compared as a numeric.
 */
function baseTypeSql(a: string): string {
  const base = (oid: string, mod: string): string =>
    `(WITH RECURSIVE d(oid, mod, n) AS (SELECT ${oid}, ${mod}, 0
        UNION ALL SELECT t.typbasetype, t.typtypmod, d.n + 1 FROM d JOIN pg_type t ON t.oid = d.oid WHERE t.typtype = 'd')
      SELECT format_type(d.oid, d.mod) FROM d ORDER BY d.n DESC LIMIT 1)`;
  return `(SELECT CASE WHEN e.typtype = 'd' THEN ${base('e.oid', '-1')} || '[]' ELSE ${base(`${a}.atttypid`, `${a}.atttypmod`)} END
             FROM pg_type t LEFT JOIN pg_type e ON t.typcategory = 'A' AND e.oid = t.typelem WHERE t.oid = ${a}.atttypid)`;
}

/** A postgres target's columns with their format_type (domains as their base type). */
export function postgresColumns(target: pg.ClientBase): TargetColumns {
  return async (t) => {
    const { rows } = await target.query<{ name: string; type: string; generated: boolean }>(
      `SELECT a.attname AS name, ${baseTypeSql('a')} AS type, a.attgenerated <> '' AS generated FROM pg_attribute a
        WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped`,
      [quoteQualified(t.schema, t.table)],
    );
    if (rows.length === 0) return undefined;
    return { types: new Map(rows.map((c) => [c.name, c.type])), generated: new Set(rows.filter((c) => c.generated).map((c) => c.name)) };
  };
}

/**
 * SQL fragments of one side. A column declared alike on both sides is read as it is; one
 * declared otherwise is read in a form both sides share (column-form.ts: the wider type, a
 * trimmed numeric, the text the sink wrote), so both servers print the same text for a
 * value; with the output settings pinned (pinOutputSettings), `ROW(...)::text` is the same
 * bytes on both sides for equal rows.
 */
export class SideSql {
  readonly from: string;
  /**
   * Restricts the target to live rows (soft-deleted ones count as absent) and, with a
   * `shape.writer`, to the rows that writer wrote last (the others are another writer's).
   */
  readonly live: string;

  constructor(readonly shape: VerifyShape, readonly side: Side) {
    const t = side === 'source' ? shape.source : shape.target;
    this.from = quoteQualified(t.schema, t.table);
    const live = side === 'target' && shape.softDeletes ? [`${quoteIdent('_deleted_at')} IS NULL`] : [];
    if (side === 'target' && shape.writer) live.push(writerSql(this.from, shape.writer));
    this.live = live.length > 0 ? live.join(' AND ') : 'true';
  }

  /** A column's value as compared (its form's value on this side). */
  col(c: VerifyColumn): string {
    return formValue(c.form, this.side, this.side === 'source' ? c.from : c.to, c.type, c.targetType);
  }

  /**
   * A key column as ranges, ORDER BY and key look-ups compare it (the source's index serves),
   * at the target in a collation ordering as the source's when its own does not.
   */
  keyCol(c: VerifyColumn): string {
    const key = formKey(c.form, this.side, this.side === 'source' ? c.from : c.to);
    return this.side === 'target' && c.targetCollation ? `(${key} COLLATE ${c.targetCollation})` : key;
  }

  /** A column's value as compared: the column, or its normal form (shape.digest `text-array`). */
  value(c: VerifyColumn): string {
    return this.shape.digest === 'text-array' ? sourceExpression(c.type, this.col(c)) : this.col(c);
  }

  /** The row's text: what the digests hash. */
  rowText(): string {
    if (this.shape.digest === 'text-array') return `to_json(ARRAY[${this.shape.columns.map((c) => `${this.value(c)}::text`).join(', ')}])::text`;
    return `ROW(${this.shape.columns.map((c) => this.col(c)).join(', ')})::text`;
  }

  /** The row's md5 (hex). */
  digest(): string {
    return this.shape.utf8Bytes ? `md5(convert_to(${this.rowText()}, 'UTF8'))` : `md5(${this.rowText()})`;
  }

  /**
   * A 64-bit hash of the row, summed (exactly, as numeric) per range. Both sides of a range
   * checksum are PostgreSQL servers, so the server's own hashtextextended (the hash of hash
   * partitioning, the same on every server) serves: several times cheaper than md5 and a
   * text-to-bits conversion per row. A range whose sums differ is split down to rows, which
   * are compared by md5 (`digest`), so a hash that differed for equal rows could cost time,
   * never report drift. With `hashValues`, the values' own hash functions (those of hash
   * partitioning too, so alike on every server and version) over the row, text only for the
   * types whose hash is coarser than their text.
   */
  rowHash(): string {
    // A ROW expression holds at most 1664 fields (a bigint takes two): wider rows hash their text.
    const fields = this.shape.columns.reduce((n, c) => n + (c.form.type === 'bigint' ? 2 : 1), 0);
    if (this.shape.digest === 'record' && this.shape.hashValues && fields <= MAX_ROW_FIELDS) {
      // Several times cheaper than printing the row: no text is made for the common types.
      // hash_record_extended is linear in its fields' hashes (h = 31·h1 + h2 ...), so a sum of
      // it over rows would not change when a value moves from one row to another: the row's
      // hash is hashed once more (as the text of a bigint: injective, and cheap).
      return `hashtextextended(hash_record_extended(ROW(${this.shape.columns.map((c) => this.hashedValue(c)).join(', ')}), 0)::text, 0)`;
    }
    // The md5's hex is ASCII: the same bytes in every server encoding.
    if (this.shape.utf8Bytes) return `hashtextextended(${this.digest()}, 0)`;
    return `hashtextextended(${this.rowText()}, 0)`;
  }

  /**
   * A column as `rowHash` hashes it. Strings in the "C" collation, text included: a
   * nondeterministic (case-insensitive) collation would hash 'A' and 'a' alike, and a
   * column's collation stays with its value through `::text` (a domain, an array of text).
   */
  private hashedValue(c: VerifyColumn): string {
    const type = c.form.type;
    if (!VALUE_HASHED.test(type)) return `${this.col(c)}::text COLLATE "C"`;
    if (type === 'bigint') return bigintHalves(this.col(c));
    return /^(text|character)/.test(type) ? `${this.col(c)} COLLATE "C"` : this.col(c);
  }

  /** Key (or, keyless, whole row) as a JSON array of text values: the form events and the DLQ use. */
  keyJson(): string {
    const cols = this.shape.key.length > 0 ? this.shape.key : this.shape.columns;
    return `to_json(ARRAY[${cols.map((c) => `${this.value(c)}::text`).join(', ')}])::text`;
  }

  keyList(): string {
    return this.shape.key.map((c) => this.keyCol(c)).join(', ');
  }

  /** Key values as text, in key order. */
  keyTexts(): string {
    return this.shape.key.map((c, i) => `${this.value(c)}::text AS k${i}`).join(', ');
  }

  /** `(key) > (after) AND (key) <= (upper)` with parameters from `$first`; pushes the values. */
  range(after: readonly string[] | null, upper: readonly string[] | null, params: unknown[]): string {
    return this.keyRange(after, upper, params).where;
  }

  /**
   * `range`, and the key list to ORDER BY in the same order: a string key this side reads as
   * its UTF-8 bytes for these bounds (key-encoding.ts) is compared as bytea, its bounds sent
   * as their UTF-8 bytes (a row comparison needs the same type on both sides of each field).
   */
  keyRange(after: readonly string[] | null, upper: readonly string[] | null, params: unknown[]): { where: string; order: string } {
    const encoding = this.shape.encodings?.[this.side];
    const bytes = this.shape.key.map((c, i) => {
      if (encoding === undefined || !c.byteOrdered) return false;
      return keyAsBytes(encoding, [after?.[i], upper?.[i]].filter((v): v is string => typeof v === 'string'));
    });
    const keys = this.shape.key.map((c, i) => (bytes[i] ? `convert_to(${this.keyCol(c)}, 'UTF8')` : this.keyCol(c))).join(', ');
    const parts = [this.live];
    const tuple = (values: readonly string[]): string =>
      `(${this.shape.key
        .map((c, i) => {
          const v = values[i];
          params.push(bytes[i] && typeof v === 'string' ? Buffer.from(v, 'utf8') : v);
          return `$${params.length}::${bytes[i] ? 'bytea' : c.form.boundType}`;
        })
        .join(', ')})`;
    if (after) parts.push(`(${keys}) > ${tuple(after)}`);
    if (upper) parts.push(`(${keys}) <= ${tuple(upper)}`);
    return { where: parts.join(' AND '), order: keys };
  }
}

/**
 * The rows of a postgres target (`from`) whose version `writer` wrote, as the postgres sink
 * tells writers apart: its source's rows, unless changed at the target since (their xmin is
 * not the sink transaction's `_syncline_xid`), which are the `local_source` writer's, as are
 * rows syncline never wrote.
 */
function writerSql(from: string, writer: VerifyWriter): string {
  const xid = `${from}.${quoteIdent(WRITER_XID_COLUMN)}`;
  const xmin = `${from}.xmin::text::bigint`;
  const own = `(${from}.${quoteIdent(SOURCE_COLUMN)} = ${quoteLiteral(writer.source)} AND ${xid} = ${xmin})`;
  return writer.local ? `(${own} OR ${xid} IS NULL OR ${xid} <> ${xmin})` : own;
}

/**
 * Pins the session's output settings to the ones capture and snapshots use (UTC, ISO dates,
 * round-trip floats, hex bytea), so values print alike on servers with other defaults.
 * Returns a function that restores the previous settings (the client may be the caller's).
 */
export async function pinOutputSettings(client: pg.ClientBase): Promise<() => Promise<void>> {
  const names = ['datestyle', 'intervalstyle', 'extra_float_digits', 'timezone', 'bytea_output'];
  const { rows } = await client.query<{ name: string; value: string }>('SELECT name, current_setting(name) AS value FROM unnest($1::text[]) AS name', [names]);
  await client.query(OUTPUT_SETTINGS);
  return async () => {
    await client.query('SELECT set_config(name, value, false) FROM unnest($1::text[], $2::text[]) AS s(name, value)', [rows.map((r) => r.name), rows.map((r) => r.value)]);
  };
}
