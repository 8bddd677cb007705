/**
 * What exists of syncline's own bookkeeping in the source's state schema (snapshot jobs,
 * schema versions, the DDL history), read by the start-up check (start-check.ts) in the same
 * query as everything else capture checks before it starts.
 *
 * Why: creating the bookkeeping is three transactions of `CREATE ... IF NOT EXISTS` under an
 * advisory lock (postgres/serialized-ddl.ts), some twenty round trips and an ACCESS EXCLUSIVE
 * lock (`ALTER TABLE ... ADD COLUMN IF NOT EXISTS`) at every start, while after the first
 * start they find everything in place. Each store decides from these facts whether its DDL
 * would do anything (the same conditions as its `IF NOT EXISTS`) and runs it only then. A
 * capture racing another one that is creating the tables sees them missing (uncommitted) and
 * takes the serialized path, which waits for the other's lock and finds them: as before.
 */
export interface StateFacts {
  /** Relations (tables, indexes) of the state schema among those asked for → their column names. */
  relations: ReadonlyMap<string, ReadonlySet<string>>;
  /** `pg_proc.prosrc` of the DDL history's function (`<state schema>.record_ddl_history()`); null when missing. */
  ddlHistoryFunction: string | null;
  /** `pg_event_trigger.evtenabled` of the DDL history's trigger; null when missing. */
  ddlHistoryTrigger: string | null;
  /** `pg_event_trigger.evttags` of the DDL history's trigger; null when missing. */
  ddlHistoryTriggerTags: readonly string[] | null;
  /** `pg_event_trigger.evtenabled` of the DDL history's table_rewrite trigger (ddlRewriteTriggerName); null when missing. */
  ddlRewriteTrigger: string | null;
  /** The session's role is a superuser (may create the event trigger). */
  superuser: boolean;
}

/** The relation `name` of the state schema exists and has every one of `columns`. */
export function hasRelation(facts: StateFacts, name: string, columns: readonly string[] = []): boolean {
  const have = facts.relations.get(name);
  return have !== undefined && columns.every((c) => have.has(c));
}

/**
 * SQL for the facts, as six columns (state_relations jsonb: name → column names;
 * ddl_history_function, ddl_history_trigger, ddl_history_trigger_tags, ddl_rewrite_trigger, superuser). `schema`, `names` (text[]), `fn` (the
 * DDL history function's name), `trigger` and `rewriteTrigger` are SQL expressions (bind parameters). By name through pg_class and pg_proc, not
 * to_regclass: that raises an error on a schema the role may not use, where the stores'
 * DDL would only fail (and be reported) itself.
 */
export function stateFactsSql(schema: string, names: string, fn: string, trigger: string, rewriteTrigger: string): string {
  return `(SELECT coalesce(jsonb_object_agg(c.relname, (SELECT coalesce(jsonb_agg(a.attname), '[]'::jsonb) FROM pg_catalog.pg_attribute a
              WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped)), '{}'::jsonb)
     FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname = ${schema} AND c.relname = ANY(${names})) AS state_relations,
  (SELECT p.prosrc FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
    WHERE n.nspname = ${schema} AND p.proname = ${fn} AND p.pronargs = 0) AS ddl_history_function,
  (SELECT evtenabled::text FROM pg_catalog.pg_event_trigger WHERE evtname = ${trigger}) AS ddl_history_trigger,
  (SELECT evttags FROM pg_catalog.pg_event_trigger WHERE evtname = ${trigger}) AS ddl_history_trigger_tags,
  (SELECT evtenabled::text FROM pg_catalog.pg_event_trigger WHERE evtname = ${rewriteTrigger}) AS ddl_rewrite_trigger,
  coalesce((SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user), false) AS superuser`;
}

/** The facts from the columns stateFactsSql selected. */
export function stateFactsOf(row: { state_relations: Record<string, string[]>; ddl_history_function: string | null; ddl_history_trigger: string | null; ddl_history_trigger_tags: string[] | null; ddl_rewrite_trigger: string | null; superuser: boolean }): StateFacts {
  return {
    relations: new Map(Object.entries(row.state_relations).map(([name, columns]) => [name, new Set(columns)])),
    ddlHistoryFunction: row.ddl_history_function,
    ddlHistoryTrigger: row.ddl_history_trigger,
    ddlHistoryTriggerTags: row.ddl_history_trigger_tags,
    ddlRewriteTrigger: row.ddl_rewrite_trigger,
    superuser: row.superuser,
  };
}
