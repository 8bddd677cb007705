import type pg from 'pg';
import type { Stream } from '../stream/stream.js';
import type { ApplyBarrier } from './recheck.js';

export interface PipelineBarrierOptions {
  /** A source connection (may be verify's own). */
  source: pg.ClientBase;
  /** The stream positions the sink stored with the rows for the consumer group (VerifyTarget.positions). */
  positions: () => Promise<Map<number, bigint>>;
  slot: string;
  openStream: () => Promise<Stream>;
  timeoutMs: number;
  pollMs?: number;
}

/**
 * "Apply has passed source position L", from what the pipeline already makes visible:
 * 1. the slot's confirmed flush position reaches L — capture confirms a position only once
 *    the stream stored every change before it (a non-transactional logical message is
 *    emitted first so that an idle slot moves at once, as capture's heartbeats do);
 * 2. the stream's end offsets are then read: every change committed before L is below them;
 * 3. the sink's stored positions (written in the same transaction as the rows) reach those
 *    offsets in every partition.
 * Unavailable when no process streams the slot (nothing would move it).
 */
export function pipelineBarrier(o: PipelineBarrierOptions): ApplyBarrier & { close(): Promise<void> } {
  let stream: Promise<Stream> | undefined;
  const poll = o.pollMs ?? 50;
  const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
  const barrier = async (lsn: string): Promise<'reached' | 'timeout' | 'unavailable'> => {
    const deadline = Date.now() + o.timeoutMs;
    await o.source.query(`SELECT pg_logical_emit_message(false, 'syncline.verify', '')`).catch(() => undefined);
    for (;;) {
      const { rows } = await o.source.query<{ reached: boolean; active: boolean }>(
        'SELECT coalesce(confirmed_flush_lsn >= $2::pg_lsn, false) AS reached, active FROM pg_replication_slots WHERE slot_name = $1',
        [o.slot, lsn],
      );
      const r = rows[0];
      if (!r) return 'unavailable';
      if (r.reached) break;
      if (!r.active) return 'unavailable';
      if (Date.now() > deadline) return 'timeout';
      await sleep(poll);
    }
    stream ??= o.openStream();
    const ends = await (await stream).endOffsets();
    for (;;) {
      const at = await o.positions();
      if ([...ends].every(([p, end]) => end === 0n || (at.get(p) ?? 0n) >= end)) return 'reached';
      if (Date.now() > deadline) return 'timeout';
      await sleep(poll);
    }
  };
  return Object.assign(barrier, {
    close: async (): Promise<void> => {
      if (stream) await (await stream).close().catch(() => undefined);
    },
  });
}
