import type pg from 'pg';
import { quoteIdent, quoteQualified } from '../core/sql.js';
import { BYTE_KEY_TYPE, codePointOrdered, type SideEncodings } from './key-encoding.js';
import type { VerifyColumn, VerifyShape } from './shape.js';

/**
 * Text keys in one order on both sides of a postgres target. Ranges are planned on the
 * source's key index and applied at the target as `(key) > bound AND (key) <= bound`: a
 * target whose key column orders text by another collation (an ICU database, a column
 * declared `COLLATE "en-x-icu"`) puts other rows in each range, so the ranges overlap and
 * leave gaps, and a differing range is split without end. The target's key is then read
 * `COLLATE` a target collation that orders as the source's; with none, verify of that table
 * fails with the fix instead of hanging.
 */

/** A collation as it orders text: the default one resolved to the database's. */
interface Collation {
  /** `"schema"."name"`, as SQL and messages name it. */
  name: string;
  provider: string;
  locale: string;
  deterministic: boolean;
}

/**
 * Every collation of the connected database usable in its encoding (the `default` one with
 * the database's provider and locale), and the effective collation of each of `columns` of
 * `table` (a column of no collatable type: the default one, which a cast of it to a string
 * type takes). Catalog columns that only some versions have are read through to_jsonb:
 * datlocprovider/daticulocale (15, 16), datlocale/colllocale (17+), colliculocale (15, 16);
 * before 15 the database's collation is libc and an ICU collation's locale is collcollate.
 */
const COLLATIONS_SQL = `
  WITH db AS (SELECT coalesce(to_jsonb(d) ->> 'datlocprovider', 'c') AS provider,
                     coalesce(to_jsonb(d) ->> 'datlocale', to_jsonb(d) ->> 'daticulocale') AS locale,
                     d.datcollate::text AS libc, d.encoding
                FROM pg_database d WHERE d.datname = current_database())
  SELECT co.oid::int AS oid, format('%I.%I', n.nspname, co.collname) AS name,
         CASE WHEN co.collprovider = 'd' THEN db.provider ELSE co.collprovider::text END AS provider,
         CASE WHEN co.collprovider = 'd' THEN CASE WHEN db.provider = 'c' THEN db.libc ELSE db.locale END
              WHEN co.collprovider = 'c' THEN co.collcollate::text
              ELSE coalesce(to_jsonb(co) ->> 'colllocale', to_jsonb(co) ->> 'colliculocale', co.collcollate::text) END AS locale,
         coalesce((to_jsonb(co) ->> 'collisdeterministic')::boolean, true) AS deterministic,
         n.nspname = 'pg_catalog' AS builtin
    FROM pg_collation co JOIN pg_namespace n ON n.oid = co.collnamespace, db
   WHERE co.collencoding IN (-1, db.encoding)`;

const COLUMNS_SQL = `
  SELECT a.attname AS name, a.attcollation::int AS collation
    FROM pg_attribute a WHERE a.attrelid = to_regclass($1) AND a.attname = ANY($2::text[])`;

type CollationRow = Collation & { oid: number; builtin: boolean };

/** The default collation's oid (pg_collation's `default`). */
const DEFAULT_COLLATION = 100;

async function readSide(client: pg.ClientBase, table: string, columns: string[]): Promise<{ all: CollationRow[]; of: Map<string, CollationRow | undefined> }> {
  const { rows: all } = await client.query<CollationRow>(COLLATIONS_SQL);
  const { rows } = await client.query<{ name: string; collation: number }>(COLUMNS_SQL, [table, columns]);
  const byOid = new Map(all.map((c) => [c.oid, c]));
  return { all, of: new Map(rows.map((r) => [r.name, r.collation === 0 ? undefined : byOid.get(r.collation)])) };
}

/**
 * What orders text alike: provider and locale, with C and POSIX (libc or builtin) one byte
 * order, and builtin C.UTF-8 (code point order, the byte order of UTF-8) with them; a libc
 * locale's codeset as glibc normalizes it (`C.UTF-8` is `C.utf8`).
 */
export function orderingOf(c: Pick<Collation, 'provider' | 'locale' | 'deterministic'>): string {
  let locale = c.locale;
  if (c.provider === 'c') locale = locale.replace(/\.([^@]*)/, (_, codeset: string) => `.${codeset.toLowerCase().replace(/[^a-z0-9]/g, '')}`);
  const byteOrder = ((c.provider === 'c' || c.provider === 'b') && (locale === 'C' || locale === 'POSIX')) || (c.provider === 'b' && locale === 'C.UTF-8');
  return `${byteOrder ? 'bytes' : `${c.provider}:${locale}`}${c.deterministic ? '' : ':nondeterministic'}`;
}

const providerName = (p: string): string => (p === 'i' ? 'icu' : p === 'b' ? 'builtin' : 'libc');
const describe = (c: Collation): string => `${c.name} (${providerName(c.provider)} ${JSON.stringify(c.locale)}${c.deterministic ? '' : ', nondeterministic'})`;

/**
 * Sets `targetCollation` on the key columns of `shape` whose target collation orders
 * otherwise than the source's (see the file comment). Returns a warning per such column
 * (the target's key index cannot serve those ranges); throws, naming the table, column,
 * both collations and the fix, when the target has no collation ordering as the source's.
 */
export async function alignKeyCollations(shape: VerifyShape, source: pg.ClientBase, target: pg.ClientBase): Promise<string[]> {
  if (shape.key.length === 0) return [];
  const src = await readSide(source, quoteQualified(shape.source.schema, shape.source.table), shape.key.map((c) => c.from));
  const dst = await readSide(target, quoteQualified(shape.target.schema, shape.target.table), shape.key.map((c) => c.to));
  const warnings: string[] = [];
  for (const c of shape.key) {
    const ours = src.of.get(c.from);
    if (!ours) continue; // not a collatable type at the source: no text order to share
    const theirs = dst.of.get(c.to) ?? dst.all.find((x) => x.oid === DEFAULT_COLLATION);
    const order = orderingOf(ours);
    const label = quoteQualified(shape.target.schema, shape.target.table);
    const encodings = shape.encodings;
    if (encodings && ours.provider === 'c' && order !== 'bytes') throw new Error(libcAcrossEncodings(shape, c, ours, theirs, encodings));
    if (encodings && order === 'bytes' && BYTE_KEY_TYPE.test(c.form.boundType)) {
      c.byteOrdered = true;
      warnings.push(...byteKeyWarnings(shape, c, encodings));
    }
    if (theirs && orderingOf(theirs) === order) continue;
    const equivalent = dst.all
      .filter((x) => orderingOf(x) === order)
      .sort((a, b) => Number(b.oid === DEFAULT_COLLATION) - Number(a.oid === DEFAULT_COLLATION) || Number(b.builtin) - Number(a.builtin) || a.name.localeCompare(b.name))[0];
    const column = `${label}.${quoteIdent(c.to)}`;
    const theirText = theirs ? describe(theirs) : 'an unknown collation';
    if (!equivalent) {
      const fix = order === 'bytes' ? `${c.targetType} COLLATE "C"` : `${c.targetType} COLLATE <a collation made by CREATE COLLATION ... (provider = ${providerName(ours.provider)}, locale = '${ours.locale}')>`;
      throw new Error(
        `cannot verify ${shape.label}: key column ${quoteIdent(c.from)} is ordered by ${describe(ours)} at the source, ${column} by ${theirText} at the target, ` +
          "which has no collation ordering as the source's: key ranges cannot be compared alike on both sides. " +
          `Declare the target key column with a collation that orders as the source's: ALTER TABLE ${label} ALTER COLUMN ${quoteIdent(c.to)} TYPE ${fix}`,
      );
    }
    c.targetCollation = equivalent.name;
    warnings.push(
      `${column} is ordered by ${theirText} at the target, ${describe(ours)} at the source: its key is read COLLATE ${equivalent.name}, ` +
        `which the column's own index cannot serve: without an index on (${quoteIdent(c.to)} COLLATE ${equivalent.name}) every range scans the target table ` +
        `(CREATE INDEX ON ${label} (${quoteIdent(c.to)} COLLATE ${equivalent.name}), or declare the column COLLATE ${equivalent.name} at the target)`,
    );
  }
  return warnings;
}

/**
 * Why a key ordered by a libc locale cannot be verified against a server of another encoding,
 * and the fix: a libc collation orders the bytes of its own encoding (en_US.cp1252 and
 * en_US.utf8 are two collations), and a database offers only those of its encoding, so no
 * target collation is known to order as the source's; a collation of its own cannot be made
 * either. "C" (byte order, compared as UTF-8 where it must be: key-encoding.ts) or ICU (one
 * order in every encoding) can.
 */
function libcAcrossEncodings(shape: VerifyShape, c: VerifyColumn, ours: Collation, theirs: Collation | undefined, encodings: SideEncodings): string {
  const source = quoteQualified(shape.source.schema, shape.source.table);
  const target = quoteQualified(shape.target.schema, shape.target.table);
  return (
    `cannot verify ${shape.label}: key column ${quoteIdent(c.from)} is ordered by ${describe(ours)} at the source (encoding ${encodings.source}), ` +
    `${target}.${quoteIdent(c.to)} by ${theirs ? describe(theirs) : 'an unknown collation'} at the target (encoding ${encodings.target}): ` +
    `a libc collation orders text of its database's encoding only, and a target of another encoding has none that is known to order as the source's, ` +
    'so key ranges cannot be compared alike on both sides. Declare the key column with a collation that orders alike in both encodings, on both sides: ' +
    `COLLATE "C" (ALTER TABLE ${source} ALTER COLUMN ${quoteIdent(c.from)} TYPE ${c.type} COLLATE "C" at the source, ` +
    `ALTER TABLE ${target} ALTER COLUMN ${quoteIdent(c.to)} TYPE ${c.targetType} COLLATE "C" at the target), or an ICU collation of the same locale`
  );
}

/**
 * The sides of a byte-ordered key `c` whose encoding's bytes do not order as code points:
 * their key is compared as `convert_to(key, 'UTF8')` (key-encoding.ts), which no index can
 * serve (convert_to is not immutable), so every range scans the table there.
 */
function byteKeyWarnings(shape: VerifyShape, c: VerifyColumn, encodings: SideEncodings): string[] {
  return (['source', 'target'] as const)
    .filter((side) => !codePointOrdered(encodings[side]))
    .map((side) => {
      const t = side === 'source' ? shape.source : shape.target;
      const column = `${quoteQualified(t.schema, t.table)}.${quoteIdent(side === 'source' ? c.from : c.to)}`;
      const other = side === 'source' ? encodings.target : encodings.source;
      return (
        `${column} is ordered by bytes at the ${side}, whose encoding ${encodings[side]} orders characters otherwise than ${other} at the ${side === 'source' ? 'target' : 'source'}: ` +
        `its key is compared as convert_to(${quoteIdent(side === 'source' ? c.from : c.to)}, 'UTF8'), which the column's index cannot serve: every key range scans the ${side} table ` +
        `(a ${side} database in UTF8 or LATIN1, whose bytes order as the characters, would not need it)`
      );
    });
}
