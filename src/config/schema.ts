import { z } from 'zod';
import { parseTableName } from '../core/sql.js';
import { parseTableRoutes, tableLabel } from '../core/table-mapping.js';

/**
 * The configuration contract. Sections and keys follow the design's template
 * (shared/examples/sync-pipeline.config.yaml); objects are strict so a misspelt key is
 * reported instead of silently ignored.
 */
const identifier = z.string().min(1).max(63);

const slot = z
  .object({
    name: identifier.regex(/^[a-z0-9_]+$/, 'slot names may contain only lower-case letters, digits and underscores'),
    publication: identifier,
    /** Tables as `name` (schema public) or `schema.name`. Empty: every table of the publication. */
    tables: z.array(z.string().min(1)).default([]),
    create_publication: z.boolean().default(true),
  })
  .strict();

const source = z
  .object({
    /** Logical source name written into every change event; defaults to the first slot's name. */
    name: z.string().min(1).optional(),
    url: z.string().min(1).optional(),
    database: z.string().min(1).optional(),
    logical_replication: z.literal(true, { errorMap: () => ({ message: 'syncline reads a logical replication slot: must be true' }) }).default(true),
    slots: z.array(slot).min(1).max(1, 'one slot per process for now: run one syncline per slot'),
    /** pgoutput protocol version; default: the highest this syncline decodes that the server supports. */
    protocol_version: z.number().int().min(1).max(4).optional(),
    status_interval_ms: z.number().int().positive().default(1000),
    /** initial: when the slot is created, snapshot every published table (while streaming). */
    snapshot: z.enum(['initial', 'never']).default('initial'),
    snapshot_chunk_size: z.number().int().positive().default(10000),
    /**
     * Chunks of one table read at once, each on its own source connection with its own
     * watermarks. Default 1: on a 2-core machine with the source local, capture's own CPU is
     * the limit and 2 was no faster (bench/snapshot.bench.mjs); more helps when reading at the
     * source is the slow part (a remote or busy source, rows that are costly to produce).
     */
    snapshot_parallelism: z.number().int().min(1).default(1),
    /** Schema in the source database for syncline's snapshot bookkeeping. */
    state_schema: identifier.default('syncline'),
    /** Directory for transactions streamed before commit; default: a fresh one in the system temp dir. */
    spill_dir: z.string().min(1).optional(),
    /**
     * Memory the server's decoder may use per transaction before streaming it to syncline
     * (PostgreSQL's logical_decoding_work_mem for this connection, e.g. "64MB").
     */
    logical_decoding_work_mem: z.string().regex(/^\d+\s*(kB|MB|GB)?$/, 'a size such as 64MB or 512kB').optional(),
    /** Heartbeat (pg_logical_emit_message) and slot health check interval. */
    heartbeat_interval_ms: z.number().int().positive().default(10000),
    /**
     * Drop the changes of transactions that carry a replication origin (written by a sink
     * with `sink.origin`, e.g. the other direction of a bidirectional pair): no loops.
     * PostgreSQL 16+ filters at the server (pgoutput `origin 'none'`), 15 in capture.
     */
    skip_origins: z.boolean().default(false),
  })
  .strict();

const stream = z
  .object({
    broker: z.enum(['kafka', 'nats', 'embedded']).default('embedded'),
    topic: z.string().min(1).default('db-changes'),
    partitions: z.number().int().min(1).max(1024).default(6),
    retention_hours: z.number().positive().default(168),
    /**
     * With a typed format: register schemas in the Confluent-compatible registry at
     * `schema_registry_url` (env SYNCLINE_SCHEMA_REGISTRY_URL). Without it (embedded stream
     * only), schemas are kept in `<path>/schemas.jsonl`. With `format: json` there is nothing
     * to register: every event carries its `_schema_version`.
     */
    schema_registry: z.boolean().default(false),
    /** json: today's envelope; avro | json_schema | protobuf: Confluent wire format, one schema per table version. */
    format: z.enum(['json', 'avro', 'json_schema', 'protobuf']).default('json'),
    /** Base of the Confluent-compatible API, e.g. http://host:8081 (Apicurio: http://host:8080/apis/ccompat/v7). */
    schema_registry_url: z.string().url().optional(),
    /** Subjects: topic `<topic>-value`; record `<schema>.<table>-value`; topic_record `<topic>-<schema>.<table>-value` (keys: `-key`). */
    subject_strategy: z.enum(['topic', 'record', 'topic_record']).default('topic_record'),
    /** Set on each subject before its first registration. */
    schema_compatibility: z.enum(['BACKWARD', 'BACKWARD_TRANSITIVE', 'FORWARD', 'FORWARD_TRANSITIVE', 'FULL', 'FULL_TRANSITIVE', 'NONE']).default('BACKWARD'),
    /**
     * Kafka `host:port` list. A string is read as a comma-separated list, as the environment
     * fallback SYNCLINE_STREAM_BROKERS is (`brokers: 127.0.0.1:9092`, `brokers: ${BROKERS}`).
     */
    brokers: z
      .preprocess((v) => (typeof v === 'string' ? v.split(',').map((b) => b.trim()).filter((b) => b !== '') : v), z.array(z.string().regex(/^[^\s:]+:\d+$/, 'expected host:port')).min(1))
      .optional(),
    url: z.string().min(1).optional(),
    path: z.string().min(1).default('./.syncline/stream'),
    /** Capture publishes a batch when it reaches this many changes or `batch_wait_ms` passed. */
    batch_size: z.number().int().positive().default(2000),
    batch_wait_ms: z.number().int().nonnegative().default(5),
    max_in_flight: z.number().int().positive().default(8),
    /**
     * NATS: a record whose every reader dies before getting past it is dead-lettered after
     * it was delivered alone this many times (JetStream's max_deliver, counted by syncline).
     */
    max_deliver: z.number().int().min(1).default(5),
  })
  .strict();

const consumer = z
  .object({
    group_id: z.string().min(1).default('syncline'),
    batch_size: z.number().int().positive().default(2000),
    batch_wait_ms: z.number().int().nonnegative().default(20),
    deduplication: z
      .object({
        backend: z.enum(['sink', 'redis']).default('sink'),
        url: z.string().min(1).optional(),
        ttl_seconds: z.number().int().positive().default(86400),
        key_pattern: z.string().min(1).default('sync:{source}:{table}:{lsn}'),
      })
      .strict()
      .default({}),
    retry: z
      .object({
        max_attempts: z.number().int().min(1).default(5),
        backoff_base_ms: z.number().int().nonnegative().default(1000),
        backoff_max_ms: z.number().int().nonnegative().default(30000),
        jitter: z.boolean().default(true),
        /** How often a held table (its target does not fit its changes) is tried again. */
        held_table_interval_ms: z.number().int().min(100).default(10000),
      })
      .strict()
      .default({}),
  })
  .strict();

const tableRoute = z
  .object({
    target: z.string().min(1).optional(),
    columns: z.record(z.string().min(1), z.string().min(1).max(63)).default({}),
    exclude_columns: z.array(z.string().min(1)).default([]),
  })
  .strict();

const sink = z
  .object({
    type: z.enum(['postgres', 'mysql', 'sqlite', 'redis', 'webhook']).default('postgres'),
    url: z.string().min(1).optional(),
    consistency: z.enum(['eventual', 'transactional']).default('eventual'),
    /**
     * consistency transactional: how long a source transaction that cannot become whole (an
     * undecodable change in the dead-letter queue, a capture without tx_last) holds the line,
     * once a later one is whole and every partition was read to its end, before what it has is
     * applied as it is.
     */
    incomplete_transaction_ms: z.number().int().min(100).default(60_000),
    version_gate: z.boolean().default(true),
    /**
     * How a write of one source to a row another source (or the target itself) wrote last is
     * decided (see README "Many writers"). source_lsn_priority: one writer per entity, no
     * cross-source tracking (today's behaviour).
     */
    conflict_strategy: z.enum(['source_lsn_priority', 'last_write_wins', 'source_priority']).default('source_lsn_priority'),
    /** source_priority: source names, the first wins over all others. */
    source_priority: z.array(z.string().min(1)).min(1).optional(),
    /** last_write_wins: a column the application sets (a timestamp or a hybrid logical clock number) compared instead of the source commit time. */
    lww_column: z.string().min(1).max(63).optional(),
    /** The name of writes made at the target itself (bidirectional: the source name the other direction uses); ties of last_write_wins compare it. */
    local_source: z.string().min(1).optional(),
    /** Counter columns merged by difference on a conflict (new - old of the incoming change added to the stored value), by table. */
    delta_columns: z.record(z.string().min(1), z.array(z.string().min(1)).min(1)).default({}),
    /** postgres sink: the replication origin its writes carry (a source with skip_origins drops them). */
    origin: identifier.optional(),
    /** Single-writer boundaries: source name → the tables (`schema.table` or `table`) it alone may write. */
    writers: z.record(z.string().min(1), z.array(z.string().min(1))).default({}),
    /** hard: delete the row and keep a tombstone; soft: keep the row with `_deleted_at` set. */
    delete_mode: z.enum(['hard', 'soft']).default('hard'),
    /** postgres sink: record changes the version gate rejected, with both versions, in <state_schema>.stale_audit. */
    stale_audit: z.boolean().default(false),
    /** postgres sink: create a missing target table with the source table's columns and primary key. */
    create_tables: z.boolean().default(false),
    /**
     * SQL sinks (postgres, mysql, sqlite) follow the source's table definitions:
     *   none: never; a change that does not fit holds its table (SCHEMA_MISMATCH)
     *   add_columns: columns added at the source are added (nullable), renames are renamed
     *   full: also type widenings, dropped columns (see drop_columns), missing tables created
     * The redis and webhook sinks have no schema and ignore it.
     */
    schema_evolution: z.enum(['none', 'add_columns', 'full']).default('add_columns'),
    /** schema_evolution full: a column dropped at the source is dropped at the target, or kept (made nullable). */
    drop_columns: z.enum(['keep', 'drop']).default('keep'),
    /**
     * postgres sink: an upsert of at least this many rows of one table in a batch is COPYed
     * into a temporary staging table and merged from there (same version gate); 0 turns it off.
     */
    copy_threshold: z.number().int().nonnegative().default(1000),
    /**
     * postgres sink: a batch is split by stream partition into this many lanes, each applied in
     * its own transaction on its own connection, with its partitions' positions (a row's
     * changes share a partition, so they stay in order). A poll then reads up to
     * consumer.batch_size × apply_lanes records. A batch with a TRUNCATE is applied whole.
     * 1 with sink.origin, conflict tracking, sink.tables or transforms; other sinks apply one
     * batch at a time.
     */
    apply_lanes: z.number().int().positive().max(16).default(2),
    /** What a source TRUNCATE does at the target: apply it, ignore it, or park it in the dead-letter queue. */
    truncate: z.enum(['apply', 'ignore', 'dead_letter']).default('apply'),
    /** Schema in the target database for syncline's own tables (positions, tombstones); for redis, the key prefix. */
    state_schema: identifier.default('syncline'),
    /** webhook: true POSTs each batch as a JSON array (header Idempotency-Keys); false POSTs one change per request (header Idempotency-Key). */
    webhook_batch: z.boolean().default(true),
    /**
     * Table routing and column mapping, every sink. Keyed by source table (`schema.table`, or
     * `table` for public.table):
     *   target: the target table (`schema.table`, or `table` in the source's schema); default the source's name
     *   columns: source column → target column renames (key columns included)
     *   exclude_columns: source columns not written to the target (never a key column)
     * Column names are written exactly as in the source (no case folding).
     */
    tables: z
      .record(z.string(), tableRoute)
      .default({})
      .superRefine((tables, ctx) => {
        for (const issue of parseTableRoutes(tables).issues) ctx.addIssue({ code: z.ZodIssueCode.custom, path: issue.path, message: issue.message });
      }),
  })
  .strict();

const deadLetter = z
  .object({
    enabled: z.boolean().default(true),
    /**
     * Where dead letters are kept: `topic` — the stream topic `dead_letter.topic` (Kafka only,
     * compacted, readable by any Kafka client); `table` — `<sink.state_schema>.dead_letter` in
     * a PostgreSQL database (`dead_letter.url`, else a postgres sink's). Default: `topic` on
     * Kafka unless `dead_letter.url` is set, else `table`.
     */
    store: z.enum(['topic', 'table']).optional(),
    topic: z.string().min(1).default('db-changes.dlq'),
    /** PostgreSQL database holding the dead-letter table; defaults to a postgres sink's database. */
    url: z.string().min(1).optional(),
    alert_threshold: z.number().int().nonnegative().default(50),
  })
  .strict();

const monitoring = z
  .object({
    enabled: z.boolean().default(true),
    host: z.string().min(1).default('127.0.0.1'),
    port: z.number().int().min(0).max(65535).default(9464),
    /** Access token for the dashboard's replay and purge (env SYNCLINE_DASHBOARD_TOKEN); unset: actions disabled. */
    dashboard_token: z.string().min(1).optional(),
    metrics: z.array(z.string().regex(/^sync_[a-z0-9_]+$/, 'metric names start with sync_')).default([]),
    alerts: z
      .object({
        lag_critical: z.number().positive().default(30),
        duplicate_rate_warning: z.number().min(0).max(1).default(0.02),
        deadletter_critical: z.number().int().nonnegative().default(100),
      })
      .strict()
      .default({}),
  })
  .strict();

const duration = z.string().regex(/^\d+(\.\d+)?(ms|s|m|h)?$/, 'a duration such as 30s, 10m or 1h');

/** `syncline verify` / `repair`, and continuous verification inside run and apply. */
const verify = z
  .object({
    /** Verify every replicated table this often inside run/apply (unset: only `syncline verify`). */
    interval: duration.optional(),
    /** Rows compared per second at most by continuous verification (the servers' cost bound). */
    max_rows_per_second: z.number().int().positive().default(100000),
    /** Key ranges compared at once, each on its own source and target connection. */
    parallelism: z.number().int().min(1).max(16).default(2),
    /** How long a re-check waits for apply to pass the source position it read at. */
    lag_timeout: duration.default('60s'),
  })
  .strict();

export const configSchema = z
  .object({
    source,
    stream: stream.default({}),
    consumer: consumer.default({}),
    sink: sink.default({}),
    dead_letter: deadLetter.default({}),
    monitoring: monitoring.default({}),
    verify: verify.default({}),
  })
  .strict()
  .superRefine((config, ctx) => {
    const st = config.stream;
    if (st.format !== 'json' && st.broker !== 'embedded' && !st.schema_registry) {
      ctx.addIssue({
        code: z.ZodIssueCode.custom,
        path: ['stream', 'schema_registry'],
        message: `format ${st.format} on ${st.broker} needs a schema registry, so that other consumers can read the records: set stream.schema_registry: true and stream.schema_registry_url (or SYNCLINE_SCHEMA_REGISTRY_URL); only the embedded stream keeps schemas in a local file`,
      });
    }
    if (st.format !== 'json' && st.subject_strategy === 'topic' && st.schema_compatibility !== 'NONE') {
      ctx.addIssue({
        code: z.ZodIssueCode.custom,
        path: ['stream', 'subject_strategy'],
        message: `topic puts every table's schema under one subject (${st.topic}-value), where ${st.schema_compatibility} refuses the second table's schema: use topic_record or record, or set stream.schema_compatibility: NONE`,
      });
    }
    const s = config.sink;
    if (s.origin !== undefined && s.type !== 'postgres') {
      // A replication origin is PostgreSQL's; syncline captures only PostgreSQL, so no other target is the other side of a pair.
      ctx.addIssue({ code: z.ZodIssueCode.custom, path: ['sink', 'origin'], message: `the postgres sink only (this config uses sink.type: ${s.type})` });
    }
    const sqlOnly: [keyof typeof s, boolean][] = [
      ['conflict_strategy', s.conflict_strategy !== 'source_lsn_priority'],
      ['delta_columns', Object.keys(s.delta_columns).length > 0],
    ];
    for (const [key, set] of sqlOnly) {
      if (set && s.type !== 'postgres' && s.type !== 'mysql' && s.type !== 'sqlite') {
        ctx.addIssue({ code: z.ZodIssueCode.custom, path: ['sink', key], message: `the SQL sinks only (postgres, mysql, sqlite): the ${s.type} sink has no rows to read the stored version from (this config uses sink.type: ${s.type})` });
      }
    }
    // A URL of another kind of server than sink.type (a mysql:// URL with the default
    // postgres) passed validation and failed later with the client's confusion ("Received
    // unexpected copyData message from backend"): say which type the URL is for.
    const urlType = targetTypeOfUrl(s.url);
    if (urlType !== undefined && urlType !== s.type) {
      ctx.addIssue({ code: z.ZodIssueCode.custom, path: ['sink', 'url'], message: `a ${urlType} URL, but sink.type is ${s.type}${s.type === 'postgres' ? ' (the default)' : ''}: set sink.type: ${urlType}, or give a ${s.type} URL` });
    }
    const dlqType = targetTypeOfUrl(config.dead_letter.url);
    if (dlqType !== undefined && dlqType !== 'postgres') {
      ctx.addIssue({ code: z.ZodIssueCode.custom, path: ['dead_letter', 'url'], message: `a ${dlqType} URL: the dead-letter table lives in a PostgreSQL database (postgres://...)` });
    }
    if (s.conflict_strategy === 'source_priority' && !s.source_priority) {
      ctx.addIssue({ code: z.ZodIssueCode.custom, path: ['sink', 'source_priority'], message: 'conflict_strategy: source_priority needs the ordered list of source names' });
    }
  })
  .superRefine((config, ctx) => {
    // Routes name source tables: with an explicit table list, each must be on it, and a
    // listed table written under its own name must not be another route's target.
    const listed = config.source.slots[0]?.tables ?? [];
    if (listed.length === 0) return;
    const replicated = new Set<string>();
    for (const t of listed) {
      try {
        replicated.add(tableLabel(parseTableName(t)));
      } catch {
        // Reported where the slot's tables are used.
      }
    }
    const { routes } = parseTableRoutes(config.sink.tables);
    const routed = new Set(routes.map((r) => tableLabel(r.source)));
    for (const r of routes) {
      const key = r.path.slice('sink.tables.'.length);
      const source = tableLabel(r.source);
      if (!replicated.has(source)) {
        ctx.addIssue({ code: z.ZodIssueCode.custom, path: ['sink', 'tables', key], message: `${source} is not replicated: add it to source.slots[0].tables or remove this entry` });
      }
      const target = tableLabel(r.target);
      if (target !== source && replicated.has(target) && !routed.has(target)) {
        ctx.addIssue({ code: z.ZodIssueCode.custom, path: ['sink', 'tables', key, 'target'], message: `${target} is also replicated to itself: route it elsewhere or pick another target` });
      }
    }
  });

export type SynclineConfig = z.infer<typeof configSchema>;

/** URL schemes that name one kind of target; a URL without one (a file path, libpq keywords) says nothing. */
const URL_SCHEMES: Readonly<Record<string, 'postgres' | 'mysql' | 'sqlite' | 'redis' | 'webhook'>> = {
  postgres: 'postgres',
  postgresql: 'postgres',
  mysql: 'mysql',
  sqlite: 'sqlite',
  redis: 'redis',
  rediss: 'redis',
  http: 'webhook',
  https: 'webhook',
};

function targetTypeOfUrl(url: string | undefined): string | undefined {
  const scheme = url === undefined ? undefined : /^([A-Za-z][A-Za-z0-9+.-]*):/.exec(url)?.[1];
  return scheme === undefined ? undefined : URL_SCHEMES[scheme.toLowerCase()];
}
