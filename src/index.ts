/** syncline's public library surface: small on purpose. */
export type { ChangeEvent, ChangeOp, Row } from './core/change.js';
export { partitionKeyOf, partitionFor, dedupKeyOf } from './core/change.js';
export { SynclineError, ConfigError, PrerequisiteError, ProtocolError } from './core/errors.js';
export { parseLsn, formatLsn, type Lsn } from './core/lsn.js';
export { parseConfig, loadConfigFile } from './config/load.js';
export type { SynclineConfig } from './config/schema.js';
export { PgoutputDecoder } from './pgoutput/decoder.js';
export type { PgoutputMessage } from './pgoutput/messages.js';
export type { Stream, StreamConsumer, StreamProducer, StreamRecord, OutgoingRecord } from './stream/stream.js';
export type { Sink, ApplyOutcome } from './sink/sink.js';
export { runPipeline } from './cli/run-command.js';
export { compareTable } from './verify/compare.js';
