import type pg from 'pg';
import { quoteIdent, quoteLiteral, quoteQualified } from '../../core/sql.js';
import { serializedDdl, STATE_DDL_LOCK } from '../../postgres/serialized-ddl.js';
import { SOURCE_COLUMN, VERSION_LSN_COLUMN, VERSION_SEQ_COLUMN } from '../sql/bookkeeping.js';
import type { TargetTable } from './table-meta.js';

/**
 * Conflict tracking records the deletes that the target's own application makes (not
 * syncline's apply) as tombstones of `sink.local_source`, and its truncations as that
 * source's truncations: without them a late write of another side finds no row and no
 * tombstone, and brings a row back that this side deleted (pglogical's update_missing).
 *
 * A trigger per tracked table does it, in the application's transaction: AFTER DELETE per
 * statement (its transition table, one insert for all rows), AFTER UPDATE OF the key columns
 * per row when a key changes (the old key is gone, as a delete), AFTER TRUNCATE. On a
 * partitioned table the delete trigger is per row: a statement trigger of the partitioned
 * table does not fire for a DELETE of one of its partitions, nor for an UPDATE that moves a
 * row to another partition (a DELETE there, which fires row triggers only, not AFTER UPDATE),
 * while row triggers are cloned to every partition, also those attached later. The sink's
 * own transactions set `syncline.applying` (SET LOCAL), which the triggers' WHEN skips. The
 * function is SECURITY DEFINER (the application's role needs no rights on the state schema)
 * and swallows its own errors with a WARNING: it never fails the application's statement.
 *
 * A tombstone stores the deleting transaction's id; its clock is that transaction's commit
 * time, resolved when read (`localClock`) where track_commit_timestamp is on, else the time
 * of the delete itself (clock_timestamp(), a lower bound of the commit time). Row keys are
 * built as rowKeyOf builds them (a JSON array of the key columns' text) under the output
 * settings capture uses, so they match the changes' keys.
 */

/** Set (transaction-locally) by every sink transaction: the triggers skip syncline's own writes. */
export const APPLYING_SETTING = 'syncline.applying';

/** The setting's statement, run right after BEGIN. */
export const MARK_APPLYING = `SELECT set_config(${quoteLiteral(APPLYING_SETTING)}, 'on', true)`;

const FUNCTION_NAME = 'record_local_writes';

export interface LocalWritesNames {
  /** The quoted qualified function. */
  fn: string;
  /** The triggers' names (unquoted), per state schema so that two sinks' do not collide. */
  triggers: { delete: string; keyChange: string; truncate: string };
}

export function localWritesNames(stateSchema: string): LocalWritesNames {
  return {
    fn: quoteQualified(stateSchema, FUNCTION_NAME),
    triggers: { delete: `${stateSchema}_local_delete`, keyChange: `${stateSchema}_local_key_change`, truncate: `${stateSchema}_local_truncate` },
  };
}

/**
 * The function's body. Trigger arguments: the table's label, the local source's name, the
 * number of key columns, the key columns (the row key's order), then the delta counter
 * columns (their values are kept with the tombstone, see ../conflicts/incarnations.ts).
 */
function functionBody(tombstones: string, truncations: string): string {
  // The version syncline last wrote to the deleted row (of which source) is kept: that
  // source's changes up to it were applied, and are settled if republished (decidedBefore).
  const kept = (col: string): string => `${col} = CASE WHEN EXCLUDED.replaced_source IS NULL THEN tb.${col} ELSE EXCLUDED.${col} END`;
  const insert =
    `INSERT INTO %s AS tb (table_name, row_key, source, lsn, seq, clock, xid, counters, replaced_source, replaced_lsn, replaced_seq)
       SELECT $1, to_json(ARRAY[%s])::text, $2, '0/0', 0, clock_timestamp(), pg_current_xact_id()::text::bigint, %s,
              o.${quoteIdent(SOURCE_COLUMN)}, o.${quoteIdent(VERSION_LSN_COLUMN)}, o.${quoteIdent(VERSION_SEQ_COLUMN)} FROM %s
     ON CONFLICT (table_name, row_key, source) DO UPDATE
       SET lsn = EXCLUDED.lsn, seq = EXCLUDED.seq, clock = EXCLUDED.clock, xid = EXCLUDED.xid, counters = EXCLUDED.counters, deleted_at = now(),
           ${['replaced_source', 'replaced_lsn', 'replaced_seq'].map(kept).join(', ')}`;
  return `
DECLARE
  nkeys constant int := TG_ARGV[2]::int;
  keys text := '';
  counters text := '';
BEGIN
  IF TG_OP = 'TRUNCATE' THEN
    INSERT INTO ${truncations} AS tr (table_name, source, lsn, seq, clock, xid)
      VALUES (TG_ARGV[0], TG_ARGV[1], '0/0', 0, clock_timestamp(), pg_current_xact_id()::text::bigint)
    ON CONFLICT (table_name, source) DO UPDATE SET clock = EXCLUDED.clock, xid = EXCLUDED.xid;
    RETURN NULL;
  END IF;
  IF TG_LEVEL = 'STATEMENT' THEN
    IF NOT EXISTS (SELECT 1 FROM syncline_deleted) THEN
      RETURN NULL;
    END IF;
  END IF;
  FOR i IN 3 .. 2 + nkeys LOOP
    keys := keys || CASE WHEN i > 3 THEN ', ' ELSE '' END || format('o.%I::text', TG_ARGV[i]);
  END LOOP;
  FOR i IN 3 + nkeys .. TG_NARGS - 1 LOOP
    counters := counters || CASE WHEN i > 3 + nkeys THEN ', ' ELSE '' END || format('%L, o.%I::text', TG_ARGV[i], TG_ARGV[i]);
  END LOOP;
  counters := CASE WHEN counters = '' THEN 'NULL::jsonb' ELSE 'jsonb_build_object(' || counters || ')' END;
  IF TG_LEVEL = 'ROW' THEN
    EXECUTE format(${quoteLiteral(insert)}, ${quoteLiteral(tombstones)}, keys, counters, '(SELECT ($3).*) o') USING TG_ARGV[0], TG_ARGV[1], OLD;
  ELSE
    EXECUTE format(${quoteLiteral(insert)}, ${quoteLiteral(tombstones)}, keys, counters, 'syncline_deleted o') USING TG_ARGV[0], TG_ARGV[1];
  END IF;
  RETURN NULL;
EXCEPTION WHEN OTHERS THEN
  RAISE WARNING 'syncline: the % of %.% was not recorded for conflict tracking: %', lower(TG_OP), TG_TABLE_SCHEMA, TG_TABLE_NAME, SQLERRM;
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
 * Creates (or, when its body differs, replaces) the triggers' function in the state schema.
 * Run inside the state tables' DDL transaction.
 */
export async function createLocalWritesFunction(c: pg.ClientBase, stateSchema: string, tombstones: string, truncations: string): Promise<void> {
  const { fn } = localWritesNames(stateSchema);
  const body = functionBody(tombstones, truncations);
  const { rows } = await c.query<{ src: string }>(`SELECT prosrc AS src FROM pg_proc WHERE oid = to_regprocedure($1)`, [`${fn}()`]);
  if (rows[0]?.src === body) return;
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

/** What the triggers of one table record. */
export interface TrackedTable {
  target: TargetTable;
  stateSchema: string;
  localSource: string;
  /** Key columns in the row key's order. */
  keyColumns: readonly string[];
  /** Delta counter columns the table has. */
  counters: readonly string[];
  /** A partitioned table (relkind p): its delete trigger is per row, see above. */
  partitioned: boolean;
}

/** The CREATE TRIGGER statements of a table, by trigger name, and whether each is per row. */
export function triggerStatements(t: TrackedTable): Map<string, { sql: string; row: boolean }> {
  const { fn, triggers } = localWritesNames(t.stateSchema);
  const args = [t.target.label, t.localSource, String(t.keyColumns.length), ...t.keyColumns, ...t.counters].map(quoteLiteral).join(', ');
  const notApplying = `coalesce(current_setting(${quoteLiteral(APPLYING_SETTING)}, true), '') <> 'on'`;
  const keys = t.keyColumns.map(quoteIdent);
  const table = t.target.qualified;
  const deletes = t.partitioned
    ? { sql: `CREATE TRIGGER ${quoteIdent(triggers.delete)} AFTER DELETE ON ${table} FOR EACH ROW WHEN (${notApplying}) EXECUTE FUNCTION ${fn}(${args})`, row: true }
    : { sql: `CREATE TRIGGER ${quoteIdent(triggers.delete)} AFTER DELETE ON ${table} REFERENCING OLD TABLE AS syncline_deleted FOR EACH STATEMENT WHEN (${notApplying}) EXECUTE FUNCTION ${fn}(${args})`, row: false };
  return new Map([
    [triggers.delete, deletes],
    [
      triggers.keyChange,
      {
        sql: `CREATE TRIGGER ${quoteIdent(triggers.keyChange)} AFTER UPDATE OF ${keys.join(', ')} ON ${table} FOR EACH ROW
         WHEN (ROW(${keys.map((k) => `OLD.${k}`).join(', ')}) IS DISTINCT FROM ROW(${keys.map((k) => `NEW.${k}`).join(', ')}) AND ${notApplying}) EXECUTE FUNCTION ${fn}(${args})`,
        row: true,
      },
    ],
    [triggers.truncate, { sql: `CREATE TRIGGER ${quoteIdent(triggers.truncate)} AFTER TRUNCATE ON ${table} FOR EACH STATEMENT WHEN (${notApplying}) EXECUTE FUNCTION ${fn}(${args})`, row: false }],
  ]);
}

/** The trigger arguments a table's triggers should carry. */
function expectedArgs(t: TrackedTable): string[] {
  return [t.target.label, t.localSource, String(t.keyColumns.length), ...t.keyColumns, ...t.counters];
}

/** SQLSTATEs that say the sink may not (or cannot) put a trigger on the table: warn, go on without. */
const CANNOT_TRIGGER = new Set(['42501', '42809', '0A000', '42P17']);

/**
 * Makes sure a table's triggers exist with the expected arguments: creates missing ones,
 * replaces ones whose arguments differ (a key or counter column changed), leaves the rest
 * alone (a restart changes nothing). Returns undefined when done, or the reason and the SQL
 * to run by hand when the sink may not create them (then it works on without them).
 */
/**
 * The key columns' order for the triggers: the one given when a batch told it (the source's,
 * the order of its row keys); else (`keyOrderKnown` false: the target's column order, a guess)
 * the order the installed triggers have, when they name the same columns: a batch told it
 * before the sink restarted, and tombstones in another order would match no change's key.
 */
function keyOrder(t: Omit<TrackedTable, 'partitioned'> & { keyOrderKnown: boolean }, installedArgs: Buffer | undefined): readonly string[] {
  if (t.keyOrderKnown || !installedArgs) return t.keyColumns;
  const args = installedArgs.toString('utf8').split('\u0000');
  const installed = args.slice(3, 3 + Number(args[2]));
  const same = installed.length === t.keyColumns.length && installed.every((k) => t.keyColumns.includes(k));
  return same ? installed : t.keyColumns;
}

export async function installTriggers(c: pg.ClientBase, table: Omit<TrackedTable, 'partitioned'> & { keyOrderKnown: boolean }): Promise<{ reason: string; sql: string } | undefined> {
  const { rows: kind } = await c.query<{ partitioned: boolean }>(`SELECT relkind = 'p' AS partitioned FROM pg_class WHERE oid = to_regclass($1)`, [table.target.qualified]);
  const { fn, triggers } = localWritesNames(table.stateSchema);
  const { rows } = await c.query<{ name: string; args: Buffer; same_fn: boolean; row: boolean }>(
    `SELECT tgname AS name, tgargs AS args, tgfoid = to_regprocedure($3) AS same_fn, (tgtype & 1) = 1 AS row FROM pg_trigger
      WHERE tgrelid = to_regclass($1) AND tgname = ANY($2::text[]) AND NOT tgisinternal`,
    [table.target.qualified, Object.values(triggers), `${fn}()`],
  );
  const t: TrackedTable = { ...table, keyColumns: keyOrder(table, rows.find((r) => r.name === triggers.delete)?.args), partitioned: kind[0]?.partitioned === true };
  const wanted = triggerStatements(t);
  const args = expectedArgs(t).join('\u0000');
  // tgargs: each argument followed by a NUL byte. tgtype bit 0: per row (a table that became partitioned, an older version's statement trigger).
  const ok = new Set(rows.filter((r) => r.same_fn && r.args.toString('utf8') === `${args}\u0000` && r.row === wanted.get(r.name)?.row).map((r) => r.name));
  const missing = [...wanted].filter(([name]) => !ok.has(name));
  if (missing.length === 0) return undefined;
  const statements = missing.flatMap(([name, create]) => [`DROP TRIGGER IF EXISTS ${quoteIdent(name)} ON ${t.target.qualified}`, create.sql]);
  try {
    await serializedDdl(c, STATE_DDL_LOCK, async () => {
      // CREATE TRIGGER waits for the table's open transactions and queues the application's
      // writes behind it meanwhile: give up soon (the batch is retried) rather than stall them.
      await c.query(`SET LOCAL lock_timeout = '5s'`);
      for (const sql of statements) await c.query(sql);
    });
    return undefined;
  } catch (err) {
    const code = (err as { code?: unknown }).code;
    if (typeof code !== 'string' || !CANNOT_TRIGGER.has(code)) throw err;
    return {
      reason: (err as Error).message,
      sql: [`GRANT EXECUTE ON FUNCTION ${fn}() TO <the table's owner>`, ...statements].map((s) => `${s.replace(/\s+/g, ' ')};`).join(' '),
    };
  }
}
