import type pg from 'pg';
import { quoteIdent, quoteLiteral, quoteQualified, type TableName } from '../core/sql.js';
import { serializedDdl, STATE_DDL_LOCK } from '../postgres/serialized-ddl.js';
import { DDL_HISTORY_TABLE, PARTITION_CREATION_TAG } from './ddl-history.js';
import { hasRelation, type StateFacts } from './state-facts.js';

/**
 * The leaf partitions of each published partitioned table, as capture last saw them
 * (`<state_schema>.partition_sets`, per slot), compared with the catalog at every start and
 * heartbeat.
 *
 * Why: `ALTER TABLE t ATTACH PARTITION p` makes p's rows rows of t at the source without a
 * single row change in the WAL (and `DETACH PARTITION` takes them out the same way), so the
 * stream, which carries t's changes (publish_via_partition_root), never brings the attached
 * rows: the target lacked them silently (red team 2: 400 rows of an attached partition
 * missing, 1000 rows of a detached one kept, while every change flowed). A partition that
 * appeared queues a snapshot of the table in the same statement that records the new set
 * (so a crash cannot record one without the other); a partition that went is reported with
 * the command that removes its rows from the target (`syncline repair`: a snapshot re-reads
 * rows, it never deletes them).
 *
 * A partition made by `CREATE TABLE ... PARTITION OF t` (a new month's, as pg_partman or a
 * cron job make them) is empty when it joins t: every row it holds comes through the slot.
 * With the DDL history, such a leaf (its creation entry tagged PARTITION_CREATION_TAG, under
 * t's oid as root, its pg_class row unchanged since) is not attached: before, each new one
 * queued a re-read of the whole table (for a keyless table, a reset under its writers).
 */
export interface PartitionChange {
  table: TableName;
  attached: string[];
  detached: string[];
  /** The snapshot job queued for the attached rows; null: none (not requested, or one is already pending). */
  job: string | null;
}

/** The table of recorded leaf partitions, in the state schema. */
export const PARTITION_SETS_TABLE = 'partition_sets';

export class PartitionWatch {
  private readonly sets: string;
  private readonly jobs: string;
  /** `<state_schema>.ddl_history` when it is in place (SchemaVersionStore.usesDdlHistory). */
  private readonly history: string | undefined;

  constructor(
    private readonly client: pg.ClientBase,
    private readonly schema: string,
    private readonly slot: string,
    ddlHistory = false,
  ) {
    this.sets = quoteQualified(schema, PARTITION_SETS_TABLE);
    this.jobs = quoteQualified(schema, 'snapshots');
    this.history = ddlHistory ? quoteQualified(schema, DDL_HISTORY_TABLE) : undefined;
  }

  /** Creates the table unless the start-up check found it (see state-facts.ts). */
  async prepare(facts?: StateFacts): Promise<void> {
    if (facts && hasRelation(facts, PARTITION_SETS_TABLE, ['root'])) return;
    await serializedDdl(this.client, STATE_DDL_LOCK, async () => {
      await this.client.query(`CREATE SCHEMA IF NOT EXISTS ${quoteIdent(this.schema)}`);
      await this.client.query(`CREATE TABLE IF NOT EXISTS ${this.sets} (
        slot_name text NOT NULL,
        table_schema text NOT NULL,
        table_name text NOT NULL,
        leaves jsonb NOT NULL,
        updated_at timestamptz NOT NULL DEFAULT now(),
        root oid,
        PRIMARY KEY (slot_name, table_schema, table_name))`);
      // Added later: null on sets recorded before, taken for the table's current oid.
      await this.client.query(`ALTER TABLE ${this.sets} ADD COLUMN IF NOT EXISTS root oid`);
    });
  }

  /**
   * Records the current leaf partitions of those of `tables` that are partitioned and returns
   * the tables whose set changed since the last record (none on the first record of a table).
   * `request`: queue a snapshot of a table that gained partitions (unless one is pending).
   * Leaves are told apart by oid, so a partition detached, dropped and made again under its
   * name counts as a new one. A new leaf created as a partition of the table (see above) is
   * recorded but not attached. The table's own oid is recorded too: a table dropped and made
   * again under its name (`pgbench -i --partitions 2` run twice) is another relation, whose
   * leaves are compared with none (before, every old one was reported detached and every
   * new one attached); like every table made again, the old one's rows stay at the target.
   */
  async check(tables: readonly TableName[], request: boolean): Promise<PartitionChange[]> {
    if (tables.length === 0) return [];
    const job = request
      ? `, job AS (
           INSERT INTO ${this.jobs} (slot_name, table_schema, table_name)
           SELECT $1, d.s, d.n FROM diff d
            WHERE jsonb_array_length(d.attached) > 0
              AND NOT EXISTS (SELECT 1 FROM ${this.jobs} j WHERE j.slot_name = $1 AND j.table_schema = d.s AND j.table_name = d.n AND j.status = 'pending')
           RETURNING table_schema AS s, table_name AS n, id::text AS id)`
      : '';
    const { rows } = await this.client.query<{ s: string; n: string; attached: string[]; detached: string[]; job: string | null }>(
      `WITH t AS (SELECT s, n, to_regclass(format('%I.%I', s, n)) AS rel FROM unnest($2::text[], $3::text[]) AS t(s, n)),
       cur AS (
         SELECT t.s, t.n, t.rel::oid AS root, coalesce((SELECT jsonb_agg(jsonb_build_object('oid', p.relid::oid::bigint, 'name', p.relid::regclass::text) ORDER BY p.relid::oid)
                                      FROM pg_catalog.pg_partition_tree(t.rel) p WHERE p.isleaf AND p.relid <> t.rel), '[]'::jsonb) AS leaves
           FROM t JOIN pg_catalog.pg_class c ON c.oid = t.rel WHERE c.relkind = 'p'
            -- The tree is read from the latest catalog, pg_class from this statement's snapshot:
            -- a table dropped meanwhile (pgbench -i) has no tree, not one without leaves (which
            -- reported every old leaf as detached).
            AND EXISTS (SELECT 1 FROM pg_catalog.pg_partition_tree(t.rel) p WHERE p.relid = t.rel)),
       -- leaves: those recorded of the same relation (none of a table made again since).
       prev AS (SELECT ps.table_schema AS s, ps.table_name AS n, ps.root, CASE WHEN ps.root IS NULL OR ps.root = cur.root THEN ps.leaves ELSE '[]'::jsonb END AS leaves
                  FROM ${this.sets} ps JOIN cur ON cur.s = ps.table_schema AND cur.n = ps.table_name WHERE ps.slot_name = $1),
       -- Runs whatever the query reads of it (a data-modifying WITH always completes).
       up AS (
         -- Only sets that changed: an unchanged one is neither written nor locked (a check runs
         -- at every heartbeat).
         INSERT INTO ${this.sets} AS ps (slot_name, table_schema, table_name, leaves, root)
         SELECT $1, cur.s, cur.n, cur.leaves, cur.root FROM cur LEFT JOIN prev ON prev.s = cur.s AND prev.n = cur.n
          WHERE prev.leaves IS DISTINCT FROM cur.leaves OR prev.root IS DISTINCT FROM cur.root
         ON CONFLICT (slot_name, table_schema, table_name) DO UPDATE SET leaves = EXCLUDED.leaves, root = EXCLUDED.root, updated_at = now()
          WHERE ps.leaves IS DISTINCT FROM EXCLUDED.leaves OR ps.root IS DISTINCT FROM EXCLUDED.root),
       diff AS (
         SELECT cur.s, cur.n,
                coalesce((SELECT jsonb_agg(l->'name') FROM jsonb_array_elements(cur.leaves) l
                           WHERE NOT prev.leaves @> jsonb_build_array(jsonb_build_object('oid', l->'oid'))${this.createdHere("(l->>'oid')::oid", 'cur.root')}), '[]'::jsonb) AS attached,
                coalesce((SELECT jsonb_agg(l->'name') FROM jsonb_array_elements(prev.leaves) l
                           WHERE NOT cur.leaves @> jsonb_build_array(jsonb_build_object('oid', l->'oid'))), '[]'::jsonb) AS detached
           FROM cur JOIN prev ON prev.s = cur.s AND prev.n = cur.n
          WHERE prev.leaves IS DISTINCT FROM cur.leaves)${job}
       SELECT d.s, d.n, ARRAY(SELECT jsonb_array_elements_text(d.attached)) AS attached, ARRAY(SELECT jsonb_array_elements_text(d.detached)) AS detached,
              ${request ? '(SELECT j.id FROM job j WHERE j.s = d.s AND j.n = d.n)' : 'NULL::text'} AS job
         FROM diff d`,
      [this.slot, tables.map((t) => t.schema), tables.map((t) => t.table)],
    );
    return rows.map((r) => ({ table: { schema: r.s, table: r.n }, attached: r.attached, detached: r.detached, job: r.job }));
  }

  /**
   * SQL (` AND NOT ...`): leaf `leaf` (an oid expression) was created as a partition of `root`
   * and is that partition still: its pg_inherits row is the one its creation entry saw
   * (DETACH PARTITION deletes it, ATTACH makes another; a creation under a root attached to
   * `root` since names the other root). Each creation entry of the oid may be the leaf's: an
   * entry of an older relation with a reused oid names another row.
   */
  private createdHere(leaf: string, root: string): string {
    if (this.history === undefined) return '';
    return ` AND NOT EXISTS (SELECT 1 FROM ${this.history} h JOIN pg_catalog.pg_inherits li ON li.inhrelid = h.relid
                              WHERE h.relid = ${leaf} AND h.command_tag = ${quoteLiteral(PARTITION_CREATION_TAG)}
                                AND h.partition_root = ${root} AND h.partition_xmin = li.xmin)`;
  }
}
