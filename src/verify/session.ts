import pg from 'pg';
import type { TableName } from '../core/sql.js';
import type { TableRoute } from '../core/table-mapping.js';
import type { Stream } from '../stream/stream.js';
import { pipelineBarrier } from './barrier.js';
import { verifyTable, type TableVerification, type TargetPair, type VerifyOptions } from './compare.js';
import { openVerifyTarget } from './targets/open.js';
import type { VerifyTarget } from './targets/target.js';
import type { VerifyWriter } from './shape.js';

export interface VerifySessionOptions {
  source: pg.ClientConfig;
  targetUrl: string;
  /** `sink.type` of the target: postgres (default), mysql or sqlite. */
  targetType?: string;
  /** Connection pairs (ranges compared at once). */
  parallelism: number;
  /** Wait for the pipeline before reporting a difference (see barrier.ts); absent: report as read. */
  pipeline?: { slot: string; stateSchema: string; group: string; openStream: () => Promise<Stream>; timeoutMs: number };
  /** Several writers share the target (conflict tracking): compare only this one's rows there (see VerifyWriter). */
  writer?: VerifyWriter;
  /** Rows per second at most (continuous verification). */
  maxRowsPerSecond?: number;
  /** Progress: rows compared so far and the estimated total (pg_class.reltuples of the tables). */
  onProgress?: (done: number, estimate: number, table: string) => void;
  signal?: AbortSignal;
}

/**
 * Verifies tables on `parallelism` pairs of fresh connections (closed at the end): the
 * connections and the optional lag barrier that `syncline verify`, `repair` and continuous
 * verification share.
 */
export async function verifyTables(
  tables: readonly { table: TableName; route?: TableRoute }[],
  o: VerifySessionOptions,
  extra: Pick<VerifyOptions, 'keepKeys' | 'sample'> = {},
): Promise<TableVerification[]> {
  const pairs: TargetPair[] = [];
  const clients: pg.Client[] = [];
  const targets: VerifyTarget[] = [];
  const open = async (config: pg.ClientConfig): Promise<pg.Client> => {
    const c = new pg.Client(config);
    c.on('error', () => undefined);
    clients.push(c);
    await c.connect();
    return c;
  };
  const openTarget = async (): Promise<VerifyTarget> => {
    const t = await openVerifyTarget(o.targetType ?? 'postgres', o.targetUrl);
    targets.push(t);
    return t;
  };
  try {
    for (let i = 0; i < Math.max(1, o.parallelism); i++) pairs.push({ source: await open(o.source), target: await openTarget() });
    const first = pairs[0] as TargetPair;
    // The barrier gets connections of its own: the re-check holds the first pair in a transaction.
    const pipeline = o.pipeline;
    const positions = pipeline ? await openTarget() : undefined;
    const barrier = pipeline && positions
      ? pipelineBarrier({
          source: await open(o.source),
          positions: () => positions.positions(pipeline.stateSchema, pipeline.group),
          slot: pipeline.slot,
          openStream: pipeline.openStream,
          timeoutMs: pipeline.timeoutMs,
        })
      : undefined;
    const { rows } = await first.source.query<{ n: string }>(
      'SELECT coalesce(sum(greatest(reltuples, 0)), 0)::bigint::text AS n FROM pg_class WHERE oid = ANY($1::regclass[])',
      [tables.map((t) => `"${t.table.schema.replace(/"/g, '""')}"."${t.table.table.replace(/"/g, '""')}"`)],
    );
    // A mysql or sqlite target is read in two passes (source rows, then target keys): both count.
    const estimate = Number(rows[0]?.n ?? 0) * (first.target.type === 'postgres' ? 1 : 2);
    let done = 0;
    const started = Date.now();
    // Rows read, re-reads included (a keyless table's re-check scans it again): what the rate limits.
    let read = 0;
    const throttle = async (n: number): Promise<void> => {
      if (o.signal?.aborted) throw new Error('verification stopped');
      read += n;
      if (!o.maxRowsPerSecond) return;
      const ahead = (read / o.maxRowsPerSecond) * 1000 - (Date.now() - started);
      if (ahead > 0) await new Promise((r) => setTimeout(r, ahead));
    };
    const results: TableVerification[] = [];
    try {
      for (const t of tables) {
        const label = `${t.table.schema}.${t.table.table}`;
        results.push(
          await verifyTable(pairs, t.table, t.route, {
            ...extra,
            ...(barrier ? { barrier } : {}),
            ...(o.writer ? { writer: o.writer } : {}),
            onRows: (n) => {
              done += n;
              o.onProgress?.(done, Math.max(estimate, done), label);
            },
            throttle,
          }),
        );
      }
    } finally {
      await barrier?.close();
    }
    return results;
  } finally {
    for (const c of clients) await c.end().catch(() => undefined);
    for (const t of targets) await t.close();
  }
}

/** A one-line progress bar for a TTY: rows done, rows/s and the time left. */
export function progressLine(done: number, estimate: number, startedMs: number, table: string): string {
  const secs = Math.max((Date.now() - startedMs) / 1000, 0.001);
  const rate = done / secs;
  const share = estimate > 0 ? Math.min(1, done / estimate) : 0;
  const width = 24;
  const filled = Math.round(share * width);
  const eta = rate > 0 && estimate > done ? Math.round((estimate - done) / rate) : 0;
  return `\r[${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${Math.round(share * 100)}% ${done.toLocaleString('en')} rows, ${Math.round(rate).toLocaleString('en')} rows/s, ETA ${eta}s (${table})\u001b[K`;
}
