/**
 * syncline's public library surface: small on purpose.
 *
 * - `createPipeline` + `loadConfig`: run capture and/or apply in your process, with your own
 *   sink and transforms.
 * - `syncline/transforms`, `syncline/testing`: the transforms and the in-memory fakes and
 *   contract suites (also re-exported here, except the vitest suites).
 */
export type { ChangeEvent, ChangeOp, Row } from './core/change.js';
export { partitionKeyOf, partitionFor, dedupKeyOf, rowKeyOf, tableLabelOf } from './core/change.js';
export { SynclineError, ConfigError, PrerequisiteError, ProtocolError, StructuralError } from './core/errors.js';
export { parseLsn, formatLsn, type Lsn } from './core/lsn.js';
export { parseConfig, loadConfigFile } from './config/load.js';
export type { SynclineConfig } from './config/schema.js';
export { loadConfig, defineConfig, type SynclineConfigInput } from './api/config.js';
export { createPipeline, Pipeline } from './api/create-pipeline.js';
export type { PipelineOptions, PipelineEvents, PipelineState, PipelineStatus } from './api/pipeline-types.js';
export type { Role } from './api/monitoring.js';
export { Metrics } from './metrics/metrics.js';
export type { Logger } from './log/logger.js';
export type { DeadLetter, DeadLetterFilter } from './dlq/dead-letter-queue.js';
export type { ReplayResult } from './dlq/replay.js';
export { PgoutputDecoder } from './pgoutput/decoder.js';
export type { PgoutputMessage } from './pgoutput/messages.js';
export type { Stream, StreamConsumer, StreamProducer, StreamRecord, OutgoingRecord, ConsumerOptions } from './stream/stream.js';
export type { Sink, ApplyOutcome } from './sink/sink.js';
export { builtInResolver, lastWriteWins, type Conflict, type ConflictResolver, type ConflictStrategy, type Resolution, type StoredVersion } from './sink/conflicts/resolve.js';
export { runTransforms, TransformError, type Transform, type TransformResult } from './transforms/transform.js';
export * from './transforms/common.js';
export { TransformingSink, type AppliedBatch } from './transforms/transforming-sink.js';
export { runPipeline } from './api/run-pipeline.js';
export { compareTable } from './verify/compare.js';
export { versionGatedSink, MemoryGateStore, type GateStore, type GatedTarget, type RowMark, type RowVersion, type VersionGatedSinkOptions } from './sink/version-gated-sink.js';
export { PostgresGateStore, type PostgresGateStoreOptions } from './sink/postgres-gate-store.js';
