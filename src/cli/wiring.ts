import { createHash } from 'node:crypto';
import { readdirSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type pg from 'pg';
import { sourceNameOf } from '../config/load.js';
import { deadLetterStoreOf } from '../config/dead-letter-store.js';
import type { SynclineConfig } from '../config/schema.js';
import { systemClock } from '../core/clock.js';
import { PrerequisiteError, errorMessage } from '../core/errors.js';
import { formatLsn } from '../core/lsn.js';
import { parseTableName, type TableName } from '../core/sql.js';
import type { Logger } from '../log/logger.js';
import type { Metrics } from '../metrics/metrics.js';
import { Apply } from '../pipeline/apply.js';
import { WriterBoundaries } from '../pipeline/writer-boundaries.js';
import { replayFrom } from './replay-from.js';
import { Capture } from '../pipeline/capture.js';
import { HEARTBEAT_PREFIX } from '../pipeline/change-builder.js';
import { PostgresSink } from '../sink/postgres/postgres-sink.js';
import { MysqlSink } from '../sink/mysql/mysql-sink.js';
import { SqliteSink } from '../sink/sqlite/sqlite-sink.js';
import { RedisSink } from '../sink/redis/redis-sink.js';
import { WebhookSink } from '../sink/webhook/webhook-sink.js';
import type { Dedup } from '../dedup/dedup.js';
import { RedisDedup } from '../dedup/redis-dedup.js';
import type { Sink } from '../sink/sink.js';
import type { ConflictResolver } from '../sink/conflicts/resolve.js';
import { conflictOptionsOf } from '../config/conflict-options.js';
import { MappedSink } from '../sink/mapped-sink.js';
import { TableMapping } from '../core/table-mapping.js';
import { readSourceShapes } from './table-routes.js';
import type { DeadLetterQueue } from '../dlq/dead-letter-queue.js';
import { PostgresDeadLetterQueue } from '../dlq/postgres-dead-letter-queue.js';
import { TopicDeadLetterQueue } from '../dlq/topic-dead-letter-queue.js';
import { checkLogicalReplication, protocolVersionFor } from '../source/prerequisites.js';
import { acquireCaptureLeadership } from '../source/leader-lock.js';
import { ensurePublication } from '../source/publication.js';
import { OUTPUT_SETTINGS, ReplicationStream } from '../source/replication-stream.js';
import { SnapshotStore } from '../source/snapshot-store.js';
import { SourceRowReader } from '../source/row-reader.js';
import { SchemaVersionStore } from '../source/schema-version-store.js';
import { targetTableDdl } from '../source/table-definition.js';
import { SnapshotRunner } from '../pipeline/snapshot-runner.js';
import { ensureSlot, slotState } from '../source/slot.js';
import { openEmbeddedStream } from '../stream/embedded/embedded-stream.js';
import { openKafkaStream } from '../stream/kafka/kafka-stream.js';
import { openNatsStream } from '../stream/nats/nats-stream.js';
import type { Stream } from '../stream/stream.js';
import pgModule from 'pg';

/** Connection settings for the source: `source.url`, else libpq's PG* variables plus `source.database`. */
export function sourceConnection(config: SynclineConfig): pg.ClientConfig {
  if (config.source.url) return { connectionString: config.source.url };
  return config.source.database ? { database: config.source.database } : {};
}

/** Opens the configured stream. The only place that names concrete stream adapters. */
export async function openStream(config: SynclineConfig, baseDir = process.cwd()): Promise<Stream> {
  const s = config.stream;
  switch (s.broker) {
    case 'embedded':
      return openEmbeddedStream({ path: path.resolve(baseDir, s.path), partitions: s.partitions, retentionHours: s.retention_hours });
    case 'kafka':
      return openKafkaStream({ brokers: s.brokers ?? ['127.0.0.1:9092'], topic: s.topic, partitions: s.partitions, retentionHours: s.retention_hours });
    case 'nats':
      return openNatsStream({ url: s.url ?? 'nats://127.0.0.1:4222', topic: s.topic, partitions: s.partitions, retentionHours: s.retention_hours, maxDeliver: s.max_deliver });
  }
}

/**
 * Opens the configured sink, behind the `sink.tables` routing and column mapping when the
 * config sets them (checked against the source on `prepare`). The only place that names
 * concrete sink adapters.
 */
export function openSink(config: SynclineConfig, custom?: Sink, resolveConflict?: ConflictResolver): Sink {
  const mapping = TableMapping.fromConfig(config.sink.tables);
  // A library user's own sink replaces sink.type (createPipeline's `sink`).
  const sink = custom ?? openAdapterSink(config, mapping, resolveConflict);
  if (mapping.isEmpty) return sink;
  return new MappedSink(sink, mapping, { sourceTables: (tables) => withSource(config, (c) => readSourceShapes(c, tables)) });
}

function openAdapterSink(config: SynclineConfig, mapping: TableMapping, resolveConflict?: ConflictResolver): Sink {
  const s = config.sink;
  const conflicts = conflictOptionsOf(config, resolveConflict);
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
        ...(s.origin !== undefined ? { origin: s.origin } : {}),
        ...(conflicts ? { conflicts } : {}),
        ...(s.create_tables
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
      if (conflicts) throw new PrerequisiteError(`conflict tracking (sink.conflict_strategy, delta_columns, a resolver) is for the postgres sink only, for now`, 'use a postgres sink, or sink.conflict_strategy: source_lsn_priority');
      // syncline's own tables are `<state_schema>_positions` etc. in the URL's database.
      return new MysqlSink({ url: s.url, stateSchema: s.state_schema, versionGate: s.version_gate, deleteMode: s.delete_mode });
    case 'sqlite':
      if (conflicts) throw new PrerequisiteError(`conflict tracking (sink.conflict_strategy, delta_columns, a resolver) is for the postgres sink only, for now`, 'use a postgres sink, or sink.conflict_strategy: source_lsn_priority');
      return new SqliteSink({ url: s.url, stateSchema: s.state_schema, versionGate: s.version_gate, deleteMode: s.delete_mode });
  }
}

/** The dedup backend of `consumer.deduplication`; undefined for `sink` (the sink's version gate). */
export function openDedup(config: SynclineConfig): Dedup | undefined {
  const d = config.consumer.deduplication;
  if (d.backend === 'sink') return undefined;
  return new RedisDedup({ url: d.url ?? 'redis://127.0.0.1:6379', keyPattern: d.key_pattern, ttlSeconds: d.ttl_seconds });
}

/** Runs `fn` on a short-lived connection to the source. */
async function withSource<T>(config: SynclineConfig, fn: (c: pg.Client) => Promise<T>): Promise<T> {
  const c = new pgModule.Client(sourceConnection(config));
  // A dropped connection fails the query in flight; it must not also crash the process.
  c.on('error', () => undefined);
  await c.connect();
  try {
    return await fn(c);
  } finally {
    await c.end().catch(() => undefined);
  }
}

/**
 * Opens the dead-letter queue (`dead_letter.store`): a compacted Kafka topic, or a table in
 * `dead_letter.url` or a postgres sink's database.
 */
export function openDeadLetterQueue(config: SynclineConfig): DeadLetterQueue | undefined {
  const d = config.dead_letter;
  if (!d.enabled) return undefined;
  const s = config.stream;
  if (deadLetterStoreOf(config) === 'topic') {
    if (s.broker !== 'kafka') {
      throw new PrerequisiteError(`dead_letter.store: topic needs stream.broker: kafka (this config uses ${s.broker})`, 'use dead_letter.store: table with dead_letter.url, or a Kafka stream');
    }
    const brokers = s.brokers ?? ['127.0.0.1:9092'];
    return new TopicDeadLetterQueue(() => openKafkaStream({ brokers, topic: d.topic, partitions: 1, compacted: true }), d.topic);
  }
  const url = d.url ?? (config.sink.type === 'postgres' ? config.sink.url : undefined);
  if (!url) {
    throw new PrerequisiteError(
      `the dead-letter queue needs a PostgreSQL database for sink type ${config.sink.type}`,
      'set dead_letter.url (or SYNCLINE_DEAD_LETTER_URL) to a PostgreSQL URL, dead_letter.store: topic on a Kafka stream, or dead_letter.enabled: false to stop on poison changes instead',
    );
  }
  return new PostgresDeadLetterQueue(url, config.sink.state_schema);
}

/**
 * Prepares the source (wal_level, publication, slot) and runs capture until `signal`
 * aborts. Also polls the slot's retained WAL and emits heartbeats so an idle slot advances.
 */
export async function runCapture(
  config: SynclineConfig,
  stream: Stream,
  metrics: Metrics,
  log: Logger,
  signal: AbortSignal,
  /** Called once capture is about to stream: every prerequisite held. */
  onStreaming?: () => void,
  /** Called when another capture leads the slot and this one waits as its standby. */
  onStandby?: () => void,
): Promise<void> {
  const slotConfig = config.source.slots[0];
  if (!slotConfig) throw new PrerequisiteError('no replication slot configured', 'add source.slots[0] with name and publication');
  const conn = sourceConnection(config);
  const admin = new pgModule.Client(conn);
  admin.on('error', (err) => log.warn({ err: errorMessage(err) }, 'source admin connection error'));
  await admin.connect();
  let timer: NodeJS.Timeout | undefined;
  try {
    const { serverVersion } = await checkLogicalReplication(admin);
    const tables = slotConfig.tables.map((t) => parseTableName(t));
    await ensurePublication(admin, slotConfig.publication, tables, slotConfig.create_publication);
    const leader = await acquireCaptureLeadership(admin, slotConfig.name, signal, () => {
      log.info({ slot: slotConfig.name }, 'standby: another capture leads this slot; taking over when it stops');
      onStandby?.();
    });
    if (!leader) return;
    log.info({ slot: slotConfig.name }, 'capture leader for this slot');
    const snapshots = await prepareSnapshots(admin, config, slotConfig.name, log);
    const schemaVersions = await prepareSchemaVersions(admin, config, slotConfig.name, log);
    const slotExisted = (await slotState(admin, slotConfig.name)) !== undefined;
    if (!slotExisted && snapshots && config.source.snapshot === 'initial') {
      // Requested before the slot exists: a crash in between re-requests (skipping tables
      // that already have an unfinished job), never leaves a slot without its snapshot.
      const tablesToSnapshot = tables.length > 0 ? tables : await publicationTables(admin, slotConfig.publication);
      const open = new Set((await snapshots.all()).filter((j) => j.status === 'pending' || j.status === 'running').map((j) => `${j.table.schema}.${j.table.table}`));
      for (const t of tablesToSnapshot) if (!open.has(`${t.schema}.${t.table}`)) await snapshots.request(t);
      log.info({ tables: tablesToSnapshot.map((t) => `${t.schema}.${t.table}`) }, 'initial snapshot requested');
    }
    const ensured = await ensureSlot(admin, slotConfig.name);
    const created = ensured.created;
    let state = ensured.state;
    if (state.active) {
      // After a kill -9 the server may not have noticed the dead walsender yet.
      log.warn({ slot: slotConfig.name }, 'replication slot is in use by another connection; waiting up to 60 s for it to be released');
      const deadline = Date.now() + 60_000;
      while (state.active && Date.now() < deadline && !signal.aborted) {
        await new Promise((r) => setTimeout(r, 250));
        state = (await slotState(admin, slotConfig.name)) ?? state;
      }
      if (state.active) throw new PrerequisiteError(`replication slot ${slotConfig.name} is still in use by another process`, 'stop the other syncline capture using this slot, or use another slot name');
    }
    log.info({ slot: slotConfig.name, created, confirmed: state.confirmedFlush === null ? null : formatLsn(state.confirmedFlush) }, 'replication slot ready');
    const protocolVersion = config.source.protocol_version ?? protocolVersionFor(serverVersion);
    const workMem = config.source.logical_decoding_work_mem;
    const replication = new ReplicationStream({
      connection: workMem ? { ...conn, options: `-c logical_decoding_work_mem=${workMem.replace(/\s+/g, '')}` } : conn,
      slot: slotConfig.name,
      publication: slotConfig.publication,
      protocolVersion,
      messages: true,
      streaming: protocolVersion >= 2,
      // skip_origins: 16+ filters at the server; 15 in capture (the ChangeBuilder) alone.
      ...(config.source.skip_origins && serverVersion >= 160000 ? { origin: 'none' as const } : {}),
    });
    log.info({ protocolVersion, streaming: protocolVersion >= 2 }, 'pgoutput protocol negotiated');
    const producer = await stream.producer();
    const rowReader = new SourceRowReader(conn);
    const capture = new Capture(replication, producer, metrics, log, {
      source: sourceNameOf(config),
      batchSize: config.stream.batch_size,
      batchWaitMs: config.stream.batch_wait_ms,
      maxInFlight: config.stream.max_in_flight,
      statusIntervalMs: config.source.status_interval_ms,
      startLsn: state.confirmedFlush ?? 0n,
      ignoredSchemas: [config.source.state_schema],
      primaryKeys: await primaryKeys(admin),
      schemaVersions,
      spillDir: config.source.spill_dir ?? spillDirFor(conn, slotConfig.name),
      readSourceRow: (schema, table, key, columns, xid) => rowReader.read(schema, table, key, columns, xid),
      skipOrigins: config.source.skip_origins,
    });
    const tick = async (): Promise<void> => {
      try {
        const s = await slotState(admin, slotConfig.name);
        if (s) metrics.slotRetainedWalBytes.set(Number(s.retainedBytes));
        await admin.query('SELECT pg_logical_emit_message(false, $1, $2)', [HEARTBEAT_PREFIX, new Date().toISOString()]);
      } catch (err) {
        log.warn({ err: errorMessage(err) }, 'slot health check or heartbeat failed');
      }
    };
    timer = setInterval(() => void tick(), config.source.heartbeat_interval_ms);
    const newReader = (): pg.Client => {
      const reader = new pgModule.Client(conn);
      reader.on('error', (err) => log.warn({ err: errorMessage(err) }, 'snapshot reader connection error'));
      return reader;
    };
    const readers = Array.from({ length: snapshots ? config.source.snapshot_parallelism : 0 }, newReader);
    const stopSnapshots = new AbortController();
    let snapshotting: Promise<void> = Promise.resolve();
    try {
      if (snapshots) {
        for (const reader of readers) {
          await reader.connect();
          await reader.query(OUTPUT_SETTINGS);
        }
        const connect = async (): Promise<pg.Client> => {
          const reader = newReader();
          await reader.connect();
          await reader.query(OUTPUT_SETTINGS);
          return reader;
        };
        // Before the first change is decoded: the initial snapshot's tables are known now.
        capture.setSnapshotting(await snapshots.unfinishedTables());
        const runner = new SnapshotRunner(readers, snapshots, capture, log, { chunkSize: config.source.snapshot_chunk_size, pollMs: 1000, connect });
        snapshotting = runner.run(stopSnapshots.signal);
      }
      onStreaming?.();
      await capture.run(signal);
    } finally {
      stopSnapshots.abort();
      await snapshotting;
      await Promise.all(readers.map((reader) => reader.end().catch(() => undefined)));
      await rowReader.close();
      await producer.close();
    }
  } finally {
    if (timer) clearInterval(timer);
    await admin.end().catch(() => undefined);
  }
}

/** The source-side snapshot job table, or undefined (with a warning) when it cannot be created. */
async function prepareSnapshots(admin: pg.Client, config: SynclineConfig, slot: string, log: Logger): Promise<SnapshotStore | undefined> {
  const store = new SnapshotStore(admin, config.source.state_schema, slot);
  try {
    await store.prepare();
    return store;
  } catch (err) {
    log.warn(
      { err: errorMessage(err), fix: `GRANT CREATE ON DATABASE ... TO the syncline role, or create ${config.source.state_schema}.snapshots beforehand` },
      'snapshots disabled: cannot create the snapshot job table in the source',
    );
    return undefined;
  }
}

/**
 * `_schema_version`s recorded in the source, so they survive restarts; when the table cannot
 * be created, versions are kept in memory only (with a warning) and restart at 1.
 */
async function prepareSchemaVersions(admin: pg.Client, config: SynclineConfig, slot: string, log: Logger): Promise<SchemaVersionStore | undefined> {
  const store = new SchemaVersionStore(admin, config.source.state_schema, slot);
  try {
    await store.prepare();
    await store.load();
    return store;
  } catch (err) {
    log.warn(
      { err: errorMessage(err), fix: `GRANT CREATE ON DATABASE ... TO the syncline role, or create ${config.source.state_schema}.schema_versions beforehand` },
      '_schema_version is not kept across restarts: cannot create the schema version table in the source',
    );
    return undefined;
  }
}

/**
 * Primary keys of every table of the source database (`schema.table` → columns), not only
 * the published ones: a table added to the publication later is known too. A REPLICA
 * IDENTITY FULL table keeps its primary key as its key; one without is keyless.
 */
async function primaryKeys(admin: pg.Client): Promise<Map<string, string[]>> {
  const { rows } = await admin.query<{ t: string; cols: string[] }>(
    `SELECT n.nspname || '.' || c.relname AS t, array_agg(a.attname::text ORDER BY a.attnum) AS cols
       FROM pg_index i
       JOIN pg_class c ON c.oid = i.indrelid
       JOIN pg_namespace n ON n.oid = c.relnamespace
       JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
      WHERE i.indisprimary AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%'
      GROUP BY 1`,
  );
  return new Map(rows.map((r) => [r.t, r.cols]));
}

/**
 * The spill folder of a slot's capture: one per source server, database and slot, reused by
 * the next capture after a kill -9 (a new Capture empties it), so crashes leave nothing
 * behind. Folders of the per-process naming used before are removed once their process is gone.
 */
function spillDirFor(conn: pg.ClientConfig, slot: string): string {
  const identity = createHash('sha256').update(JSON.stringify([conn.connectionString ?? '', conn.host ?? '', conn.port ?? '', conn.database ?? '', slot])).digest('hex').slice(0, 12);
  const prefix = `syncline-spill-${slot.replace(/[^A-Za-z0-9_-]/g, '_')}-`;
  try {
    for (const name of readdirSync(os.tmpdir())) {
      const rest = name.startsWith(prefix) ? name.slice(prefix.length) : '';
      const pid = /^\d{1,7}$/.test(rest) ? Number(rest) : 0;
      if (pid > 0 && !processAlive(pid)) rmSync(path.join(os.tmpdir(), name), { recursive: true, force: true });
    }
  } catch {
    // Cleaning up after older versions is best effort.
  }
  return path.join(os.tmpdir(), `${prefix}${identity}`);
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as { code?: string }).code === 'EPERM';
  }
}

async function publicationTables(admin: pg.Client, publication: string): Promise<TableName[]> {
  const { rows } = await admin.query<{ schemaname: string; tablename: string }>('SELECT schemaname, tablename FROM pg_publication_tables WHERE pubname = $1', [publication]);
  return rows.map((r) => ({ schema: r.schemaname, table: r.tablename }));
}

/** What a library caller puts around apply's sink and dead-letter queue (createPipeline). */
export interface ApplyParts {
  /** The sink apply writes to, replacing openSink(config); apply closes it when it ends. */
  sink?: Sink;
  /** Wraps the dead-letter queue (to observe what is dead-lettered). */
  deadLetters?: (queue: DeadLetterQueue) => DeadLetterQueue;
}

/** Runs apply (stream → sink) until `signal` aborts. */
export async function runApply(config: SynclineConfig, stream: Stream, metrics: Metrics, log: Logger, signal: AbortSignal, from?: string, parts: ApplyParts = {}): Promise<void> {
  const sink = parts.sink ?? openSink(config);
  const queue = openDeadLetterQueue(config);
  const deadLetters = queue && parts.deadLetters ? parts.deadLetters(queue) : queue;
  const dedup = openDedup(config);
  if (!dedup && !parts.sink && config.sink.type === 'webhook') {
    log.warn('webhook sink without a dedup backend: a replayed change is POSTed again; set consumer.deduplication.backend: redis, or have the receiver ignore idempotency keys it has seen');
  }
  try {
    const apply = new Apply((options) => stream.consumer(config.consumer.group_id, options), sink, metrics, log, {
      group: config.consumer.group_id,
      batchSize: config.consumer.batch_size,
      batchWaitMs: Math.max(config.consumer.batch_wait_ms, 1),
      retry: {
        maxAttempts: config.consumer.retry.max_attempts,
        baseMs: config.consumer.retry.backoff_base_ms,
        maxMs: config.consumer.retry.backoff_max_ms,
        jitter: config.consumer.retry.jitter,
      },
      clock: systemClock,
      deadLetters,
      truncate: config.sink.truncate,
      ...(from ? { from: replayFrom(from, stream) } : {}),
      endOffsets: () => stream.endOffsets(),
      dedup,
      transactional: config.sink.consistency === 'transactional',
      heldTableRetryMs: config.consumer.retry.held_table_interval_ms,
      ...(Object.keys(config.sink.writers).length > 0 ? { writers: new WriterBoundaries(config.sink.writers) } : {}),
    });
    await apply.run(signal);
  } finally {
    await dedup?.close();
    await deadLetters?.close();
    await sink.close();
  }
}
