import { createHash } from 'node:crypto';
import type pg from 'pg';
import { quoteIdent, quoteLiteral, quoteQualified } from '../../core/sql.js';
import { serializedDdl, STATE_DDL_LOCK } from '../../postgres/serialized-ddl.js';
import { bookkeepingTables, SOURCE_COLUMN, VERSION_LSN_COLUMN, VERSION_SEQ_COLUMN } from '../sql/bookkeeping.js';
import type { TargetTable } from './table-meta.js';

/**
 * Conflict tracking records the deletes that the target's own application makes (not
 * syncline's apply) as tombstones of `sink.local_source`, and its truncations as that
 * source's truncations: without them a late write of another side finds no row and no
 * tombstone, and brings a row back that this side deleted (pglogical's update_missing).
 *
 * Triggers on each tracked table do it, in the application's transaction, per statement
 * from transition tables (at most one subtransaction per statement, whatever its rows):
 * AFTER DELETE (every deleted row), AFTER UPDATE (the old keys no new row has: a key changed,
 * as capture publishes a DELETE of the old key), AFTER TRUNCATE. A trigger with transition
 * tables takes no column list, so a BEFORE UPDATE OF the key columns statement trigger marks
 * the statements that name a key column (SET of UPDATE, MERGE, ON CONFLICT DO UPDATE), and
 * the AFTER UPDATE trigger's WHEN skips the others: the usual UPDATE costs the transition
 * tables only. (Rows of one statement cannot be paired old to new: a statement that moves a
 * row onto a key another of its rows leaves records only the keys left empty.)
 *
 * A partitioned table: a statement trigger fires only for the table a statement names, not
 * for the partitions it touches (nor for the table when a statement names a partition), and
 * is not cloned to partitions. So every partition (at every level) gets the statement
 * triggers too; a statement through the partitioned table sees the rows of all partitions in
 * its transition tables, rows an UPDATE moves between partitions included. A partition
 * attached later has none of them until the sink next checks the table: for its rows the
 * partitioned table has row triggers (cloned to every partition, also those attached later)
 * whose WHEN skips the rows of the partitions that have statement triggers (their oids, a
 * constant in the condition). The delete one also records the rows a key-naming statement
 * moves to another partition: PostgreSQL (15, 17) leaves the rows MERGE moves out of its
 * transition tables. A TRUNCATE of a partition is a delete of its rows (read, before they go,
 * through the tracked table), unless the statement truncates an ancestor too: that is a
 * truncation of the whole table (partitions' TRUNCATE triggers fire with the ancestor's, and
 * a transaction-local mark tells them apart).
 *
 * The sink's own transactions set `syncline.applying` (SET LOCAL), which the triggers' WHEN
 * skips. The function, one per table (static SQL: its plans are cached, where a generic
 * function's dynamic SQL is planned again on every statement), is SECURITY DEFINER (the
 * application's role needs no rights on the state schema). It never fails the application's
 * statement for its own sake: an error becomes a WARNING and the write goes unrecorded; but
 * what would have failed the statement without syncline too (a serialization failure or
 * deadlock, a cancel or statement timeout, a lock timeout) fails it.
 *
 * A tombstone stores the deleting transaction's id; its clock is that transaction's commit
 * time, resolved when read (`localClock`) where track_commit_timestamp is on, else the time
 * of the statement's trigger (clock_timestamp(), a lower bound of the commit time). Row keys
 * are built as rowKeyOf builds them (a JSON array of the key columns' text) under the output
 * settings capture uses, so they match the changes' keys.
 */

/** Set (transaction-locally) by every sink transaction: the triggers skip syncline's own writes. */
export const APPLYING_SETTING = 'syncline.applying';

/** The setting's statement, run right after BEGIN. */
export const MARK_APPLYING = `SELECT set_config(${quoteLiteral(APPLYING_SETTING)}, 'on', true)`;

/**
 * Transaction-local: the relations (oids, comma-terminated) whose BEFORE TRUNCATE trigger ran
 * in the TRUNCATE statement under way; cleared by its AFTER TRUNCATE triggers.
 */
const TRUNCATING_SETTING = 'syncline.truncating';

/**
 * Transaction-local, per trigger depth (statements nested in triggers have their own): an
 * UPDATE statement under way names key columns in its SET list (or MERGE's, or ON CONFLICT
 * DO UPDATE's); set by the BEFORE statement trigger, cleared by the AFTER one.
 */
const KEY_UPDATE_SETTING = 'syncline.key_update_';

/** The generic function of earlier versions (dynamic SQL, per row): dropped once no trigger uses it. */
const LEGACY_FUNCTION = 'record_local_writes';

/** Transition tables' names (DELETE's is the earlier versions' name). */
const DELETED = 'syncline_deleted';
const OLD_ROWS = 'syncline_old';
const NEW_ROWS = 'syncline_new';

export interface LocalWritesNames {
  /** The triggers' names (unquoted), per state schema so that two sinks' do not collide. */
  triggers: {
    /** AFTER DELETE, per statement: every table and partition. */
    delete: string;
    /** BEFORE UPDATE OF the key columns, per statement: marks the statement, so that its AFTER UPDATE trigger fires. */
    keyMark: string;
    /** AFTER UPDATE, per statement, of a statement the mark trigger marked: every table and partition. */
    keyChange: string;
    /** AFTER TRUNCATE of the tracked table: its truncation. */
    truncate: string;
    /** BEFORE TRUNCATE of a partitioned table: marks it, so its partitions' triggers record nothing. */
    truncateMark: string;
    /** BEFORE TRUNCATE of a partition: its rows' tombstones, unless an ancestor is being truncated too. */
    truncateRows: string;
    /** AFTER TRUNCATE of a partition: clears the mark. */
    truncateEnd: string;
    /** AFTER DELETE per row of a partitioned table, for partitions without statement triggers. */
    deleteRow: string;
    /** AFTER UPDATE OF the key per row of a partitioned table, likewise. */
    keyChangeRow: string;
  };
}

export function localWritesNames(stateSchema: string): LocalWritesNames {
  const n = (what: string): string => `${stateSchema}_local_${what}`;
  return {
    triggers: {
      delete: n('delete'),
      keyMark: n('key_mark'),
      keyChange: n('key_change'),
      truncate: n('truncate'),
      truncateMark: n('truncate_mark'),
      truncateRows: n('truncate_rows'),
      truncateEnd: n('truncate_end'),
      deleteRow: n('delete_row'),
      keyChangeRow: n('key_change_row'),
    },
  };
}

/** The table's trigger function (quoted, qualified): one per table and state schema, named by a digest of the table's label. */
export function localWritesFunction(stateSchema: string, label: string): string {
  return quoteQualified(stateSchema, `local_writes_${createHash('sha256').update(label).digest('hex').slice(0, 20)}`);
}

/** What the triggers of one table record. */
export interface TrackedTable {
  target: TargetTable;
  stateSchema: string;
  localSource: string;
  /** Key columns in the row key's order. */
  keyColumns: readonly string[];
  /** Delta counter columns the table has. */
  counters: readonly string[];
}

/**
 * SQL of a tombstone insert of the rows `from` (alias `o`) that `where` keeps, or (`from`
 * undefined) of the trigger's OLD row: the statement up to its WHERE clause, and from there.
 */
function tombstoneInsert(t: TrackedTable, from: string | undefined, where = ''): { head: string; tail: string } {
  const { sourceTombstones } = bookkeepingTables((name) => quoteQualified(t.stateSchema, name));
  const row = from === undefined ? 'OLD' : 'o';
  const col = (name: string): string => `${row}.${quoteIdent(name)}`;
  const counters = t.counters.length === 0 ? 'NULL::jsonb' : `jsonb_build_object(${t.counters.map((c) => `${quoteLiteral(c)}, ${col(c)}::text`).join(', ')})`;
  // The version syncline last wrote to the deleted row (of which source) is kept: that
  // source's changes up to it were applied, and are settled if republished (decidedBefore).
  const kept = (name: string): string => `${name} = CASE WHEN EXCLUDED.replaced_source IS NULL THEN tb.${name} ELSE EXCLUDED.${name} END`;
  const head = `INSERT INTO ${sourceTombstones} AS tb (table_name, row_key, source, lsn, seq, clock, xid, counters, replaced_source, replaced_lsn, replaced_seq)
        SELECT ${quoteLiteral(t.target.label)}, to_json(ARRAY[${t.keyColumns.map((k) => `${col(k)}::text`).join(', ')}])::text, ${quoteLiteral(t.localSource)},
               '0/0', 0, clock_timestamp(), pg_current_xact_id()::text::bigint, ${counters},
               ${col(SOURCE_COLUMN)}, ${col(VERSION_LSN_COLUMN)}, ${col(VERSION_SEQ_COLUMN)}${from === undefined ? '' : `
          FROM ${from} o`}`;
  const tail = `
        ON CONFLICT (table_name, row_key, source) DO UPDATE
          SET lsn = EXCLUDED.lsn, seq = EXCLUDED.seq, clock = EXCLUDED.clock, xid = EXCLUDED.xid, counters = EXCLUDED.counters, deleted_at = now(),
              ${['replaced_source', 'replaced_lsn', 'replaced_seq'].map(kept).join(', ')}`;
  return { head: head + where, tail };
}

/** The statement as one text. */
const whole = (s: { head: string; tail: string }): string => s.head + s.tail;

/** The body of a table's trigger function (see the triggers in `triggerSpecs`). */
function functionBody(t: TrackedTable): string {
  const { sourceTruncations } = bookkeepingTables((name) => quoteQualified(t.stateSchema, name));
  const { triggers } = localWritesNames(t.stateSchema);
  const truncating = quoteLiteral(TRUNCATING_SETTING);
  // An old key no new row has (compared as the row keys compare: as text).
  const gone = ` WHERE NOT EXISTS (SELECT 1 FROM ${NEW_ROWS} n WHERE ${t.keyColumns.map((k) => `n.${quoteIdent(k)}::text = o.${quoteIdent(k)}::text`).join(' AND ')})`;
  // A partition's rows, read through the tracked table (whose privileges the sink has) with
  // the partition's constraint (so only that partition is scanned). Dynamic: the constraint is the partition's.
  const partitionRows = tombstoneInsert(t, t.target.qualified, ' WHERE ');
  return `
#variable_conflict use_column
DECLARE
  syncline_marked text;
BEGIN
  IF TG_OP = 'UPDATE' AND TG_LEVEL = 'STATEMENT' THEN
    -- The statement's own depth (the trigger's call is one deeper).
    PERFORM set_config(${quoteLiteral(KEY_UPDATE_SETTING)} || (pg_trigger_depth() - 1)::text, CASE WHEN TG_WHEN = 'BEFORE' THEN 'on' ELSE '' END, true);
    IF TG_WHEN = 'BEFORE' THEN
      RETURN NULL;
    END IF;
  END IF;
  IF TG_OP = 'TRUNCATE' THEN
    syncline_marked := coalesce(current_setting(${truncating}, true), '');
    IF TG_WHEN = 'BEFORE' THEN
      PERFORM set_config(${truncating}, syncline_marked || TG_RELID::text || ',', true);
      -- The partitioned table, or an ancestor, is being truncated in this statement: that is recorded as its truncation.
      IF TG_NAME = ${quoteLiteral(triggers.truncateMark)} OR EXISTS (
           SELECT 1 FROM pg_partition_ancestors(TG_RELID) a WHERE a.relid <> TG_RELID AND a.relid::oid::text = ANY (string_to_array(syncline_marked, ','))) THEN
        RETURN NULL;
      END IF;
    ELSE
      PERFORM set_config(${truncating}, '', true);
      IF TG_NAME <> ${quoteLiteral(triggers.truncate)} THEN
        RETURN NULL;
      END IF;
    END IF;
  END IF;
  BEGIN
    IF TG_OP = 'TRUNCATE' AND TG_WHEN = 'AFTER' THEN
      INSERT INTO ${sourceTruncations} AS tr (table_name, source, lsn, seq, clock, xid)
        VALUES (${quoteLiteral(t.target.label)}, ${quoteLiteral(t.localSource)}, '0/0', 0, clock_timestamp(), pg_current_xact_id()::text::bigint)
      ON CONFLICT (table_name, source) DO UPDATE SET clock = EXCLUDED.clock, xid = EXCLUDED.xid;
    ELSIF TG_OP = 'TRUNCATE' THEN
      EXECUTE ${quoteLiteral(partitionRows.head)} || pg_get_partition_constraintdef(TG_RELID) || ${quoteLiteral(partitionRows.tail)};
    ELSIF TG_LEVEL = 'ROW' THEN
      ${whole(tombstoneInsert(t, undefined))};
    ELSIF TG_OP = 'DELETE' THEN
      ${whole(tombstoneInsert(t, DELETED))};
    ELSE
      ${whole(tombstoneInsert(t, OLD_ROWS, gone))};
    END IF;
  EXCEPTION
    -- What fails the statement without syncline too fails it: the application retries (a
    -- serialization failure or deadlock), or asked to stop waiting (cancel, statement or lock timeout).
    WHEN transaction_rollback OR query_canceled OR lock_not_available THEN
      RAISE;
    WHEN OTHERS THEN
      RAISE WARNING 'syncline: the % of %.% was not recorded for conflict tracking: %', lower(TG_OP), TG_TABLE_SCHEMA, TG_TABLE_NAME, SQLERRM;
  END;
  RETURN NULL;
END`;
}

/** A dollar-quote tag that the body does not contain. */
function dollarQuote(body: string): string {
  let tag = '$syncline$';
  for (let i = 0; body.includes(tag); i++) tag = `$syncline${i}$`;
  return `${tag}${body}${tag}`;
}

/**
 * SQL for the clock of a tombstone or truncation row `alias` (a `clock` and an `xid` column):
 * for one the application made (xid set), its transaction's commit time when the server
 * tracks commit timestamps and the xid is within reach (newer than 2^31 transactions ago,
 * where a 32-bit xid is unambiguous), else the time it recorded.
 */
export function localClock(alias: string, commitTimestamps: boolean): string {
  if (!commitTimestamps) return `${alias}.clock`;
  return `CASE WHEN ${alias}.xid IS NOT NULL AND ${alias}.xid > pg_snapshot_xmax(pg_current_snapshot())::text::bigint - 2000000000
               THEN coalesce(pg_xact_commit_timestamp((${alias}.xid % 4294967296)::text::xid), ${alias}.clock)
               ELSE ${alias}.clock END`;
}

/** pg_trigger.tgtype bits. */
const ROW = 1;
const BEFORE = 2;
const DELETE = 8;
const UPDATE = 16;
const TRUNCATE = 32;

/** A trigger the sink wants on a relation. */
interface TriggerSpec {
  name: string;
  /** pg_trigger.tgtype. */
  type: number;
  oldTable: string | null;
  newTable: string | null;
  /** Texts its definition (pg_get_triggerdef) has: what sets its WHEN apart from earlier versions'. */
  markers: string[];
  sql: string;
}

/** Where the triggers go: the tracked table and, when partitioned, every partition below it. */
interface Relation {
  /** As text: an oid may not fit an int4. */
  oid: string;
  qualified: string;
  /** relkind 'p'. */
  partitioned: boolean;
  /** A partition of the tracked table (at any level). */
  partition: boolean;
}

const NOT_APPLYING = `coalesce(current_setting(${quoteLiteral(APPLYING_SETTING)}, true), '') <> 'on'`;

/**
 * The triggers of `rel`: `covered`, for a partitioned tracked table, the oids of the leaf
 * partitions whose own statement triggers record their writes (its row triggers skip them).
 */
function triggerSpecs(t: TrackedTable, rel: Relation, covered: readonly string[]): TriggerSpec[] {
  const { triggers } = localWritesNames(t.stateSchema);
  const fn = localWritesFunction(t.stateSchema, t.target.label);
  const args = expectedArgs(t).map(quoteLiteral).join(', ');
  const on = rel.qualified;
  const exec = `EXECUTE FUNCTION ${fn}(${args})`;
  const keys = t.keyColumns.map(quoteIdent);
  const statement = (name: string, type: number, timing: string, oldTable: string | null, newTable: string | null, when = NOT_APPLYING, marker = APPLYING_SETTING): TriggerSpec => ({
    name,
    type,
    oldTable,
    newTable,
    markers: [marker],
    sql: `CREATE TRIGGER ${quoteIdent(name)} ${timing} ON ${on}${oldTable || newTable ? ` REFERENCING${oldTable ? ` OLD TABLE AS ${oldTable}` : ''}${newTable ? ` NEW TABLE AS ${newTable}` : ''}` : ''}
       FOR EACH STATEMENT WHEN (${when}) ${exec}`,
  });
  // An UPDATE that names no key column (the usual one) costs the transition tables only: the
  // AFTER trigger's WHEN is false unless the BEFORE one (UPDATE OF the key) marked the statement.
  const marked = `coalesce(current_setting(${quoteLiteral(KEY_UPDATE_SETTING)} || pg_trigger_depth()::text, true), '') = 'on'`;
  const specs = [
    statement(triggers.delete, DELETE, 'AFTER DELETE', DELETED, null),
    statement(triggers.keyMark, BEFORE | UPDATE, `BEFORE UPDATE OF ${keys.join(', ')}`, null, null),
    statement(triggers.keyChange, UPDATE, 'AFTER UPDATE', OLD_ROWS, NEW_ROWS, marked, KEY_UPDATE_SETTING),
  ];
  if (rel.partition) {
    specs.push(statement(triggers.truncateRows, BEFORE | TRUNCATE, 'BEFORE TRUNCATE', null, null), statement(triggers.truncateEnd, TRUNCATE, 'AFTER TRUNCATE', null, null));
    return specs;
  }
  specs.push(statement(triggers.truncate, TRUNCATE, 'AFTER TRUNCATE', null, null));
  if (!rel.partitioned) return specs;
  specs.push(statement(triggers.truncateMark, BEFORE | TRUNCATE, 'BEFORE TRUNCATE', null, null));
  // The row triggers, for the partitions without statement triggers (attached since the sink last
  // looked); the delete one also for a row that an UPDATE or MERGE naming the key moves to
  // another partition (a DELETE from its partition, which fires row triggers only): PostgreSQL
  // (15, 17) leaves the rows MERGE moves out of its UPDATE transition tables, and no trigger can
  // tell MERGE from UPDATE (so an UPDATE's moved rows are recorded twice, to the same tombstone).
  const skip = `'{${covered.join(',')}}'::oid[]`;
  const uncovered = `OLD.tableoid <> ALL (${skip})`;
  specs.push(
    {
      name: triggers.deleteRow,
      type: ROW | DELETE,
      oldTable: null,
      newTable: null,
      markers: [APPLYING_SETTING, skip, KEY_UPDATE_SETTING],
      sql: `CREATE TRIGGER ${quoteIdent(triggers.deleteRow)} AFTER DELETE ON ${on} FOR EACH ROW WHEN (${NOT_APPLYING} AND (${uncovered} OR ${marked})) ${exec}`,
    },
    {
      name: triggers.keyChangeRow,
      type: ROW | UPDATE,
      oldTable: null,
      newTable: null,
      markers: [APPLYING_SETTING, skip],
      sql: `CREATE TRIGGER ${quoteIdent(triggers.keyChangeRow)} AFTER UPDATE OF ${keys.join(', ')} ON ${on} FOR EACH ROW
         WHEN (ROW(${keys.map((k) => `OLD.${k}::text`).join(', ')}) IS DISTINCT FROM ROW(${keys.map((k) => `NEW.${k}::text`).join(', ')}) AND ${NOT_APPLYING} AND ${uncovered}) ${exec}`,
    },
  );
  return specs;
}

/** The trigger arguments a table's triggers carry (the function does not read them: they say what it was made for, see keyOrder). */
function expectedArgs(t: TrackedTable): string[] {
  return [t.target.label, t.localSource, String(t.keyColumns.length), ...t.keyColumns, ...t.counters];
}

/** SQLSTATEs that say the sink may not (or cannot) put a trigger on the table: warn, go on without. */
const CANNOT_TRIGGER = new Set(['42501', '42809', '0A000', '42P17']);

/**
 * The key columns' order for the triggers: the one given when a batch told it (the source's,
 * the order of its row keys); else (`keyOrderKnown` false: the target's column order, a guess)
 * the order the installed triggers have, when they name the same columns: a batch told it
 * before the sink restarted, and tombstones in another order would match no change's key.
 */
function keyOrder(t: TrackedTable & { keyOrderKnown: boolean }, installedArgs: Buffer | undefined): readonly string[] {
  if (t.keyOrderKnown || !installedArgs) return t.keyColumns;
  const args = installedArgs.toString('utf8').split('\u0000');
  const installed = args.slice(3, 3 + Number(args[2]));
  const same = installed.length === t.keyColumns.length && installed.every((k) => t.keyColumns.includes(k));
  return same ? installed : t.keyColumns;
}

interface Installed {
  rel: string;
  name: string;
  type: number;
  old_table: string | null;
  new_table: string | null;
  fn: string;
  args: Buffer;
  clone: boolean;
  def: string;
}

/** The sink's triggers (any of its names) on `rels`. */
async function installedTriggers(c: pg.ClientBase, rels: readonly string[], names: readonly string[]): Promise<Installed[]> {
  const { rows } = await c.query<Installed>(
    `SELECT tgrelid::text AS rel, tgname AS name, tgtype::int AS type, tgoldtable::text AS old_table, tgnewtable::text AS new_table,
            tgfoid::regprocedure::text AS fn, tgargs AS args, tgparentid <> 0 AS clone, pg_get_triggerdef(oid) AS def
       FROM pg_trigger WHERE tgrelid = ANY($1::oid[]) AND tgname = ANY($2::text[]) AND NOT tgisinternal`,
    [rels, names],
  );
  return rows;
}

/** The installed trigger is the wanted one. */
function matches(i: Installed, want: TriggerSpec, fn: string, args: string): boolean {
  return (
    !i.clone &&
    i.type === want.type &&
    i.old_table === want.oldTable &&
    i.new_table === want.newTable &&
    i.fn === fn &&
    i.args.toString('utf8') === args &&
    want.markers.every((m) => i.def.includes(m))
  );
}

/**
 * Makes sure a table's triggers (and its partitions') and their function exist as wanted:
 * creates missing ones, replaces ones that differ (a key or counter column changed, an
 * earlier version's), drops ones of the sink's names that do not belong, leaves the rest
 * alone (a restart changes nothing). Returns undefined when done, or the reason and the SQL
 * to run by hand for what the sink may not create (it works on without them).
 */
export async function installTriggers(c: pg.ClientBase, table: TrackedTable & { keyOrderKnown: boolean }): Promise<{ reason: string; sql: string } | undefined> {
  const { triggers } = localWritesNames(table.stateSchema);
  const names = Object.values(triggers);
  const { rows: relRows } = await c.query<{ oid: string; schema: string; name: string; partitioned: boolean; leaf: boolean; root: boolean }>(
    `SELECT r.oid::text AS oid, n.nspname AS schema, r.relname AS name, r.relkind = 'p' AS partitioned, t.isleaf AS leaf, coalesce(t.level, 0) = 0 AS root
       FROM pg_class r JOIN pg_namespace n ON n.oid = r.relnamespace
       LEFT JOIN pg_partition_tree(to_regclass($1)) t ON t.relid = r.oid
      WHERE r.oid = to_regclass($1) OR t.level > 0
      ORDER BY coalesce(t.level, 0), r.oid`,
    [table.target.qualified],
  );
  const rootRow = relRows.find((r) => r.root);
  // The partitions of a partitioned table, at every level (pg_partition_tree has no row for a table that is not partitioned).
  const rels: Relation[] = relRows.map((r) => ({ oid: r.oid, qualified: r.root ? table.target.qualified : quoteQualified(r.schema, r.name), partitioned: r.partitioned, partition: !r.root }));
  const leaves = relRows.filter((r) => !r.root && r.leaf).map((r) => r.oid);
  if (!rootRow) return undefined;
  let installed = await installedTriggers(c, rels.map((r) => r.oid), names);
  const t: TrackedTable = { ...table, keyColumns: keyOrder(table, installed.find((i) => i.rel === rootRow.oid && i.name === triggers.delete)?.args) };
  const fn = localWritesFunction(t.stateSchema, t.target.label);
  const args = `${expectedArgs(t).join('\u0000')}\u0000`;
  const body = functionBody(t);
  const { rows: fnRows } = await c.query<{ src: string; fn: string }>(`SELECT prosrc AS src, oid::regprocedure::text AS fn FROM pg_proc WHERE oid = to_regprocedure($1)`, [`${fn}()`]);
  const fnText = fnRows[0]?.fn;
  // What is to be done: nothing (the usual restart) when every relation has its triggers as wanted, every leaf covered.
  const pending = (covered: readonly string[]): boolean =>
    rels.some((rel) => {
      const wanted = triggerSpecs(t, rel, covered);
      const mine = installed.filter((i) => i.rel === rel.oid && !i.clone);
      return mine.length !== wanted.length || wanted.some((w) => !mine.some((i) => i.name === w.name && fnText !== undefined && matches(i, w, fnText, args)));
    });
  if (fnRows[0]?.src === body && !pending(leaves)) return undefined;
  const refused: { reason: string; sql: string[] }[] = [];
  /** Runs `statements` in a savepoint; false (noted in `refused`) when the sink may not. */
  const attempt = async (statements: string[]): Promise<boolean> => {
    if (statements.length === 0) return true;
    await c.query('SAVEPOINT syncline_trigger');
    try {
      for (const sql of statements) await c.query(sql);
      await c.query('RELEASE SAVEPOINT syncline_trigger');
      return true;
    } catch (err) {
      const code = (err as { code?: unknown }).code;
      if (typeof code !== 'string' || !CANNOT_TRIGGER.has(code)) throw err;
      await c.query('ROLLBACK TO SAVEPOINT syncline_trigger');
      refused.push({ reason: (err as Error).message, sql: statements });
      return false;
    }
  };
  /** The statements that bring `rel`'s triggers (those `only` names) to `wanted`; [] when they are. */
  const changes = (rel: Relation, wanted: TriggerSpec[], current: string, only: (name: string) => boolean = () => true): string[] => {
    const mine = installed.filter((i) => i.rel === rel.oid && !i.clone && only(i.name));
    const out: string[] = [];
    for (const i of mine) if (!wanted.some((w) => w.name === i.name)) out.push(`DROP TRIGGER ${quoteIdent(i.name)} ON ${rel.qualified}`);
    for (const w of wanted.filter((x) => only(x.name))) {
      const have = mine.find((i) => i.name === w.name);
      if (have && matches(have, w, current, args)) continue;
      out.push(`DROP TRIGGER IF EXISTS ${quoteIdent(w.name)} ON ${rel.qualified}`, w.sql);
    }
    return out;
  };
  await serializedDdl(c, STATE_DDL_LOCK, async () => {
    // CREATE TRIGGER waits for the table's open transactions and queues the application's
    // writes behind it meanwhile: give up soon (the batch is retried) rather than stall them.
    await c.query(`SET LOCAL lock_timeout = '5s'`);
    if (fnRows[0]?.src !== body) {
      // The output settings of capture (replication-stream.ts): the key's text is the change's.
      await c.query(
        `CREATE OR REPLACE FUNCTION ${fn}() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER
           SET search_path = pg_catalog, pg_temp
           SET datestyle = 'ISO' SET intervalstyle = 'postgres' SET extra_float_digits = 3 SET timezone = 'UTC' SET bytea_output = 'hex'
         AS ${dollarQuote(body)}`,
      );
      // SECURITY DEFINER: only the sink's role (and those it grants) may attach it to a table.
      await c.query(`REVOKE ALL ON FUNCTION ${fn}() FROM PUBLIC`);
    }
    const current = (await c.query<{ fn: string }>(`SELECT to_regprocedure($1)::text AS fn`, [`${fn}()`])).rows[0]?.fn ?? '';
    await installAll(current);
    // Earlier versions' generic function, once no trigger uses it (another table's may, until the sink checks that table).
    await dropLegacyFunction(c, t.stateSchema);
  });
  if (refused.length === 0) return undefined;
  return {
    reason: refused.map((r) => r.reason).join('; '),
    sql: [`GRANT EXECUTE ON FUNCTION ${fn}() TO <the table's owner>`, ...refused.flatMap((r) => r.sql)].map((s) => `${s.replace(/\s+/g, ' ')};`).join(' '),
  };

  async function installAll(current: string): Promise<void> {
    const [root, ...partitions] = rels as [Relation, ...Relation[]];
    if (!root.partitioned) {
      await attempt(changes(root, triggerSpecs(t, root, []), current));
      return;
    }
    // The partitioned table's statement triggers first: replacing an earlier version's row
    // triggers of the same names there drops their clones from the partitions.
    const rowTrigger = (name: string): boolean => name === triggers.deleteRow || name === triggers.keyChangeRow;
    const first = changes(root, triggerSpecs(t, root, leaves), current, (name) => !rowTrigger(name));
    if (!(await attempt(first))) {
      // Nothing else either: the SQL to run by hand is all of it.
      const rest = [...partitions.flatMap((rel) => changes(rel, triggerSpecs(t, rel, leaves), current)), ...changes(root, triggerSpecs(t, root, leaves), current, rowTrigger)];
      (refused[0] as { sql: string[] }).sql.push(...rest);
      return;
    }
    installed = await installedTriggers(c, rels.map((r) => r.oid), names);
    const uncovered = new Set<string>();
    for (const rel of partitions) if (!(await attempt(changes(rel, triggerSpecs(t, rel, leaves), current)))) uncovered.add(rel.oid);
    // Its row triggers last: they skip the leaves that now have their own statement triggers.
    if (!(await attempt(changes(root, triggerSpecs(t, root, leaves.filter((l) => !uncovered.has(l))), current, rowTrigger))) && uncovered.size > 0) {
      // The owner runs the partitions' statements too: the row triggers to suggest skip every leaf.
      (refused.at(-1) as { sql: string[] }).sql = changes(root, triggerSpecs(t, root, leaves), current, rowTrigger);
    }
  }
}

async function dropLegacyFunction(c: pg.ClientBase, stateSchema: string): Promise<void> {
  const legacy = quoteQualified(stateSchema, LEGACY_FUNCTION);
  const { rows } = await c.query<{ used: boolean }>(
    `SELECT EXISTS (SELECT 1 FROM pg_trigger WHERE tgfoid = to_regprocedure($1)) AS used WHERE to_regprocedure($1) IS NOT NULL`,
    [`${legacy}()`],
  );
  if (rows[0]?.used !== false) return;
  await c.query('SAVEPOINT syncline_legacy');
  // Another session may attach it meanwhile (an earlier version's sink): then it stays.
  await c.query(`DROP FUNCTION IF EXISTS ${legacy}()`).then(
    () => c.query('RELEASE SAVEPOINT syncline_legacy'),
    () => c.query('ROLLBACK TO SAVEPOINT syncline_legacy'),
  );
}
