import { randomUUID } from 'node:crypto';
import type pg from 'pg';
import { errorMessage, isRetriable } from '../core/errors.js';
import type { Logger } from '../log/logger.js';
import { readChunk, tableShape } from '../source/snapshot-reader.js';
import type { SnapshotJob, SnapshotStore } from '../source/snapshot-store.js';
import type { SnapshotChunk, WatermarkMessage } from './capture.js';
import { SNAPSHOT_PREFIX } from './change-builder.js';

/** The part of Capture the runner needs. */
export interface ChunkSink {
  registerChunk(token: string, chunk: SnapshotChunk): void;
  chunkPublished(token: string): Promise<void>;
}

export interface SnapshotRunnerOptions {
  chunkSize: number;
  /** How often to look for new snapshot requests when idle. */
  pollMs: number;
}

/**
 * Runs snapshot jobs while capture streams (initial snapshots and `syncline snapshot`).
 * Each chunk: emit a low watermark, read the next rows in key order, hand them to capture,
 * emit a high watermark, wait until capture has published the chunk durably, then record
 * progress. A kill -9 at any point resumes from the last recorded chunk; a chunk read twice
 * is harmless (its rows are re-emitted with a newer version than any change they include).
 */
export class SnapshotRunner {
  constructor(
    /** For watermarks and progress: autocommit statements on the source. */
    private readonly admin: pg.ClientBase,
    /** For reading chunks, with the replication connection's output settings. */
    private readonly reader: pg.ClientBase,
    private readonly store: SnapshotStore,
    private readonly capture: ChunkSink,
    private readonly log: Logger,
    private readonly options: SnapshotRunnerOptions,
  ) {}

  async run(signal: AbortSignal): Promise<void> {
    while (!signal.aborted) {
      let job: SnapshotJob | undefined;
      try {
        job = await this.store.next();
      } catch (err) {
        this.log.warn({ err: errorMessage(err) }, 'could not read snapshot jobs');
      }
      if (!job) {
        await sleep(this.options.pollMs, signal);
        continue;
      }
      try {
        await this.runJob(job, signal);
      } catch (err) {
        if (signal.aborted) return;
        if (isRetriable(err)) {
          this.log.warn({ err: errorMessage(err), snapshot: job.id }, 'snapshot chunk failed; retrying');
          await sleep(1000, signal);
          continue;
        }
        this.log.error({ err: errorMessage(err), snapshot: job.id }, 'snapshot failed');
        await this.store.finish(job.id, 'failed', errorMessage(err)).catch(() => undefined);
      }
    }
  }

  private async runJob(job: SnapshotJob, signal: AbortSignal): Promise<void> {
    const t = job.table;
    const name = `${t.schema}.${t.table}`;
    const shape = await tableShape(this.reader, t);
    await this.store.markRunning(job.id);
    this.log.info({ snapshot: job.id, table: name, resumeAfter: job.lastKey }, job.lastKey ? 'snapshot resuming' : 'snapshot starting');
    let after = job.lastKey;
    let total = job.rows;
    const started = Date.now();
    let readThisRun = 0;
    while (!signal.aborted) {
      const token = `${job.id}:${randomUUID()}`;
      await this.watermark(token, 'low', name);
      const rows = await readChunk(this.reader, t, shape, after, { from: job.keyFrom, to: job.keyTo }, this.options.chunkSize);
      this.capture.registerChunk(token, { schema: t.schema, table: t.table, columns: shape.columns, keyColumns: shape.key, rows });
      const published = this.capture.chunkPublished(token);
      await this.watermark(token, 'high', name);
      await untilAborted(published, signal);
      if (signal.aborted) return;
      const last = rows[rows.length - 1];
      if (last) {
        after = shape.key.map((k) => last[shape.columns.indexOf(k)] ?? '');
        await this.store.chunkDone(job.id, after, rows.length);
      }
      total += rows.length;
      readThisRun += rows.length;
      const secs = (Date.now() - started) / 1000;
      this.log.info({ snapshot: job.id, table: name, rows: total, rowsPerSecond: Math.round(readThisRun / Math.max(secs, 0.001)) }, 'snapshot progress');
      if (rows.length < this.options.chunkSize) {
        await this.store.finish(job.id, 'done');
        this.log.info({ snapshot: job.id, table: name, rows: total }, 'snapshot done');
        return;
      }
    }
  }

  private async watermark(token: string, mark: 'low' | 'high', table: string): Promise<void> {
    const content: WatermarkMessage = { token, mark, table };
    await this.admin.query('SELECT pg_logical_emit_message(true, $1, $2)', [SNAPSHOT_PREFIX, JSON.stringify(content)]);
  }
}

/** Waits for `p`, or resolves early on abort; the abort listener is removed either way. */
function untilAborted(p: Promise<void>, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal.aborted) return resolve();
    const onAbort = (): void => resolve();
    signal.addEventListener('abort', onAbort, { once: true });
    p.then(
      () => {
        signal.removeEventListener('abort', onAbort);
        resolve();
      },
      (err: unknown) => {
        signal.removeEventListener('abort', onAbort);
        reject(err);
      },
    );
  });
}

/** Resolves after `ms` or on abort, whichever first, leaving no listener or timer behind. */
function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const done = (): void => {
      clearTimeout(t);
      signal.removeEventListener('abort', done);
      resolve();
    };
    const t = setTimeout(done, Math.min(ms, 2 ** 31 - 1));
    signal.addEventListener('abort', done, { once: true });
  });
}
