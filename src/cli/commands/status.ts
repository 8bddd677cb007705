import { access } from 'node:fs/promises';
import path from 'node:path';
import type { Command } from 'commander';
import type pg from 'pg';
import { deadLetterStoreOf } from '../../config/dead-letter-store.js';
import { loadConfigFile } from '../../config/load.js';
import type { SynclineConfig } from '../../config/schema.js';
import { errorMessage } from '../../core/errors.js';
import { redactUrl } from '../../core/redact.js';
import { quoteQualified } from '../../core/sql.js';
import { connectPostgres, describeClient } from '../../doctor/connect.js';
import { formatBytes } from '../../doctor/report.js';
import { EXIT } from '../exit-codes.js';
import { openDeadLetterQueue } from '../../compose/dead-letters.js';
import { openStream } from '../../compose/stream.js';
import { sourceConnection } from '../../compose/source-connection.js';
import { configOption } from './options.js';

/** Where a pipeline stands, read from the source, the stream and the sink. Read-only. */
export interface StatusReport {
  source: { reachable: boolean; connection?: string; currentLsn?: string; error?: string };
  slot: {
    name: string;
    exists: boolean;
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
  consumer: { group: string; sinkPositions: 'read' | 'none' | 'not a postgres sink' | 'error'; error?: string };
  dlq: {
    exists: boolean;
    count: number;
    /** Tables held because their target does not fit (their changes wait in the queue, TABLE_BLOCKED). */
    blockedTables: { table: string; changes: number; reason: string }[];
    error?: string;
  };
}

export interface PartitionStatus {
  partition: number;
  /** Offset the next appended record gets. */
  end: number;
  /** Next offset to apply as stored by the sink with its rows (postgres sinks). */
  sinkPosition: number | null;
  /** The group's committed offset in the stream. */
  committed: number | null;
  /** end − (sink position, else committed, else 0). */
  recordsBehind: number;
}

export async function collectStatus(config: SynclineConfig, baseDir = process.cwd()): Promise<StatusReport> {
  const report: StatusReport = {
    source: { reachable: false },
    slot: null,
    stream: { broker: config.stream.broker, reachable: false, partitions: [], recordsBehind: 0, warnings: [] },
    consumer: { group: config.consumer.group_id, sinkPositions: 'none' },
    dlq: { exists: false, count: 0, blockedTables: [] },
  };
  await sourceStatus(config, report);
  const ends = await streamStatus(config, baseDir, report);
  const sinkPositions = await sinkStatus(config, report);
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
  let client: pg.Client;
  try {
    client = await connectPostgres(sourceConnection(config));
  } catch (err) {
    report.source.error = redactUrl(errorMessage(err));
    return;
  }
  try {
    report.source.reachable = true;
    report.source.connection = describeClient(client);
    const { rows } = await client.query<{ lsn: string }>('SELECT pg_current_wal_lsn()::text AS lsn');
    report.source.currentLsn = rows[0]?.lsn;
    const name = config.source.slots[0]?.name;
    if (name === undefined) return;
    const slot = await client.query<{ active: boolean; active_pid: number | null; confirmed: string | null; lag: string | null; retained: string | null; wal_status: string | null }>(
      `SELECT active, active_pid, confirmed_flush_lsn::text AS confirmed,
              pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint::text AS lag,
              pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint::text AS retained, wal_status
         FROM pg_replication_slots WHERE slot_name = $1 AND database = current_database()`,
      [name],
    );
    const s = slot.rows[0];
    report.slot = s
      ? {
          name,
          exists: true,
          active: s.active,
          activePid: s.active_pid,
          confirmedFlushLsn: s.confirmed,
          lagBytes: s.lag === null ? null : Number(s.lag),
          retainedWalBytes: s.retained === null ? null : Number(s.retained),
          walStatus: s.wal_status,
        }
      : { name, exists: false };
  } catch (err) {
    report.source.error = redactUrl(errorMessage(err));
  } finally {
    await client.end().catch(() => undefined);
  }
}

/** End offsets and the group's committed offsets. Never creates a stream that is not there. */
async function streamStatus(config: SynclineConfig, baseDir: string, report: StatusReport): Promise<boolean> {
  if (config.stream.broker === 'embedded') {
    const dir = path.resolve(baseDir, config.stream.path);
    try {
      await access(path.join(dir, 'meta.json'));
    } catch {
      report.stream.error = `no embedded stream at ${dir} yet (created by the first capture)`;
      return false;
    }
  }
  try {
    const stream = await openStream(config, baseDir);
    try {
      const ends = await stream.endOffsets();
      let committed = new Map<number, bigint>();
      // Reading committed offsets through a consumer is side-effect free only for the
      // embedded stream; on a broker with group membership it would trigger a rebalance.
      if (config.stream.broker === 'embedded') {
        const consumer = await stream.consumer(config.consumer.group_id);
        try {
          committed = await consumer.committed();
        } finally {
          await consumer.close();
        }
      }
      report.stream.reachable = true;
      report.stream.partitions = [...ends]
        .sort((a, b) => a[0] - b[0])
        .map(([partition, end]) => {
          const c = committed.get(partition);
          return { partition, end: Number(end), sinkPosition: null, committed: c === undefined ? null : Number(c), recordsBehind: 0 };
        });
      return true;
    } finally {
      await stream.close();
    }
  } catch (err) {
    report.stream.error = redactUrl(errorMessage(err));
    return false;
  }
}

/** The positions the sink stored with its rows, and the dead-letter queue depth. */
async function sinkStatus(config: SynclineConfig, report: StatusReport): Promise<Map<number, bigint>> {
  const positions = new Map<number, bigint>();
  const sinkUrl = config.sink.type === 'postgres' ? config.sink.url : undefined;
  const schema = config.sink.state_schema;
  if (config.sink.type !== 'postgres') report.consumer.sinkPositions = 'not a postgres sink';
  if (sinkUrl) {
    try {
      await withClient(sinkUrl, async (c) => {
        if (!(await tableExists(c, schema, 'positions'))) return;
        const { rows } = await c.query<{ p: number; o: string }>(
          `SELECT stream_partition AS p, next_offset::text AS o FROM ${quoteQualified(schema, 'positions')} WHERE group_id = $1`,
          [config.consumer.group_id],
        );
        for (const r of rows) positions.set(r.p, BigInt(r.o));
        report.consumer.sinkPositions = 'read';
      });
    } catch (err) {
      report.consumer.sinkPositions = 'error';
      report.consumer.error = redactUrl(errorMessage(err));
    }
  }
  if (config.dead_letter.enabled && deadLetterStoreOf(config) === 'topic') {
    const queue = openDeadLetterQueue(config);
    try {
      await queue?.prepare();
      report.dlq = { exists: true, count: (await queue?.depth())?.count ?? 0, blockedTables: [] };
      const held = new Map<string, { table: string; changes: number; reason: string }>();
      for (const e of (await queue?.list({ error: 'TABLE_BLOCKED', limit: 1_000_000 })) ?? []) {
        if (e.errorCode !== 'TABLE_BLOCKED') continue;
        const t = held.get(e.table) ?? { table: e.table, changes: 0, reason: e.error };
        t.changes++;
        held.set(e.table, t);
      }
      report.dlq.blockedTables = [...held.values()];
    } catch (err) {
      report.dlq.error = redactUrl(errorMessage(err));
    } finally {
      await queue?.close();
    }
    return positions;
  }
  const dlqUrl = config.dead_letter.url ?? sinkUrl;
  if (dlqUrl) {
    try {
      await withClient(dlqUrl, async (c) => {
        if (!(await tableExists(c, schema, 'dead_letter'))) return;
        const { rows } = await c.query<{ n: string }>(`SELECT count(*)::text AS n FROM ${quoteQualified(schema, 'dead_letter')}`);
        report.dlq = { exists: true, count: Number(rows[0]?.n ?? 0), blockedTables: [] };
        // Held tables are a detail: a queue table of an older layout still gets its count.
        const held = await c
          .query<{ table_name: string; n: string; reason: string }>(
            `SELECT table_name, count(*)::text AS n, min(error) AS reason FROM ${quoteQualified(schema, 'dead_letter')} WHERE error_code = 'TABLE_BLOCKED' GROUP BY table_name ORDER BY table_name`,
          )
          .catch(() => ({ rows: [] }));
        report.dlq.blockedTables = held.rows.map((h) => ({ table: h.table_name, changes: Number(h.n), reason: redactUrl(h.reason) }));
      });
    } catch (err) {
      report.dlq.error = redactUrl(errorMessage(err));
    }
  }
  return positions;
}

async function withClient(url: string, fn: (c: pg.Client) => Promise<void>): Promise<void> {
  const c = await connectPostgres({ connectionString: url });
  try {
    await fn(c);
  } finally {
    await c.end().catch(() => undefined);
  }
}

async function tableExists(c: pg.Client, schema: string, table: string): Promise<boolean> {
  const { rows } = await c.query<{ oid: string | null }>('SELECT to_regclass($1)::oid::text AS oid', [quoteQualified(schema, table)]);
  return !!rows[0]?.oid;
}

export function formatStatus(r: StatusReport): string {
  const out: string[] = [];
  if (r.source.reachable) out.push(`source    ${r.source.connection ?? '?'}, current WAL ${r.source.currentLsn ?? '?'}${r.source.error ? ` (error: ${r.source.error})` : ''}`);
  else out.push(`source    UNREACHABLE: ${r.source.error ?? '?'}`);
  const s = r.slot;
  if (s === null) out.push('slot      unknown (source unreachable)');
  else if (!s.exists) out.push(`slot      ${s.name}: does not exist yet (capture creates it)`);
  else {
    out.push(
      `slot      ${s.name}: ${s.active ? `active (pid ${s.activePid ?? '?'})` : 'inactive'}, confirmed ${s.confirmedFlushLsn ?? 'never'}, ` +
        `${s.lagBytes == null ? '?' : formatBytes(s.lagBytes)} behind the current WAL, retains ${s.retainedWalBytes == null ? '?' : formatBytes(s.retainedWalBytes)} (wal_status ${s.walStatus ?? '?'})`,
    );
  }
  if (!r.stream.reachable) out.push(`stream    ${r.stream.broker}: ${r.stream.error ?? 'not reachable'}`);
  else {
    out.push(`stream    ${r.stream.broker}, ${r.stream.partitions.length} partitions, group ${r.consumer.group}: ${r.stream.recordsBehind} records behind`);
    const header = ['partition', 'end', 'sink position', 'committed', 'behind'];
    const rows = r.stream.partitions.map((p) => [String(p.partition), String(p.end), p.sinkPosition === null ? '-' : String(p.sinkPosition), p.committed === null ? '-' : String(p.committed), String(p.recordsBehind)]);
    const widths = header.map((h, i) => Math.max(h.length, ...rows.map((row) => (row[i] ?? '').length)));
    for (const row of [header, ...rows]) out.push(`  ${row.map((cell, i) => cell.padStart(widths[i] ?? 0)).join('  ')}`);
    for (const w of r.stream.warnings) out.push(`  WARNING ${w}`);
  }
  if (r.consumer.sinkPositions === 'error') out.push(`sink      positions not readable: ${r.consumer.error ?? '?'}`);
  else if (r.consumer.sinkPositions === 'none') out.push('sink      no positions stored yet');
  if (r.dlq.error) out.push(`dlq       not readable: ${r.dlq.error}`);
  else out.push(`dlq       ${r.dlq.exists ? `${r.dlq.count} change(s) waiting` : '0 (not created)'}`);
  for (const b of r.dlq.blockedTables) out.push(`  BLOCKED ${b.table}: ${b.changes} change(s) held until the target is fixed: ${b.reason.split('\n')[0] ?? ''}`);
  return `${out.join('\n')}\n`;
}

export function registerStatus(program: Command): void {
  program
    .command('status')
    .description('show the slot, WAL lag, stream end offsets, consumer positions and dead-letter depth; exit 0, or 1 if the source is unreachable')
    .addOption(configOption())
    .option('--json', 'print the status as JSON')
    .action(async (opts: { config: string; json?: boolean }) => {
      const config = loadConfigFile(opts.config);
      const report = await collectStatus(config);
      process.stdout.write(opts.json ? `${JSON.stringify(report, null, 2)}\n` : formatStatus(report));
      process.exitCode = report.source.reachable ? EXIT.OK : EXIT.FAILURE;
    });
}
