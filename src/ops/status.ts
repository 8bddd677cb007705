import { deadLetterStoreOf } from '../config/dead-letter-store.js';
import { sourceNameOf } from '../config/load.js';
import type { SynclineConfig } from '../config/schema.js';
import { slotOf } from '../config/slot.js';
import { errorMessage } from '../core/errors.js';
import { formatLsn } from '../core/lsn.js';
import { redactUrl } from '../core/redact.js';
import { deadLetterTableUrl, openDeadLetterQueue } from '../compose/dead-letters.js';
import { sourceConnection } from '../compose/source-connection.js';
import { openExistingStream } from '../compose/stream.js';
import type { DeadLetterQueue } from '../dlq/dead-letter-queue.js';
import { currentWalLsn, slotState } from '../source/slot.js';
import type { Stream } from '../stream/stream.js';
import { connectPostgres, describeClient } from './connect.js';
import { latestVersions, readSchemaVersions } from './schemas.js';
import { peekDeadLetterTable, type BlockedTable } from './postgres-bookkeeping.js';
import { peekStoredPositions } from './sink-positions.js';

/** Where a pipeline stands, read from the source, the stream and the sink. Read-only. */
export interface StatusReport {
  source: { reachable: boolean; connection?: string; currentLsn?: string; error?: string };
  /** Each table's newest definition (`_schema_version`) capture met, and where it starts. */
  schemas: { table: string; version: number; firstLsn: string; recordedAt: string }[];
  slot: {
    name: string;
    exists: boolean;
    /**
     * Missing although capture streamed from it (its table definitions are recorded): it was
     * dropped, and capture refuses to create it again (see PostgresSource.open); the fix is
     * `syncline resync`.
     */
    dropped?: boolean;
    active?: boolean;
    activePid?: number | null;
    confirmedFlushLsn?: string | null;
    /** WAL between the source's current position and the slot's confirmed position. */
    lagBytes?: number | null;
    retainedWalBytes?: number | null;
    walStatus?: string | null;
  } | null;
  stream: {
    broker: string;
    /** False when the stream could not be opened (see error) or does not exist yet. */
    reachable: boolean;
    error?: string;
    partitions: PartitionStatus[];
    /** Sum of recordsBehind over the partitions. */
    recordsBehind: number;
    /** Inconsistencies an operator must look at (a position past the end of the stream). */
    warnings: string[];
  };
  /**
   * sinkPositions: `read` (the sink's stored positions are in the partitions), `none` (none
   * stored yet), `not stored by this sink` (a webhook keeps none: apply resumes from the
   * group's committed offsets), or `error` (see error).
   */
  consumer: { group: string; sinkPositions: SinkPositionsState; error?: string };
  dlq: {
    exists: boolean;
    count: number;
    /** Tables held because their target does not fit (their changes wait in the queue, TABLE_BLOCKED). */
    blockedTables: BlockedTable[];
    error?: string;
  };
}

export type SinkPositionsState = 'read' | 'none' | 'not stored by this sink' | 'error';

export interface PartitionStatus {
  partition: number;
  /** Offset the next appended record gets. */
  end: number;
  /** Next offset to apply as stored by the sink with its rows; null when it stored none (or keeps none: webhook). */
  sinkPosition: number | null;
  /** The group's committed offset in the stream. */
  committed: number | null;
  /** end − (sink position, else committed, else 0). */
  recordsBehind: number;
}

/** `syncline status`: reads the source, the stream, the sink's positions and the dead-letter queue; writes nothing. */
export async function collectStatus(config: SynclineConfig, baseDir = process.cwd()): Promise<StatusReport> {
  const report: StatusReport = {
    source: { reachable: false },
    schemas: [],
    slot: null,
    stream: { broker: config.stream.broker, reachable: false, partitions: [], recordsBehind: 0, warnings: [] },
    consumer: { group: config.consumer.group_id, sinkPositions: 'none' },
    dlq: { exists: false, count: 0, blockedTables: [] },
  };
  await sourceStatus(config, report);
  // Positions before the stream's ends (and the group's offsets before the ends, below): a
  // running apply moves them on between the reads, and a position read after the end it was
  // compared with looked past it, warning of a stream reset that never happened.
  const sinkPositions = await sinkStatus(config, report);
  const ends = await streamStatus(config, baseDir, report);
  await deadLetterStatus(config, report);
  if (ends) {
    for (const p of report.stream.partitions) {
      const s = sinkPositions.get(p.partition);
      p.sinkPosition = s === undefined ? null : Number(s);
      const from = p.sinkPosition ?? p.committed ?? 0;
      p.recordsBehind = Math.max(0, p.end - from);
      if (from > p.end) {
        report.stream.warnings.push(
          `partition ${p.partition}: the group's position ${from} is past the stream's end ${p.end}; the stream was recreated or truncated after apply ran, ` +
            `so apply would skip records up to ${from}. Delete the group's rows from ${config.sink.state_schema}.positions (and resynchronise the target) if the stream was reset on purpose`,
        );
      }
    }
    report.stream.recordsBehind = report.stream.partitions.reduce((n, p) => n + p.recordsBehind, 0);
  }
  return report;
}

async function sourceStatus(config: SynclineConfig, report: StatusReport): Promise<void> {
  let client;
  try {
    client = await connectPostgres(sourceConnection(config));
  } catch (err) {
    report.source.error = redactUrl(errorMessage(err));
    return;
  }
  try {
    report.source.reachable = true;
    report.source.connection = describeClient(client);
    report.source.currentLsn = await currentWalLsn(client);
    const name = slotOf(config).name;
    const s = await slotState(client, name);
    report.slot = s
      ? {
          name,
          exists: true,
          active: s.active,
          activePid: s.activePid,
          confirmedFlushLsn: s.confirmedFlush === null ? null : formatLsn(s.confirmedFlush),
          lagBytes: s.lagBytes === null ? null : Number(s.lagBytes),
          retainedWalBytes: s.retainedBytes === null ? null : Number(s.retainedBytes),
          walStatus: s.walStatus,
        }
      : { name, exists: false };
    report.schemas = latestVersions(await readSchemaVersions(client, config.source.state_schema, name)).map((v) => ({ table: v.table, version: v.version, firstLsn: v.firstLsn, recordedAt: v.recordedAt }));
    if (!s && report.schemas.length > 0) report.slot.dropped = true;
  } catch (err) {
    report.source.error = redactUrl(errorMessage(err));
  } finally {
    await client.end().catch(() => undefined);
  }
}

/** End offsets and the group's committed offsets. Never creates a stream that is not there. */
async function streamStatus(config: SynclineConfig, baseDir: string, report: StatusReport): Promise<boolean> {
  let stream: Stream | string;
  try {
    stream = await openExistingStream(config, baseDir);
  } catch (err) {
    report.stream.error = redactUrl(errorMessage(err));
    return false;
  }
  if (typeof stream === 'string') {
    report.stream.error = stream;
    return false;
  }
  try {
    // Read without joining the group: a consumer would take partitions from a running apply.
    const committed = (await stream.committedOffsets?.(config.consumer.group_id)) ?? new Map<number, bigint>();
    const ends = await stream.endOffsets();
    report.stream.reachable = true;
    report.stream.partitions = [...ends]
      .sort((a, b) => a[0] - b[0])
      .map(([partition, end]) => {
        const c = committed.get(partition);
        return { partition, end: Number(end), sinkPosition: null, committed: c === undefined ? null : Number(c), recordsBehind: 0 };
      });
    return true;
  } catch (err) {
    report.stream.error = redactUrl(errorMessage(err));
    return false;
  } finally {
    await stream.close().catch(() => undefined);
  }
}

/** The positions the sink stored with its rows (postgres, mysql, sqlite, redis). */
async function sinkStatus(config: SynclineConfig, report: StatusReport): Promise<Map<number, bigint>> {
  try {
    const positions = await peekStoredPositions(config);
    if (positions === 'not stored') {
      report.consumer.sinkPositions = 'not stored by this sink';
      return new Map();
    }
    if (positions) report.consumer.sinkPositions = 'read';
    return positions ?? new Map();
  } catch (err) {
    report.consumer.sinkPositions = 'error';
    report.consumer.error = redactUrl(errorMessage(err));
    return new Map();
  }
}

/** The dead-letter queue's depth and the tables it holds. */
async function deadLetterStatus(config: SynclineConfig, report: StatusReport): Promise<void> {
  if (config.dead_letter.enabled && deadLetterStoreOf(config) === 'topic') {
    const queue = openDeadLetterQueue(config);
    if (!queue) return;
    try {
      await queue.prepare();
      report.dlq = { exists: true, count: (await queue.depth()).count, blockedTables: [] };
      report.dlq.blockedTables = await heldTables(queue);
    } catch (err) {
      report.dlq.error = redactUrl(errorMessage(err));
    } finally {
      await queue.close();
    }
    return;
  }
  const url = deadLetterTableUrl(config);
  if (!url) return;
  try {
    const table = await peekDeadLetterTable(url, config.sink.state_schema, sourceNameOf(config));
    if (table) report.dlq = { exists: true, ...table };
  } catch (err) {
    report.dlq.error = redactUrl(errorMessage(err));
  }
}

async function heldTables(queue: DeadLetterQueue): Promise<BlockedTable[]> {
  const held = new Map<string, BlockedTable>();
  for (const e of await queue.list({ error: 'TABLE_BLOCKED', limit: 1_000_000 })) {
    if (e.errorCode !== 'TABLE_BLOCKED') continue;
    const t = held.get(e.table) ?? { table: e.table, changes: 0, reason: e.error };
    t.changes++;
    held.set(e.table, t);
  }
  return [...held.values()];
}
