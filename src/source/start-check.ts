import type pg from 'pg';
import { quoteQualified, type TableName } from '../core/sql.js';
import { DDL_HISTORY_FUNCTION, DDL_HISTORY_INDEX, DDL_HISTORY_TABLE, ddlHistoryTriggerName, ddlRewriteTriggerName } from './ddl-history.js';
import { tryLeadershipSql } from './leader-lock.js';
import { publicationInPlace, publishedRelationsSql, publishesPartitionsSql, publishesSql } from './publication.js';
import { PARTITION_SETS_TABLE } from './partition-watch.js';
import { SCHEMA_VERSIONS_TABLE } from './schema-version-store.js';
import { SNAPSHOTS_TABLE } from './snapshot-store.js';
import { stateFactsOf, stateFactsSql, type StateFacts } from './state-facts.js';

/** What capture's start-up asks before it acts (see startCheck). */
export interface StartCheckRequest {
  /** The configured tables; empty: every table of the publication. */
  tables: readonly TableName[];
  publication: string;
  slot: string;
  stateSchema: string;
  /** Try to take the slot's leadership (leader-lock.ts) in the same query. */
  lead: boolean;
}

/** The answer of startCheck. */
export interface StartCheck {
  /** The server's wal_level (requireLogicalReplication). */
  walLevel: string;
  /** server_version_num. */
  serverVersion: number;
  /** ensurePublication would do nothing and refuse nothing. */
  publicationInPlace: boolean;
  /** The tables the publication publishes, in name order (as publicationTables reads them). */
  publicationTables: TableName[];
  /** This session took the slot's leadership; undefined when not asked to. */
  leader: boolean | undefined;
  /** What exists of the bookkeeping in the state schema. */
  state: StateFacts;
}

/**
 * Everything capture checks on the source before it starts, in one query and one round trip:
 * wal_level and the server version (prerequisites.ts), what ensurePublication would find
 * (publication.ts), the slot's leadership (leader-lock.ts, when `lead`) and what exists of
 * the bookkeeping (state-facts.ts). It only reads (and takes the session's leadership lock,
 * released when the connection ends if start-up then fails): the callers act, through their
 * usual paths, only on what is missing, so every error and fix message stays theirs.
 *
 * Why: a start used to spend ~25 round trips here, each a wake-up of the backend and of
 * Node, a good part of a short capture's start-up on a busy machine.
 */
export async function startCheck(client: pg.ClientBase, request: StartCheckRequest): Promise<StartCheck> {
  const { rows } = await client.query<{
    wal_level: string;
    server_version: number;
    tables_exist: boolean;
    tables_published: boolean;
    publication: { puballtables?: boolean; pubviaroot?: boolean } | null;
    publishes_partitions: boolean;
    publication_tables: [string, string][];
    leader: boolean | null;
    state_relations: Record<string, string[]>;
    ddl_history_function: string | null;
    ddl_history_trigger: string | null;
    ddl_history_trigger_tags: string[] | null;
    ddl_rewrite_trigger: string | null;
    superuser: boolean;
  }>(
    `WITH configured AS (SELECT to_regclass(u.name) AS rel FROM unnest($1::text[]) AS u(name)),
          published AS MATERIALIZED (${publishedRelationsSql('$2')})
     SELECT current_setting('wal_level') AS wal_level,
            current_setting('server_version_num')::int AS server_version,
            coalesce((SELECT bool_and(rel IS NOT NULL) FROM configured), true) AS tables_exist,
            coalesce((SELECT bool_and(${publishesSql('published', 'configured.rel')}) FROM configured), true) AS tables_published,
            -- As jsonb: pubviaroot is a column on PostgreSQL 13+ only.
            (SELECT to_jsonb(p) FROM pg_catalog.pg_publication p WHERE p.pubname = $2) AS publication,
            ${publishesPartitionsSql('published')} AS publishes_partitions,
            (SELECT coalesce(jsonb_agg(jsonb_build_array(schemaname, tablename) ORDER BY schemaname, tablename), '[]'::jsonb)
               FROM published) AS publication_tables,
            CASE WHEN $4::boolean THEN ${tryLeadershipSql('$3')} END AS leader,
            ${stateFactsSql('$5', '$6::text[]', '$7', '$8', '$9')}`,
    [
      request.tables.map((t) => quoteQualified(t.schema, t.table)),
      request.publication,
      request.slot,
      request.lead,
      request.stateSchema,
      [SNAPSHOTS_TABLE, SCHEMA_VERSIONS_TABLE, DDL_HISTORY_TABLE, DDL_HISTORY_INDEX, PARTITION_SETS_TABLE],
      DDL_HISTORY_FUNCTION,
      ddlHistoryTriggerName(request.stateSchema),
      ddlRewriteTriggerName(request.stateSchema),
    ],
  );
  const row = rows[0];
  if (!row) throw new Error('server returned no start-up check');
  const serverVersion = Number(row.server_version);
  return {
    walLevel: row.wal_level,
    serverVersion,
    publicationInPlace: publicationInPlace(
      { tablesExist: row.tables_exist, tablesPublished: row.tables_published, publication: row.publication, publishesPartitions: row.publishes_partitions, serverVersion },
      request.tables.length,
    ),
    publicationTables: row.publication_tables.map(([schema, table]) => ({ schema, table })),
    leader: row.leader ?? undefined,
    state: stateFactsOf(row),
  };
}
