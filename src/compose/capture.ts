import { sourceNameOf } from '../config/load.js';
import type { SynclineConfig } from '../config/schema.js';
import { slotOf } from '../config/slot.js';
import { systemClock } from '../core/clock.js';
import { Events } from '../core/events.js';
import { parseLsn } from '../core/lsn.js';
import { parseTableName } from '../core/sql.js';
import { tableLabel } from '../core/table-mapping.js';
import type { Logger } from '../log/logger.js';
import type { Metrics } from '../metrics/metrics.js';
import { Capture } from '../pipeline/capture.js';
import { HEARTBEAT_PREFIX } from '../pipeline/change-builder.js';
import { SnapshotRunner } from '../source/snapshot-runner.js';
import { PostgresSource } from '../source/postgres-source.js';
import type { Stream } from '../stream/stream.js';
import { CaptureLag } from './capture-lag.js';
import { openCodec } from './codec.js';
import { sourceConnection } from './source-connection.js';

/** What the caller of runCapture hears about its progress. */
export interface CaptureHooks {
  /** Every prerequisite held (publication, leadership, slot): capture is about to stream. */
  onPrepared?: () => void;
  /** The slot streams to this capture. */
  onStreaming?: () => void;
  /** Another capture leads the slot and this one waits as its standby. */
  onStandby?: () => void;
}

/**
 * Prepares the source (see PostgresSource.open) and runs capture, with the snapshots the
 * source has queued, until `signal` aborts. `lag` feeds sync_capture_lag_seconds: the
 * source's WAL positions over time against what capture confirmed (kept across restarts by
 * the caller).
 */
export async function runCapture(
  config: SynclineConfig,
  stream: Stream,
  metrics: Metrics,
  log: Logger,
  signal: AbortSignal,
  hooks: CaptureHooks = {},
  lag: CaptureLag = new CaptureLag(metrics),
): Promise<void> {
  const slot = slotOf(config);
  const s = config.source;
  const codec = await openCodec(config);
  const source = await PostgresSource.open(
    {
      connection: sourceConnection(config),
      slot: slot.name,
      publication: slot.publication,
      tables: slot.tables.map((t) => parseTableName(t)),
      createPublication: slot.create_publication,
      stateSchema: s.state_schema,
      initialSnapshot: s.snapshot === 'initial',
      ...(s.protocol_version !== undefined ? { protocolVersion: s.protocol_version } : {}),
      ...(s.logical_decoding_work_mem ? { logicalDecodingWorkMem: s.logical_decoding_work_mem } : {}),
      heartbeatIntervalMs: s.heartbeat_interval_ms,
      heartbeatPrefix: HEARTBEAT_PREFIX,
      snapshotParallelism: s.snapshot_parallelism,
      ...(s.spill_dir ? { spillDir: s.spill_dir } : {}),
      skipOrigins: s.skip_origins,
      clock: systemClock,
      log,
      onSlotHealth: (state) => metrics.slotRetainedWalBytes.set(Number(state.retainedBytes ?? 0n)),
      onWalPosition: (lsn, atMs) => lag.wal(atMs, lsn),
      onStandby: () => {
        // Another capture leads the slot: what this process measured before (its lag, the
        // slot's position and retained WAL) is not the slot's now, and would stay for as long
        // as the process ran.
        lag.standby();
        metrics.captureLsn.withdraw();
        metrics.slotRetainedWalBytes.withdraw();
        hooks.onStandby?.();
      },
      ...(hooks.onStreaming ? { onStreaming: hooks.onStreaming } : {}),
    },
    signal,
  );
  if (!source) return;
  try {
    const producer = await stream.producer();
    try {
      const events = new Events();
      metrics.subscribe(events);
      metrics.captureTables(slotOf(config).tables.map((t) => tableLabel(parseTableName(t))));
      // Commit times date WAL no sample covers (written while no capture ran); once a transaction.
      let lastCommit = '';
      events.on('capture:change', (e) => {
        if (e.commit_lsn === lastCommit) return;
        lastCommit = e.commit_lsn;
        lag.commit(Math.min(Date.parse(e.commit_ts), systemClock.now()), parseLsn(e.commit_lsn)); // not ahead of this host's clock (skew)
      });
      const capture = new Capture(source, producer, events, log, {
        source: sourceNameOf(config),
        batchSize: config.stream.batch_size,
        batchWaitMs: config.stream.batch_wait_ms,
        maxInFlight: config.stream.max_in_flight,
        statusIntervalMs: s.status_interval_ms,
        startLsn: source.startLsn,
        walAtStart: source.walAtStart,
        ignoredSchemas: [s.state_schema],
        primaryKeys: source.keys.columns,
        deferrableKeys: source.keys.deferrable,
        schemaVersions: source.schemaVersions,
        spillDir: source.spillDir,
        readSourceRow: (schema, table, key, columns, xid) => source.readRow(schema, table, key, columns, xid),
        skipOrigins: s.skip_origins,
        wholeTransactions: config.sink.consistency === 'transactional',
        ...(codec.format !== 'json' ? { codec } : {}),
      });
      lag.follow(() => capture.confirmedLsn);
      const stopSnapshots = new AbortController();
      let snapshotting: Promise<void> = Promise.resolve();
      try {
        const snapshots = source.snapshots;
        if (snapshots) {
          const readers = await source.snapshotReaders();
          // Before the first change is decoded: the initial snapshot's tables are known now.
          capture.snapshots.setSnapshotting(await snapshots.unfinishedTables());
          const runner = new SnapshotRunner(readers, snapshots, capture.snapshots, log, { chunkSize: s.snapshot_chunk_size, pollMs: 1000, connect: () => source.connectSnapshotReader() });
          await runner.holdInterrupted();
          snapshotting = runner.run(stopSnapshots.signal);
        }
        hooks.onPrepared?.();
        await capture.run(signal);
      } finally {
        lag.stopped();
        stopSnapshots.abort();
        await snapshotting;
      }
    } finally {
      await producer.close();
    }
  } finally {
    await source.release();
  }
}
