import { conflictOptionsOf } from '../config/conflict-options.js';
import type { SynclineConfig } from '../config/schema.js';
import { PrerequisiteError } from '../core/errors.js';
import { parseTableName, type TableName } from '../core/sql.js';
import { TableMapping, targetColumnOf } from '../core/table-mapping.js';
import type { ConflictResolver } from '../sink/conflicts/resolve.js';
import { MappedSink } from '../sink/mapped-sink.js';
import { MysqlSink } from '../sink/mysql/mysql-sink.js';
import { PostgresSink } from '../sink/postgres/postgres-sink.js';
import { RedisSink } from '../sink/redis/redis-sink.js';
import type { Sink } from '../sink/sink.js';
import { SqliteSink } from '../sink/sqlite/sqlite-sink.js';
import { WebhookSink } from '../sink/webhook/webhook-sink.js';
import { generatedColumns, targetTableDdl } from '../source/table-definition.js';
import { sourceDefinitions } from './definitions.js';
import { readSourceShapes } from './table-shapes.js';
import { withSource } from './source-connection.js';
import type { Logger } from '../log/logger.js';

/**
 * Opens the configured sink, behind the `sink.tables` routing and column mapping when the
 * config sets them (checked against the source on `prepare`). The only place that names
 * concrete sink adapters.
 */
export function openSink(config: SynclineConfig, custom?: Sink, resolveConflict?: ConflictResolver, log?: Logger): Sink {
  const mapping = TableMapping.fromConfig(config.sink.tables);
  // A library user's own sink replaces sink.type (createPipeline's `sink`).
  const sink = custom ?? openAdapterSink(config, mapping, resolveConflict, log);
  if (mapping.isEmpty) return sink;
  return new MappedSink(sink, mapping, { sourceTables: (tables) => withSource(config, (c) => readSourceShapes(c, tables)) });
}

function openAdapterSink(config: SynclineConfig, mapping: TableMapping, resolveConflict?: ConflictResolver, log?: Logger): Sink {
  const s = config.sink;
  const conflicts = conflictOptionsOf(config, resolveConflict);
  // The SQL sinks follow the source's definitions, read from the source (apply has source.url).
  const evolution = { mode: s.schema_evolution, dropColumns: s.drop_columns, definitions: sourceDefinitions(config, mapping) };
  let generatedLooks: Promise<unknown> = Promise.resolve();
  if (s.consistency === 'transactional' && (s.type === 'redis' || s.type === 'webhook')) {
    throw new PrerequisiteError(
      `sink.consistency: transactional needs a SQL sink (postgres, mysql, sqlite); the ${s.type} sink has no transactions`,
      'use sink.consistency: eventual (per-row order with the version gate)',
    );
  }
  if (!s.url) throw new PrerequisiteError('no sink connection URL', 'set sink.url in the config or the SYNCLINE_SINK_URL environment variable');
  switch (s.type) {
    case 'postgres':
      return new PostgresSink({
        url: s.url,
        stateSchema: s.state_schema,
        deleteMode: s.delete_mode,
        versionGate: s.version_gate,
        staleAudit: s.stale_audit,
        copyThreshold: s.copy_threshold,
        applyLanes: s.apply_lanes,
        ...(s.origin !== undefined ? { origin: s.origin } : {}),
        ...(conflicts ? { conflicts, trackedTables: replicatedTargets(config, mapping) } : {}),
        ...(log ? { warn: (message: string, details: Record<string, unknown>) => log.warn(details, message) } : {}),
        // Only a warning hangs on it: a source that does not answer soon is not waited for.
        // One look at a time: a first batch of hundreds of tables must not open hundreds of
        // connections to the source at once.
        sourceGenerated: (schema: string, table: string) => {
          const route = mapping.routeTo({ schema, table });
          const look = generatedLooks.then(() => withSource(
            config,
            async (c) =>
              (await generatedColumns(c, route?.source ?? { schema, table })).flatMap((g) => {
                const column = route ? targetColumnOf(route, g.column) : g.column;
                return column === undefined ? [] : [{ ...g, column }];
              }),
            10_000,
          ));
          generatedLooks = look.catch(() => undefined);
          return look;
        },
        evolution,
        ...(s.create_tables || s.schema_evolution === 'full'
          ? {
              // Called with the target's name: a routed table is made from its source's definition.
              createTable: (schema: string, table: string) =>
                withSource(config, (c) => {
                  const route = mapping.routeTo({ schema, table });
                  return targetTableDdl(c, route?.source ?? { schema, table }, route);
                }),
            }
          : {}),
      });
    case 'redis':
      // Redis has no schemas: sink.state_schema is the first segment of every key syncline writes.
      return new RedisSink({ url: s.url, prefix: s.state_schema, deleteMode: s.delete_mode, versionGate: s.version_gate });
    case 'webhook':
      return new WebhookSink({ url: s.url, batch: s.webhook_batch });
    case 'mysql':
      // syncline's own tables are `<state_schema>_positions` etc. in the URL's database.
      return new MysqlSink({ url: s.url, stateSchema: s.state_schema, versionGate: s.version_gate, deleteMode: s.delete_mode, evolution, ...(conflicts ? { conflicts } : {}) });
    case 'sqlite':
      return new SqliteSink({ url: s.url, stateSchema: s.state_schema, versionGate: s.version_gate, deleteMode: s.delete_mode, evolution, ...(conflicts ? { conflicts } : {}) });
  }
}

/** The target tables of the replicated tables the config lists (routed by sink.tables); unparsable names are left to the source to report. */
function replicatedTargets(config: SynclineConfig, mapping: TableMapping): TableName[] {
  const out: TableName[] = [];
  for (const name of config.source.slots[0]?.tables ?? []) {
    try {
      const table = parseTableName(name);
      out.push(mapping.routeOf(table)?.target ?? table);
    } catch {
      // Reported by capture, which reads the same list.
    }
  }
  return out;
}
