import { randomUUID } from 'node:crypto';
import type pg from 'pg';
import { errorMessage, isRetriable } from '../core/errors.js';
import type { Logger } from '../log/logger.js';
import { chunkBoundary, readChunk, tableShape, type TableShape } from '../source/snapshot-reader.js';
import type { SnapshotJob, SnapshotStore } from '../source/snapshot-store.js';
import type { SnapshotChunk, WatermarkMessage } from './capture.js';
import { SNAPSHOT_PREFIX } from './change-builder.js';
import { ChunkPlan } from './chunk-plan.js';

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

/** Progress of the job being run, shared by its readers. */
interface JobRun {
  job: SnapshotJob;
  name: string;
  shape: TableShape;
  plan: ChunkPlan;
  started: number;
  total: number;
  readThisRun: number;
  /**
   * Progress writes, one after another on the store's connection: each records the plan as
   * of its chunk, so they must land in the order the chunks were marked finished.
   */
  recorded: Promise<void>;
}

/**
 * Runs snapshot jobs while capture streams (initial snapshots and `syncline snapshot`).
 * A job's chunks are key ranges planned in order (chunk-plan.ts) and read by one reader per
 * connection in `readers`, several chunks of one table at once. Each chunk, on its reader's
 * connection: emit a low watermark, read the range, hand the rows to capture, emit a high
 * watermark, wait until capture has published the chunk durably, then record progress.
 * Chunks are disjoint, so each has its own watermark window and their order does not
 * matter. A kill -9 at any point resumes after the finished chunks; a chunk read twice is
 * harmless (its rows are re-emitted with a newer version than any change they include).
 */
export class SnapshotRunner {
  constructor(
    /**
     * One per chunk read in parallel, with the replication connection's output settings; each
     * also emits its chunks' watermarks, so its read starts after its low watermark committed.
     */
    private readonly readers: readonly pg.ClientBase[],
    private readonly store: SnapshotStore,
    private readonly capture: ChunkSink,
    private readonly log: Logger,
    private readonly options: SnapshotRunnerOptions,
  ) {
    if (readers.length === 0) throw new Error('SnapshotRunner needs at least one reader connection');
  }

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
    const shape = await tableShape(this.readers[0] as pg.ClientBase, t);
    await this.store.markRunning(job.id);
    const resuming = job.lastKey !== null || job.doneRanges.length > 0;
    this.log.info(
      { snapshot: job.id, table: name, resumeAfter: job.lastKey, doneAhead: job.doneRanges.length, parallelism: this.readers.length },
      resuming ? 'snapshot resuming' : 'snapshot starting',
    );
    const run: JobRun = { job, name, shape, plan: new ChunkPlan({ lastKey: job.lastKey, doneRanges: job.doneRanges }), started: Date.now(), total: job.rows, readThisRun: 0, recorded: Promise.resolve() };
    // One reader failing stops the others: the job is retried from its recorded progress.
    const stop = new AbortController();
    const onAbort = (): void => stop.abort();
    signal.addEventListener('abort', onAbort, { once: true });
    let failure: unknown;
    try {
      await Promise.all(
        this.readers.map((reader) =>
          this.readChunks(run, reader, stop.signal).catch((err: unknown) => {
            failure ??= err;
            stop.abort();
          }),
        ),
      );
    } finally {
      signal.removeEventListener('abort', onAbort);
    }
    if (failure !== undefined) throw failure;
    if (signal.aborted || !run.plan.complete) return;
    await this.store.finish(job.id, 'done');
    this.log.info({ snapshot: job.id, table: name, rows: run.total }, 'snapshot done');
  }

  /** One reader: takes the next range of the job until none is left. */
  private async readChunks(run: JobRun, reader: pg.ClientBase, signal: AbortSignal): Promise<void> {
    const { job, shape } = run;
    const t = job.table;
    const bounds = { from: job.keyFrom, to: job.keyTo };
    while (!signal.aborted) {
      const range = await run.plan.next((after, cap) => chunkBoundary(reader, t, shape, after, cap, bounds, this.options.chunkSize));
      if (!range || signal.aborted) return;
      const token = `${job.id}:${randomUUID()}`;
      await this.watermark(reader, token, 'low', run.name);
      const rows = await readChunk(reader, t, shape, range.after, range.upper, bounds);
      this.capture.registerChunk(token, { schema: t.schema, table: t.table, columns: shape.columns, keyColumns: shape.key, columnTypes: shape.types, rows });
      const published = this.capture.chunkPublished(token);
      await this.watermark(reader, token, 'high', run.name);
      await untilAborted(published, signal);
      if (signal.aborted) return;
      const progress = run.plan.finish(range);
      run.recorded = run.recorded.then(() => this.store.chunkDone(job.id, progress, rows.length));
      await run.recorded;
      run.total += rows.length;
      run.readThisRun += rows.length;
      const secs = (Date.now() - run.started) / 1000;
      this.log.info({ snapshot: job.id, table: run.name, rows: run.total, rowsPerSecond: Math.round(run.readThisRun / Math.max(secs, 0.001)) }, 'snapshot progress');
    }
  }

  private async watermark(client: pg.ClientBase, token: string, mark: 'low' | 'high', table: string): Promise<void> {
    const content: WatermarkMessage = { token, mark, table };
    await client.query('SELECT pg_logical_emit_message(true, $1, $2)', [SNAPSHOT_PREFIX, JSON.stringify(content)]);
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
