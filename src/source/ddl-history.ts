import type pg from 'pg';
import { createHash } from 'node:crypto';
import { formatLsn, type Lsn } from '../core/lsn.js';
import type { HistoryColumn } from '../core/ddl-history.js';
import { quoteIdent, quoteLiteral, quoteQualified, type TableName } from '../core/sql.js';
import { serializedDdl, STATE_DDL_LOCK } from '../postgres/serialized-ddl.js';
import { hasRelation, type StateFacts } from './state-facts.js';

/**
 * The source's DDL history: `<state_schema>.ddl_history`, one row per table definition with
 * each column's exact attnum, written by an event trigger inside the DDL's own transaction.
 * pgoutput's Relation message carries no attnums, and the catalog read when capture records
 * a definition (schema-version-store.ts) is the catalog of now, not of the definition's LSN:
 * when capture is behind the DDL it names the wrong column. The history is exact at any LSN
 * (see core/ddl-history.ts definitionAt).
 */

/** pg_attribute's columns of relation `rel` (an SQL expression), as HistoryColumn jsonb, attnum order. */
const columnsOf = (rel: string): string => `(SELECT coalesce(jsonb_agg(jsonb_build_object('name', a.attname, 'attnum', a.attnum, 'type_oid', a.atttypid::bigint,
      'typmod', a.atttypmod, 'not_null', a.attnotnull, 'key', coalesce(a.attnum = ANY(i.indkey), false)) ORDER BY a.attnum), '[]'::jsonb)
    FROM pg_catalog.pg_attribute a LEFT JOIN pg_catalog.pg_index i ON i.indrelid = a.attrelid AND i.indisprimary
   WHERE a.attrelid = ${rel} AND a.attnum > 0 AND NOT a.attisdropped)`;

/** The event trigger's name: database-wide, so it names the state schema (hashed when too long). */
export function ddlHistoryTriggerName(stateSchema: string): string {
  const name = `syncline_ddl_history_${stateSchema}`;
  if (Buffer.byteLength(name) <= 63) return name;
  return `syncline_ddl_history_${createHash('sha256').update(stateSchema).digest('hex').slice(0, 16)}`;
}

/** The table_rewrite event trigger's name (REWRITE_TAG), hashed like ddlHistoryTriggerName when too long. */
export function ddlRewriteTriggerName(stateSchema: string): string {
  const name = `syncline_ddl_rewrite_${stateSchema}`;
  if (Buffer.byteLength(name) <= 63) return name;
  return `syncline_ddl_rewrite_${createHash('sha256').update(stateSchema).digest('hex').slice(0, 16)}`;
}

/** The history's relations and function in the state schema (by these names, state-facts.ts finds them). */
export const DDL_HISTORY_TABLE = 'ddl_history';
export const DDL_HISTORY_INDEX = 'ddl_history_table_lsn';
export const DDL_HISTORY_FUNCTION = 'record_ddl_history';
const historyTable = (stateSchema: string): string => quoteQualified(stateSchema, DDL_HISTORY_TABLE);
const functionName = (stateSchema: string): string => quoteQualified(stateSchema, DDL_HISTORY_FUNCTION);

/**
 * The server's command tags (pg_event_trigger_ddl_commands().command_tag) of the commands
 * that create a table: `SELECT ... INTO t` is tagged `SELECT INTO`, not `CREATE TABLE AS`
 * (before it was in the list, such a table had no entry and was snapshotted through a schema
 * publication though its rows are in the slot, red17c). An entry with one of these tags
 * created its table; every other (`ALTER TABLE`, among them `SET SCHEMA`; SEED_TAG) proves only
 * that the table existed then, not that it was created then: SchemaVersionStore.addedByName
 * reads such a table when met through a schema.
 */
export const CREATION_TAGS = ['CREATE TABLE', 'CREATE TABLE AS', 'SELECT INTO'] as const;
/**
 * The `command_tag` of the creation of an UNLOGGED table (a CREATION_TAGS tag of a table not
 * permanent then): not a creation for addedByName. Such a table is not
 * published and its rows are not in the WAL; `ALTER TABLE ... SET LOGGED` publishes it with
 * the rows loaded meanwhile, which only a snapshot reads (before, taken for a table created
 * since in a published schema: 1 row of 11 at the target, red17c).
 */
export const UNLOGGED_CREATION_TAG = 'CREATE UNLOGGED TABLE';
/**
 * The `command_tag` of the creation of a partition (`CREATE TABLE ... PARTITION OF`; a table
 * that is a partition when its CREATION_TAGS command ends), with `partition_root` (the
 * partitioned table at the top of its tree then) and `partition_xmin` (the xmin of its
 * pg_inherits row, its link to its parent, then). Such a partition was empty when it joined
 * the tree (PostgreSQL refuses one whose range holds rows of the default partition): every
 * row it holds came through the slot, so the partition watch does not take it for an
 * attached one while that link is the one made with it (DETACH PARTITION deletes it, ATTACH
 * makes another). Not the pg_class row's xmin: DDL that recurses from the root (`ADD
 * PRIMARY KEY`, as `pgbench -i` runs after creating its partitions) rewrites that row too,
 * and the table was then read once more whenever the watch had not looked in between. A
 * creation for addedByName.
 */
export const PARTITION_CREATION_TAG = 'CREATE TABLE PARTITION OF';
/** The history's tags of entries that created their table (addedByName). */
export const CREATED_TAGS: readonly string[] = [...CREATION_TAGS, PARTITION_CREATION_TAG];
/** The `command_tag` of an entry recordDefinitions wrote (a table's definition at a start, not DDL). */
export const SEED_TAG = 'seed';
/**
 * The event trigger's `WHEN TAG IN` list. A trigger of an older list (without `SELECT INTO`)
 * is dropped and created again by a superuser's start (installDdlHistory).
 */
export const TRIGGER_TAGS: readonly string[] = [...CREATION_TAGS, 'ALTER TABLE'];
/**
 * The `command_tag` of an entry the `table_rewrite` event trigger wrote: the table's rows were
 * rewritten with new values (pg_event_trigger_table_rewrite_reason() has REWRITE_REASONS:
 * `ALTER COLUMN ... TYPE ... USING`, also to the same type or only another modifier; `ADD
 * COLUMN` with a volatile default), which logical decoding does not see. Its `lsn` is taken
 * before the rewrite, under the table's ACCESS EXCLUSIVE lock: every change after it has a
 * greater LSN. SchemaVersionStore queues a snapshot of a published table met after one
 * (rewriteSql). VACUUM FULL and CLUSTER do not fire the event (checked on PostgreSQL 15);
 * `SET LOGGED`/`SET UNLOGGED` (reason 1) and `SET ACCESS METHOD` (8) keep the values and are
 * not recorded.
 */
export const REWRITE_TAG = 'table_rewrite';
/** pg_event_trigger_table_rewrite_reason() bits of a rewrite that changes values: AT_REWRITE_DEFAULT_VAL (2) | AT_REWRITE_COLUMN_REWRITE (4). */
const REWRITE_REASONS = 6;
/** Columns added to the history table after its first version (the table is in place with them). */
const ADDED_COLUMNS = ['command_tag', 'partition_root', 'partition_xmin'];

/** The body of the event trigger's function (compared with pg_proc.prosrc to replace an older one). */
function functionBody(stateSchema: string): string {
  return `
DECLARE
  user_lock_timeout text := current_setting('lock_timeout');
BEGIN
  -- Never make the user's DDL wait on the history table (a capture creating it holds a lock
  -- for a moment): after 1 s the row is skipped. The setting is the user's again afterwards
  -- (and rolled back with this block on any error).
  PERFORM set_config('lock_timeout', '1s', true);
  IF TG_EVENT = 'table_rewrite' THEN
    -- A rewrite with new values (REWRITE_TAG): the definition as it is now (ALTER TABLE's
    -- catalog changes are made before its rewrite), tagged.
    INSERT INTO ${historyTable(stateSchema)} (relid, table_schema, table_name, lsn, columns, command_tag)
    SELECT c.oid, n.nspname, c.relname, pg_current_wal_insert_lsn(), ${columnsOf('c.oid')}, ${quoteLiteral(REWRITE_TAG)}
      FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE c.oid = pg_event_trigger_table_rewrite_oid() AND (pg_event_trigger_table_rewrite_reason() & ${REWRITE_REASONS}) <> 0
       AND c.relkind IN ('r', 'p') AND n.nspname <> ${quoteLiteral(stateSchema)};
  ELSE
    -- command_tag: one per table; a creation's when the command created it (a CREATE TABLE
    -- with a foreign key also reports an ALTER TABLE of the table), see CREATION_TAGS; an
    -- unlogged table's creation is not one (UNLOGGED_CREATION_TAG); a partition's is told
    -- with its root and its pg_inherits row's xmin (PARTITION_CREATION_TAG).
    INSERT INTO ${historyTable(stateSchema)} (relid, table_schema, table_name, lsn, columns, command_tag, partition_root, partition_xmin)
    SELECT c.oid, n.nspname, c.relname, pg_current_wal_insert_lsn(), ${columnsOf('c.oid')}, k.tag,
           CASE WHEN k.tag = ${quoteLiteral(PARTITION_CREATION_TAG)} THEN pg_partition_root(c.oid) END,
           CASE WHEN k.tag = ${quoteLiteral(PARTITION_CREATION_TAG)} THEN (SELECT i.xmin FROM pg_inherits i WHERE i.inhrelid = c.oid) END
      FROM (SELECT d.objid, (array_agg(d.command_tag ORDER BY d.command_tag NOT IN (${CREATION_TAGS.map(quoteLiteral).join(', ')})))[1] AS command_tag
              FROM pg_event_trigger_ddl_commands() d
             WHERE d.classid = 'pg_class'::regclass AND d.object_type IN ('table', 'table column')
             GROUP BY d.objid) d
      JOIN pg_class c ON c.oid = d.objid JOIN pg_namespace n ON n.oid = c.relnamespace
      CROSS JOIN LATERAL (SELECT CASE WHEN d.command_tag NOT IN (${CREATION_TAGS.map(quoteLiteral).join(', ')}) THEN d.command_tag
                                      WHEN c.relpersistence <> 'p' THEN ${quoteLiteral(UNLOGGED_CREATION_TAG)}
                                      WHEN c.relispartition THEN ${quoteLiteral(PARTITION_CREATION_TAG)}
                                      ELSE d.command_tag END AS tag) k
     WHERE c.relkind IN ('r', 'p') AND n.nspname <> ${quoteLiteral(stateSchema)};
  END IF;
  PERFORM set_config('lock_timeout', user_lock_timeout, true);
EXCEPTION WHEN OTHERS THEN
  -- Never make the user's DDL fail (history table dropped, no privilege, anything): the
  -- definition is then recorded from the catalog as without the history.
  NULL;
END
`;
}

/** The statements that create the history (the table, its function, the event trigger); the README prints them. */
export function ddlHistorySql(stateSchema: string): { table: string[]; fn: string; trigger: string; rewriteTrigger: string } {
  const body = functionBody(stateSchema);
  let tag = '$syncline$';
  for (let i = 1; body.includes(tag); i++) tag = `$syncline${i}$`;
  return {
    table: [
      `CREATE SCHEMA IF NOT EXISTS ${quoteIdent(stateSchema)}`,
      `CREATE TABLE IF NOT EXISTS ${historyTable(stateSchema)} (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        relid oid NOT NULL,
        table_schema text NOT NULL,
        table_name text NOT NULL,
        lsn pg_lsn NOT NULL,
        columns jsonb NOT NULL,
        recorded_at timestamptz NOT NULL DEFAULT now(),
        command_tag text,
        partition_root oid,
        partition_xmin xid)`,
      // command_tag was added later (CREATION_TAGS, SEED_TAG): null on rows written before,
      // taken as a creation as they were then (nothing is read again after an upgrade).
      `ALTER TABLE ${historyTable(stateSchema)} ADD COLUMN IF NOT EXISTS command_tag text`,
      // Later still (PARTITION_CREATION_TAG): null on rows written before.
      `ALTER TABLE ${historyTable(stateSchema)} ADD COLUMN IF NOT EXISTS partition_root oid`,
      `ALTER TABLE ${historyTable(stateSchema)} ADD COLUMN IF NOT EXISTS partition_xmin xid`,
      `CREATE INDEX IF NOT EXISTS ${quoteIdent(DDL_HISTORY_INDEX)} ON ${historyTable(stateSchema)} (table_schema, table_name, lsn)`,
    ],
    // SECURITY DEFINER: whoever runs the DDL, the row is written as the history's owner.
    fn: `CREATE OR REPLACE FUNCTION ${functionName(stateSchema)}() RETURNS event_trigger LANGUAGE plpgsql
      SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS ${tag}${body}${tag}`,
    trigger: `CREATE EVENT TRIGGER ${quoteIdent(ddlHistoryTriggerName(stateSchema))} ON ddl_command_end
      WHEN TAG IN (${TRIGGER_TAGS.map(quoteLiteral).join(', ')}) EXECUTE FUNCTION ${functionName(stateSchema)}()`,
    rewriteTrigger: `CREATE EVENT TRIGGER ${quoteIdent(ddlRewriteTriggerName(stateSchema))} ON table_rewrite EXECUTE FUNCTION ${functionName(stateSchema)}()`,
  };
}

/**
 * What installDdlHistory found or made. 'no_rewrite_trigger': the history is written but the
 * table_rewrite trigger (REWRITE_TAG) is missing or disabled: rewrites are not seen.
 */
export type DdlHistoryState = 'active' | 'no_trigger' | 'no_rewrite_trigger';

/**
 * Creates the history table and function (idempotent, under the state DDL lock) and the
 * event trigger when it is missing and the role may (superuser); then records the current
 * definitions of `tables` whose newest history entry differs (a first install, or DDL while
 * the trigger was missing). Resolves 'no_trigger' when the trigger is missing or disabled:
 * the table is kept (a trigger created by hand fills it) but nothing is seeded. Throws when
 * the table or function cannot be created. With `facts` (state-facts.ts) that show every
 * part in place (the function's current body; the trigger, or a role that may not create
 * it), no DDL runs and no transaction is opened: only the recording.
 */
export async function installDdlHistory(client: pg.ClientBase, stateSchema: string, tables: readonly TableName[], facts?: StateFacts): Promise<DdlHistoryState> {
  if (facts && ddlHistoryInPlace(facts, stateSchema)) {
    if (!triggerOn(facts.ddlHistoryTrigger)) return 'no_trigger';
    // Outside the lock: another capture seeding the same table at once may add an identical
    // entry, which definitionAt reads as the one entry (the lock only serialises the DDL).
    await recordDefinitions(client, stateSchema, tables);
    return triggerOn(facts.ddlRewriteTrigger) ? 'active' : 'no_rewrite_trigger';
  }
  const sql = ddlHistorySql(stateSchema);
  return serializedDdl(client, STATE_DDL_LOCK, async () => {
    for (const statement of sql.table) await client.query(statement);
    const { rows: fn } = await client.query<{ src: string | null }>(
      `SELECT (SELECT prosrc FROM pg_proc WHERE oid = to_regprocedure($1)) AS src`,
      [`${functionName(stateSchema)}()`],
    );
    if (fn[0]?.src !== functionBody(stateSchema)) await client.query(sql.fn);
    const { rows } = await client.query<{ enabled: string | null; tags: string[] | null; rewrite: string | null; superuser: boolean }>(
      `SELECT (SELECT evtenabled::text FROM pg_event_trigger WHERE evtname = $1) AS enabled,
              (SELECT evttags FROM pg_event_trigger WHERE evtname = $1) AS tags,
              (SELECT evtenabled::text FROM pg_event_trigger WHERE evtname = $2) AS rewrite,
              (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) AS superuser`,
      [ddlHistoryTriggerName(stateSchema), ddlRewriteTriggerName(stateSchema)],
    );
    let enabled = rows[0]?.enabled ?? null;
    if (rows[0]?.superuser && enabled !== null && !sameTags(rows[0].tags)) {
      // An older list (no SELECT INTO): a trigger's tags cannot be altered, so it is made
      // again in this transaction, keeping how it was enabled.
      await client.query(`DROP EVENT TRIGGER ${quoteIdent(ddlHistoryTriggerName(stateSchema))}`);
      await client.query(sql.trigger);
      const mode = ENABLE_AS[enabled];
      if (mode !== undefined) await client.query(`ALTER EVENT TRIGGER ${quoteIdent(ddlHistoryTriggerName(stateSchema))} ${mode}`);
    }
    if (enabled === null && rows[0]?.superuser) {
      await client.query(sql.trigger);
      enabled = 'O';
    }
    let rewrite = rows[0]?.rewrite ?? null;
    if (rewrite === null && enabled !== null && rows[0]?.superuser) {
      // Added later (REWRITE_TAG): an install of before gets it at a superuser's start,
      // enabled as the history's trigger is.
      await client.query(sql.rewriteTrigger);
      const mode = ENABLE_AS[enabled];
      if (mode !== undefined) await client.query(`ALTER EVENT TRIGGER ${quoteIdent(ddlRewriteTriggerName(stateSchema))} ${mode}`);
      rewrite = enabled;
    }
    if (!triggerOn(enabled)) return 'no_trigger';
    await recordDefinitions(client, stateSchema, tables);
    return triggerOn(rewrite) ? 'active' : 'no_rewrite_trigger';
  });
}

/** installDdlHistory's DDL would change nothing (the same conditions as its IF NOT EXISTS and body comparison). */
function ddlHistoryInPlace(facts: StateFacts, stateSchema: string): boolean {
  return hasRelation(facts, DDL_HISTORY_TABLE, ADDED_COLUMNS) && hasRelation(facts, DDL_HISTORY_INDEX)
    && facts.ddlHistoryFunction === functionBody(stateSchema)
    && (facts.ddlHistoryTrigger === null ? !facts.superuser : !facts.superuser || (sameTags(facts.ddlHistoryTriggerTags) && facts.ddlRewriteTrigger !== null));
}

/** The trigger's tags (`pg_event_trigger.evttags`) are TRIGGER_TAGS, in whatever order. */
function sameTags(tags: readonly string[] | null): boolean {
  return tags !== null && tags.length === TRIGGER_TAGS.length && TRIGGER_TAGS.every((t) => tags.includes(t));
}

/** `ALTER EVENT TRIGGER ...` that gives a trigger created again (enabled 'O') an older one's evtenabled. */
const ENABLE_AS: Partial<Record<string, string>> = { D: 'DISABLE', R: 'ENABLE REPLICA', A: 'ENABLE ALWAYS' };

/** An event trigger's evtenabled that fires (null: no trigger; 'D': disabled). */
const triggerOn = (enabled: string | null): boolean => enabled !== null && enabled !== 'D';

/**
 * Records the current definitions of `tables` whose newest history entry differs, tagged
 * SEED_TAG: such an entry tells when capture saw the table, not when it was created (a table
 * of a schema added to the publication while capture was stopped gets its first entry here).
 */
async function recordDefinitions(client: pg.ClientBase, stateSchema: string, tables: readonly TableName[]): Promise<void> {
  if (tables.length === 0) return;
  const h = historyTable(stateSchema);
  await client.query(
    `INSERT INTO ${h} (relid, table_schema, table_name, lsn, columns, command_tag)
     SELECT c.oid, n.nspname, c.relname, pg_current_wal_insert_lsn(), cols.columns, ${quoteLiteral(SEED_TAG)}
       FROM unnest($1::text[], $2::text[]) AS t(schema_name, table_name)
       JOIN pg_namespace n ON n.nspname = t.schema_name
       JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = t.table_name
       CROSS JOIN LATERAL (SELECT ${columnsOf('c.oid')} AS columns) cols
      WHERE cols.columns IS DISTINCT FROM (SELECT e.columns FROM ${h} e
              WHERE e.table_schema = n.nspname AND e.table_name = c.relname ORDER BY e.lsn DESC, e.id DESC LIMIT 1)`,
    [tables.map((t) => t.schema), tables.map((t) => t.table)],
  );
}

/** How many history entries of a table a definition is looked for in (newest first). */
const ENTRIES_SEARCHED = 50;

/** The history entries of `t` recorded at or before `lsn`, newest first. */
export async function historyBefore(client: pg.ClientBase, stateSchema: string, t: TableName, lsn: Lsn): Promise<HistoryColumn[][]> {
  const { rows } = await client.query<{ columns: HistoryColumn[] }>(
    `SELECT columns FROM ${historyTable(stateSchema)}
      WHERE table_schema = $1 AND table_name = $2 AND lsn <= $3::pg_lsn ORDER BY lsn DESC, id DESC LIMIT ${ENTRIES_SEARCHED}`,
    [t.schema, t.table, formatLsn(lsn)],
  );
  return rows.map((r) => r.columns);
}
