import { randomUUID } from 'node:crypto';
import type pg from 'pg';
import { systemClock, type Clock } from '../core/clock.js';
import { retry, STOPPED, type RetryPolicy } from '../core/retry.js';
import { errorMessage, isRetriable, PrerequisiteError, SynclineError } from '../core/errors.js';
import { parseLsn } from '../core/lsn.js';
import { isRetriablePgError } from '../core/sqlstate.js';
import { quoteQualified } from '../core/sql.js';
import type { Logger } from '../log/logger.js';
import { chunkBoundary, readChunkInSnapshot, readKeylessTable, tableShape, type TableShape } from './snapshot-reader.js';
import type { SnapshotJob, SnapshotStore } from './snapshot-store.js';
import { ChunkPlan } from './chunk-plan.js';
import { parseReadSnapshot, SNAPSHOT_PREFIX, type ChunkResult, type ChunkSink, type WatermarkMessage } from '../core/snapshot.js';


export interface SnapshotRunnerOptions {
  chunkSize: number;
  /** How often to look for new snapshot requests when idle. */
  pollMs: number;
  /**
   * Opens a reader connection with the readers' output settings: the second connection for
   * reading a keyless table when there is only one reader (the first holds the brief lock of
   * its cut), and the replacement of a reader whose connection ended.
   */
  connect?: () => Promise<pg.Client>;
  /** How long a keyless table's cut waits for the table's running writers. Default 1000. */
  lockTimeoutMs?: number;
  /** Default: the system clock. */
  clock?: Clock;
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
  private readonly clock: Clock;
  /**
   * One per chunk read in parallel, with the replication connection's output settings; each
   * also emits its chunks' watermarks, so its read starts after its low watermark committed.
   */
  private readonly readers: pg.ClientBase[];
  /** Readers whose connection ended (the server or something between closed it). */
  private readonly ended = new Set<pg.ClientBase>();
  /** Connections this runner opened in place of ended readers: it ends them when run() ends. */
  private readonly opened: pg.Client[] = [];

  constructor(
    readers: readonly pg.ClientBase[],
    private readonly store: SnapshotStore,
    private readonly capture: ChunkSink,
    private readonly log: Logger,
    private readonly options: SnapshotRunnerOptions,
  ) {
    if (readers.length === 0) throw new Error('SnapshotRunner needs at least one reader connection');
    this.clock = options.clock ?? systemClock;
    this.readers = [...readers];
    for (const reader of this.readers) this.watch(reader);
  }

  private watch(reader: pg.ClientBase): void {
    reader.once('end', () => this.ended.add(reader));
  }

  /**
   * Replaces readers whose connection ended since the last job: the readers sit idle between
   * jobs for hours, and `idle_session_timeout`, a firewall's idle cut or a DBA's
   * pg_terminate_backend ends them. Before, every later snapshot (`syncline snapshot`,
   * `repair`) failed on the closed connection until capture restarted. False when a
   * replacement could not connect (the job waits for the next round).
   */
  private async reviveReaders(): Promise<boolean> {
    if (this.ended.size === 0) return true;
    if (!this.options.connect) return true; // nothing to reconnect with: the job fails and says why
    for (let i = 0; i < this.readers.length; i++) {
      const reader = this.readers[i] as pg.ClientBase;
      if (!this.ended.has(reader)) continue;
      try {
        const fresh = await this.options.connect();
        this.opened.push(fresh);
        this.watch(fresh);
        this.readers[i] = fresh;
        this.ended.delete(reader);
        this.log.info('a snapshot reader connection had ended; connected a new one');
      } catch (err) {
        this.log.warn({ err: errorMessage(err) }, 'a snapshot reader connection had ended and a new one could not connect; snapshots wait');
        return false;
      }
    }
    return true;
  }

  /**
   * Before capture reads its first change: a keyless table whose snapshot job is still
   * running was being read when capture last stopped, so its reset and part of its rows may
   * be in the stream; capture holds its changes until the job's next cut.
   */
  async holdInterrupted(): Promise<void> {
    for (const job of await this.store.running()) {
      const shape = await tableShape(this.readers[0] as pg.ClientBase, job.table).catch((err: unknown) => {
        // A dropped table has no changes to hold; its job fails when run.
        if (err instanceof PrerequisiteError) return undefined;
        throw err;
      });
      if (shape && shape.key.length === 0) this.capture.keylessInterrupted(`${job.table.schema}.${job.table.table}`);
    }
  }

  async run(signal: AbortSignal): Promise<void> {
    try {
      await this.runJobs(signal);
    } finally {
      await Promise.all(this.opened.map((c) => c.end().catch(() => undefined)));
    }
  }

  private async runJobs(signal: AbortSignal): Promise<void> {
    while (!signal.aborted) {
      let job: SnapshotJob | undefined;
      try {
        this.capture.setSnapshotting(await this.store.unfinishedTables());
        if (await this.reviveReaders()) job = await this.store.next();
      } catch (err) {
        this.log.warn({ err: errorMessage(err) }, 'could not read snapshot jobs');
      }
      if (!job) {
        await this.clock.sleep(this.options.pollMs, signal);
        continue;
      }
      try {
        await this.runJob(job, signal);
      } catch (err) {
        if (signal.aborted) return;
        // A reader's connection that ended under the job is connected again before the next round.
        if (isRetriable(err) || (this.ended.size > 0 && this.options.connect)) {
          // Not retried in place: the next round reads the job again, with the progress its
          // finished chunks recorded, and resumes after them.
          this.log.warn({ err: errorMessage(err), snapshot: job.id }, 'snapshot chunk failed; retrying');
          await this.clock.sleep(1000, signal);
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
    // Keyless when capture started (held as interrupted), keyed now: it will not cut again.
    if (shape.key.length > 0) this.capture.keyed(name);
    if (!(await this.store.markRunning(job.id))) return;
    const resuming = job.lastKey !== null || job.doneRanges.length > 0;
    this.log.info(
      { snapshot: job.id, table: name, resumeAfter: job.lastKey, doneAhead: job.doneRanges.length, parallelism: this.readers.length },
      resuming ? 'snapshot resuming' : 'snapshot starting',
    );
    const run: JobRun = { job, name, shape, plan: new ChunkPlan({ lastKey: job.lastKey, doneRanges: job.doneRanges }), started: Date.now(), total: job.rows, readThisRun: 0, recorded: Promise.resolve() };
    if (shape.key.length === 0) {
      const read = await this.readKeyless(run, signal);
      if (read === 'done') {
        await this.store.finish(job.id, 'done');
        this.log.info({ snapshot: job.id, table: name, rows: run.total }, 'snapshot done');
      } else if (read === 'cancelled') this.log.warn({ snapshot: job.id, table: name }, 'snapshot cancelled');
      return;
    }
    // One reader failing stops the others: the job is retried from its recorded progress.
    const stop = new AbortController();
    const onAbort = (): void => stop.abort();
    signal.addEventListener('abort', onAbort, { once: true });
    // Aborted while the job was being set up (its shape read, marked running): no 'abort'
    // event comes any more, and the readers would wait for a capture that has stopped.
    if (signal.aborted) stop.abort();
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
    if (failure === CANCELLED) {
      this.log.warn({ snapshot: job.id, table: name, rows: run.total }, 'snapshot cancelled');
      return;
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
      const rows = await retry(
        async () => {
          const token = `${job.id}:${randomUUID()}`;
          let read: Awaited<ReturnType<typeof readChunkInSnapshot>>;
          let published: Promise<ChunkResult>;
          try {
            this.capture.chunkStarting(token);
            await this.watermark(reader, token, 'low', run.name);
            read = await readChunkInSnapshot(reader, t, shape, range.after, range.upper, bounds);
            this.capture.registerChunk(token, { schema: t.schema, table: t.table, columns: shape.columns, keyColumns: shape.key, columnTypes: shape.types, rows: read.rows, snapshot: parseReadSnapshot(read.snapshot) });
            published = this.capture.chunkPublished(token);
            await this.watermark(reader, token, 'high', run.name);
          } catch (err) {
            // No high watermark will come: capture would keep the window its low one opened
            // (every later change to the table in memory) for as long as it runs.
            this.capture.chunkAbandoned(token);
            throw err;
          }
          const result = await untilAborted(published, signal);
          // A transaction that committed before the chunk's low watermark was not yet visible
          // to its read (its commit was being flushed or waited for a synchronous standby).
          if (result === 'retry') throw READ_AGAIN;
          return result === undefined ? undefined : read.rows;
        },
        CHUNK_REREAD,
        {
          signal,
          clock: this.clock,
          retriable: (err) => err === READ_AGAIN,
          onRetry: ({ attempt }) => {
            if (attempt % 10 === 0) this.log.warn({ snapshot: job.id, table: run.name, attempts: attempt }, 'snapshot chunk keeps missing a committed transaction that is not yet visible (synchronous standby not answering?); reading it again');
          },
        },
      );
      if (rows === undefined || rows === STOPPED) return;
      const progress = run.plan.finish(range);
      let running = true;
      run.recorded = run.recorded.then(async () => {
        running = await this.store.chunkDone(job.id, progress, rows.length);
      });
      await run.recorded;
      if (!running) throw CANCELLED;
      run.total += rows.length;
      run.readThisRun += rows.length;
      const secs = (Date.now() - run.started) / 1000;
      this.log.info({ snapshot: job.id, table: run.name, rows: run.total, rowsPerSecond: Math.round(run.readThisRun / Math.max(secs, 0.001)) }, 'snapshot progress');
    }
  }

  /**
   * A keyless table has no key to read it in chunks by, and its target rows cannot be told
   * apart, so it is read whole in one snapshot taken at an exact cut: holding SHARE lock on
   * the table (it waits for the table's running writers, and writers wait for it, briefly),
   * one statement exports the snapshot and emits the cut watermark in the locking
   * transaction. Every change to the table committed before that transaction is in the
   * snapshot, every later one commits after it. A second connection imports the snapshot,
   * the lock is released, and the table is read with a cursor while writes go on. Capture
   * emits a reset of the table versioned at the cut message's LSN at once, then the rows,
   * and holds the table's changes committed after the cut until the rows are out
   * (CaptureSnapshots.keylessCut). Returns 'done' once published; 'cancelled' when the job
   * was cancelled during the read (checked after each batch of rows).
   */
  private async readKeyless(run: JobRun, signal: AbortSignal): Promise<'done' | 'cancelled' | 'stopped'> {
    const { job, shape } = run;
    const t = job.table;
    if (job.keyFrom !== null || job.keyTo !== null) {
      throw new PrerequisiteError(`cannot snapshot a key range of ${run.name}: it has no key`, `snapshot the whole table (without --from/--to)`);
    }
    const locker = this.readers[0] as pg.ClientBase;
    const own = this.readers.length < 2;
    if (own && !this.options.connect) throw new Error('a keyless snapshot needs a second reader connection');
    const reader = own ? await (this.options.connect as () => Promise<pg.Client>)() : (this.readers[1] as pg.ClientBase);
    // The job's own reader is no reader of the pool: its end is seen here, not by reviveReaders.
    let readerEnded = false;
    const onReaderEnd = (): void => {
      readerEnded = true;
    };
    reader.once('end', onReaderEnd);
    const token = `${job.id}:${randomUUID()}`;
    let finished = false;
    // The locking transaction is open (SHARE lock: the table's writers wait) until COMMIT.
    let locking = false;
    try {
      await locker.query('BEGIN ISOLATION LEVEL REPEATABLE READ');
      locking = true;
      let snapshotId: string;
      try {
        await locker.query(`SET LOCAL lock_timeout = ${Math.max(1, Math.floor(this.options.lockTimeoutMs ?? 1000))}`);
        await locker.query(`LOCK TABLE ${quoteQualified(t.schema, t.table)} IN SHARE MODE`);
        // With the cut (same transaction): a job cancelled since it was picked takes none, and
        // once it is taken no cancel stops the read (the reset it emits empties the target's copy).
        if (!(await this.store.markCut(locker, job.id))) {
          locking = false;
          await locker.query('ROLLBACK');
          return 'cancelled';
        }
        const content: WatermarkMessage = { token, mark: 'cut', table: run.name };
        const { rows } = await locker.query<{ id: string; lsn: string; xid: string }>(
          'SELECT pg_export_snapshot() AS id, pg_logical_emit_message(true, $1, $2)::text AS lsn, (txid_current() % 4294967296)::text AS xid',
          [SNAPSHOT_PREFIX, JSON.stringify(content)],
        );
        const cut = rows[0] as { id: string; lsn: string; xid: string };
        snapshotId = cut.id;
        // Capture emits the reset now, before the cut commits: no change to the table can
        // commit in between (the lock), and capture may be a backlog away from the cut.
        this.capture.keylessCut({ schema: t.schema, table: t.table, columns: shape.columns, columnTypes: shape.types }, { token, lsn: parseLsn(cut.lsn), xid: Number(cut.xid) });
      } catch (err) {
        locking = false;
        await locker.query('ROLLBACK').catch(() => undefined);
        // markCut met a cancel committed while it waited for the job's row: no cut.
        if ((err as { code?: unknown } | null)?.code === '40001' && !(await this.store.isRunning(job.id))) return 'cancelled';
        throw lockError(err, run.name);
      }
      let rowsRead = 0;
      let cancelled = false;
      await readKeylessTable(
        reader,
        t,
        shape,
        snapshotId,
        this.options.chunkSize,
        async () => {
          locking = false;
          await locker.query('COMMIT');
        },
        async (rows) => {
          if (signal.aborted) return false;
          rowsRead += rows.length;
          await this.capture.keylessRows(token, rows);
          const secs = (Date.now() - run.started) / 1000;
          this.log.info({ snapshot: job.id, table: run.name, rows: rowsRead, rowsPerSecond: Math.round(rowsRead / Math.max(secs, 0.001)) }, 'snapshot progress');
          cancelled = !(await this.store.isRunning(job.id));
          return !signal.aborted && !cancelled;
        },
      ).catch((err: unknown) => {
        // (The reader's NOWAIT lock refused: a DDL statement queued behind the cut.)
        throw lockError(err, run.name);
      });
      if (signal.aborted) return 'stopped';
      // Part of the rows are out: the table's changes stay held (finally) until the job is
      // seen ended (setSnapshotting), then go out as they are.
      if (cancelled) return 'cancelled';
      finished = true;
      await untilAborted(this.capture.keylessDone(token), signal);
      if (signal.aborted) return 'stopped';
      await this.store.chunkDone(job.id, { lastKey: null, doneRanges: [] }, rowsRead);
      run.total = rowsRead;
      return 'done';
    } catch (err) {
      // Its cut reset the target's copy and part of the rows may be out: failing the job would
      // release the held changes over a target missing the rest. It is read again from a new
      // cut (the held changes wait for it, and its reset makes them stale).
      if (readerEnded || isRetriablePgError(err)) {
        throw new SynclineError('SNAPSHOT_READER_LOST', `snapshot of ${run.name}: the connection reading it ended (${errorMessage(err)}); reading it again from a new cut`, { retriable: true, cause: err });
      }
      throw err;
    } finally {
      reader.removeListener('end', onReaderEnd);
      // The read could not start (the snapshot's import failed, the table could not be
      // locked): the cut's lock must not outlive the attempt, or the table's writers wait.
      if (locking) await locker.query('ROLLBACK').catch(() => undefined);
      // Not all rows were handed over: the table's changes stay held; the job reads again.
      if (!finished) await this.capture.keylessDone(token, false);
      if (own) await (reader as pg.Client).end().catch(() => undefined);
    }
  }

  private async watermark(client: pg.ClientBase, token: string, mark: 'low' | 'high', table: string): Promise<void> {
    const content: WatermarkMessage = { token, mark, table };
    await client.query('SELECT pg_logical_emit_message(true, $1, $2)', [SNAPSHOT_PREFIX, JSON.stringify(content)]);
  }
}

/** A chunk is read again until no transaction committed before its window is missing from it. */
const CHUNK_REREAD: RetryPolicy = { maxAttempts: Number.MAX_SAFE_INTEGER, baseMs: 50, maxMs: 2000, jitter: false };
/** Thrown by a reader when the job was cancelled (`syncline snapshot --cancel`). */
const CANCELLED = new Error('snapshot job cancelled');
/** Thrown inside a chunk's attempt when it must be read again. */
const READ_AGAIN = new Error('snapshot chunk must be read again');

/**
 * A lock timeout of a keyless cut is retried: the table's writers were busy, or (the
 * reader's NOWAIT lock) a DDL statement was queued behind the cut.
 */
function lockError(err: unknown, table: string): unknown {
  if ((err as { code?: unknown } | null)?.code !== '55P03') return err;
  return new SynclineError('SNAPSHOT_LOCK_TIMEOUT', `snapshot of ${table}: its writers held it longer than the cut waits (lock_timeout), or a DDL statement was queued behind the cut; trying again`, { retriable: true, cause: err });
}

/** Waits for `p`, or resolves undefined early on abort; the abort listener is removed either way. */
function untilAborted<T>(p: Promise<T>, signal: AbortSignal): Promise<T | undefined> {
  return new Promise((resolve, reject) => {
    if (signal.aborted) return resolve(undefined);
    const onAbort = (): void => resolve(undefined);
    signal.addEventListener('abort', onAbort, { once: true });
    p.then(
      (value) => {
        signal.removeEventListener('abort', onAbort);
        resolve(value);
      },
      (err: unknown) => {
        signal.removeEventListener('abort', onAbort);
        reject(err);
      },
    );
  });
}
