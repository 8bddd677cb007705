import type { SynclineConfig } from '../config/schema.js';
import type { DeadLetter } from '../dlq/dead-letter-queue.js';
import type { Logger } from '../log/logger.js';
import type { Metrics } from '../metrics/metrics.js';
import type { ConflictResolver } from '../sink/conflicts/resolve.js';
import type { Sink } from '../sink/sink.js';
import type { Transform } from '../transforms/transform.js';
import type { AppliedBatch } from '../transforms/transforming-sink.js';
import type { SynclineConfigInput } from './config.js';
import type { Role } from './monitoring.js';

/** What createPipeline needs. */
export interface PipelineOptions {
  /**
   * The configuration: `loadConfig('sync.yaml')`, or a plain object of the same shape
   * (validated here, `${VAR}` interpolated, every problem thrown at once as a ConfigError).
   */
  config: SynclineConfig | SynclineConfigInput;
  /**
   * Your own sink: replaces `sink.type` / `sink.url` (the `sink.tables` mapping still applies).
   * The pipeline prepares it when apply starts and closes it when apply ends.
   */
  sink?: Sink;
  /**
   * Decides conflicts between writers at a postgres sink (fan-in, bidirectional) instead of
   * `sink.conflict_strategy`; recorded with strategy `custom`. Must be deterministic.
   */
  resolveConflict?: ConflictResolver;
  /** Applied in order to every change before the sink (see Transform). */
  transforms?: readonly Transform[];
  /** `run` (capture and apply), `capture` (source → stream) or `apply` (stream → sink). Default `run`. */
  role?: Role;
  /** A pino logger; default: silent. */
  logger?: Logger;
  /** The metrics registry to fill; default: a new one (`pipeline.metrics`). */
  metrics?: Metrics;
  /** Apply only: replay from this position (`beginning`, an offset, `partition:offset` pairs, or a time), as `syncline apply --from`. */
  from?: string;
  /** Resolves relative paths (`stream.path`); default the process's working directory. */
  baseDir?: string;
}

/** The events of a pipeline and their listeners. */
export interface PipelineEvents {
  /** A sink write succeeded: the changes as the sink got them (after transforms) and its outcome. */
  applied: (batch: AppliedBatch) => void;
  /** Changes were stored in the dead-letter queue, each with its reason and stream position. */
  deadLettered: (letters: readonly DeadLetter[]) => void;
  /** A part failed and the pipeline is stopping (start() or done rejects with the same error). */
  error: (error: Error, part: 'capture' | 'apply' | 'pipeline') => void;
}

/** Where a pipeline is. */
export type PipelineState = 'idle' | 'starting' | 'running' | 'stopping' | 'stopped' | 'failed';

/** A snapshot of a pipeline's state and counters since start, from `pipeline.status()`. */
export interface PipelineStatus {
  state: PipelineState;
  role: Role;
  /** `standby` while another capture leads the slot; absent for role `apply`. */
  capture?: 'starting' | 'standby' | 'streaming' | 'stopped' | 'failed';
  /** Absent for role `capture`. */
  apply?: 'starting' | 'consuming' | 'stopped' | 'failed';
  /** Changes whose effect the sink wrote. */
  applied: number;
  /** Changes the version gate skipped (replays). */
  stale: number;
  /** Changes the transforms dropped. */
  dropped: number;
  /** Changes sent to the dead-letter queue. */
  deadLettered: number;
  /** When the sink last wrote a batch. */
  lastAppliedAt?: Date;
  /** `/metrics`, health endpoints and dashboard, when `monitoring.enabled`. */
  monitoringUrl?: string;
  /** The failure, once state is `failed`. */
  error?: string;
}

