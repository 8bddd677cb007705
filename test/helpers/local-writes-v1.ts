import type pg from 'pg';

/**
 * The previous version of the postgres sink's triggers that record the target application's
 * deletes (src/sink/postgres/local-writes.ts before per-statement transition tables), as it
 * installed them: one generic function with dynamic SQL, a statement trigger for DELETE (a row
 * trigger on a partitioned table), a row trigger per key change, a statement trigger for
 * TRUNCATE. Two uses in tests: an earlier install to upgrade (`schema` syncline), and a
 * reference the new triggers are compared with (`schema` ref, its own tables, triggers named
 * `ref_local_*`, both recording the same statements side by side).
 */
export interface V1Table {
  /** Quoted, qualified. */
  qualified: string;
  label: string;
  keys: string[];
  counters?: string[];
  partitioned?: boolean;
}

const lit = (s: string): string => `'${s.replace(/'/g, "''")}'`;
const ident = (s: string): string => `"${s.replace(/"/g, '""')}"`;

/** The v1 function in `schema` (writing that schema's source_tombstones and source_truncations). */
export function v1Function(schema: string): string {
  const tombstones = `${ident(schema)}."source_tombstones"`;
  const truncations = `${ident(schema)}."source_truncations"`;
  const insert = (from: string): string =>
    `EXECUTE format('INSERT INTO %s AS tb (table_name, row_key, source, lsn, seq, clock, xid, counters, replaced_source, replaced_lsn, replaced_seq)
       SELECT $1, to_json(ARRAY[%s])::text, $2, ''0/0'', 0, clock_timestamp(), pg_current_xact_id()::text::bigint, %s,
              o."_syncline_source", o."_syncline_lsn", o."_syncline_seq" FROM %s
     ON CONFLICT (table_name, row_key, source) DO UPDATE
       SET lsn = EXCLUDED.lsn, seq = EXCLUDED.seq, clock = EXCLUDED.clock, xid = EXCLUDED.xid, counters = EXCLUDED.counters, deleted_at = now(),
           replaced_source = CASE WHEN EXCLUDED.replaced_source IS NULL THEN tb.replaced_source ELSE EXCLUDED.replaced_source END, replaced_lsn = CASE WHEN EXCLUDED.replaced_source IS NULL THEN tb.replaced_lsn ELSE EXCLUDED.replaced_lsn END, replaced_seq = CASE WHEN EXCLUDED.replaced_source IS NULL THEN tb.replaced_seq ELSE EXCLUDED.replaced_seq END', ${lit(tombstones)}, keys, counters, ${from})`;
  return `CREATE OR REPLACE FUNCTION ${ident(schema)}.record_local_writes() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER
  SET search_path = pg_catalog, pg_temp SET datestyle = 'ISO' SET intervalstyle = 'postgres' SET extra_float_digits = 3 SET timezone = 'UTC' SET bytea_output = 'hex'
AS $fn$
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
    ${insert(`'(SELECT ($3).*) o'`)} USING TG_ARGV[0], TG_ARGV[1], OLD;
  ELSE
    ${insert(`'syncline_deleted o'`)} USING TG_ARGV[0], TG_ARGV[1];
  END IF;
  RETURN NULL;
EXCEPTION WHEN OTHERS THEN
  RAISE WARNING 'syncline: the % of %.% was not recorded for conflict tracking: %', lower(TG_OP), TG_TABLE_SCHEMA, TG_TABLE_NAME, SQLERRM;
  RETURN NULL;
END$fn$`;
}

/** The v1 triggers of `t`, named `<prefix>_local_*`, calling `schema`'s v1 function. */
export function v1Triggers(schema: string, prefix: string, t: V1Table): string[] {
  const fn = `${ident(schema)}.record_local_writes(${[t.label, 'local', String(t.keys.length), ...t.keys, ...(t.counters ?? [])].map(lit).join(', ')})`;
  const applying = `coalesce(current_setting('syncline.applying', true), '') <> 'on'`;
  const keys = t.keys.map(ident);
  return [
    t.partitioned
      ? `CREATE TRIGGER ${ident(`${prefix}_local_delete`)} AFTER DELETE ON ${t.qualified} FOR EACH ROW WHEN (${applying}) EXECUTE FUNCTION ${fn}`
      : `CREATE TRIGGER ${ident(`${prefix}_local_delete`)} AFTER DELETE ON ${t.qualified} REFERENCING OLD TABLE AS syncline_deleted FOR EACH STATEMENT WHEN (${applying}) EXECUTE FUNCTION ${fn}`,
    `CREATE TRIGGER ${ident(`${prefix}_local_key_change`)} AFTER UPDATE OF ${keys.join(', ')} ON ${t.qualified} FOR EACH ROW
       WHEN (ROW(${keys.map((k) => `OLD.${k}`).join(', ')}) IS DISTINCT FROM ROW(${keys.map((k) => `NEW.${k}`).join(', ')}) AND ${applying}) EXECUTE FUNCTION ${fn}`,
    `CREATE TRIGGER ${ident(`${prefix}_local_truncate`)} AFTER TRUNCATE ON ${t.qualified} FOR EACH STATEMENT WHEN (${applying}) EXECUTE FUNCTION ${fn}`,
  ];
}

/** Installs the v1 reference in schema `ref` (its own tombstone and truncation tables) on `tables`. */
export async function installV1Reference(c: pg.ClientBase, tables: V1Table[]): Promise<void> {
  await c.query(`CREATE SCHEMA IF NOT EXISTS ref;
    CREATE TABLE IF NOT EXISTS ref.source_tombstones (LIKE syncline.source_tombstones INCLUDING ALL);
    CREATE TABLE IF NOT EXISTS ref.source_truncations (LIKE syncline.source_truncations INCLUDING ALL)`);
  await c.query(v1Function('ref'));
  for (const t of tables) for (const sql of v1Triggers('ref', 'ref', t)) await c.query(sql);
}

/** The local writer's tombstones recorded in `schema` (syncline: the sink's triggers; ref: v1's), comparable. */
export async function localTombstones(c: pg.ClientBase, schema: string): Promise<string[]> {
  const { rows } = await c.query<{ r: string }>(
    `SELECT r FROM (SELECT concat_ws(' ', table_name, row_key, counters::text, replaced_source, replaced_lsn::text, replaced_seq::text) AS r
       FROM ${ident(schema)}.source_tombstones WHERE xid IS NOT NULL) x ORDER BY r COLLATE "C"`,
  );
  return rows.map((r) => r.r);
}

/** The local writer's truncations recorded in `schema`. */
export async function localTruncations(c: pg.ClientBase, schema: string): Promise<string[]> {
  const { rows } = await c.query<{ r: string }>(`SELECT table_name AS r FROM ${ident(schema)}.source_truncations WHERE xid IS NOT NULL ORDER BY 1`);
  return rows.map((r) => r.r);
}
