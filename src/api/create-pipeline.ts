import { validateConfig } from '../config/load.js';
import type { SynclineConfig } from '../config/schema.js';
import { errorMessage } from '../core/errors.js';
import type { DeadLetter, DeadLetterFilter } from '../dlq/dead-letter-queue.js';
import type { ReplayResult } from '../dlq/replay.js';
import { silentLogger, type Logger } from '../log/logger.js';
import { Metrics } from '../metrics/metrics.js';
import type { HttpServer } from '../http/server.js';
import type { Stream } from '../stream/stream.js';
import { TransformingSink, type AppliedBatch } from '../transforms/transforming-sink.js';
import { embeddedStreamPath, openStream } from '../compose/stream.js';
import { captureWithRestarts } from './capture-restarts.js';
import { isValidatedConfig } from './config.js';
import { pipelineReadiness, startMonitoring, type Role } from './monitoring.js';
import { observedDeadLetters, unowned, watchConsumer } from './part-views.js';
import type { PipelineEvents, PipelineOptions, PipelineState, PipelineStatus } from './pipeline-types.js';

/**
 * Creates a pipeline: capture (replication slot → stream), apply (stream → sink), or both.
 * Nothing happens until `start()`. It never installs signal handlers: call `stop()` from
 * yours.
 *
 * @example
 * const pipeline = createPipeline({ config: loadConfig('sync.yaml'), sink: new MySink(), transforms: [dropTables('audit')], role: 'run' });
 * await pipeline.start();
 * process.once('SIGTERM', () => void pipeline.stop());
 */
export function createPipeline(options: PipelineOptions): Pipeline {
  const config = isValidatedConfig(options.config) ? options.config : validateConfig(options.config);
  // `stream.path` resolved once against baseDir: the stream and its local schema file (typed formats) are found there.
  const resolved = options.baseDir === undefined ? config : { ...config, stream: { ...config.stream, path: embeddedStreamPath(config, options.baseDir) } };
  return new Pipeline(resolved, options);
}

type Listener<E extends keyof PipelineEvents> = PipelineEvents[E];

/** A running (or runnable) pipeline; made by createPipeline. */
export class Pipeline {
  /** Every `sync_*` metric of this pipeline (`metrics.registry.metrics()` is the Prometheus text). */
  readonly metrics: Metrics;
  readonly role: Role;
  /** Settles when the pipeline has ended: resolves after stop(), rejects when a part failed. */
  readonly done: Promise<void>;

  private readonly log: Logger;
  private readonly abort = new AbortController();
  private readonly listeners: { [E in keyof PipelineEvents]: Set<Listener<E>> } = { applied: new Set(), deadLettered: new Set(), error: new Set() };
  private state: PipelineState = 'idle';
  private captureState: PipelineStatus['capture'];
  private applyState: PipelineStatus['apply'];
  private counts = { applied: 0, stale: 0, dropped: 0, deadLettered: 0 };
  private lastAppliedAt: Date | undefined;
  private failure: unknown;
  private server: HttpServer | undefined;
  private stream: Stream | undefined;
  private started: Promise<void> | undefined;
  private resolveDone!: () => void;
  private rejectDone!: (err: unknown) => void;

  /** @internal Use createPipeline. */
  constructor(
    private readonly config: SynclineConfig,
    private readonly options: Omit<PipelineOptions, 'config'>,
  ) {
    this.metrics = options.metrics ?? new Metrics();
    this.role = options.role ?? 'run';
    this.log = options.logger ?? silentLogger();
    if (this.role !== 'apply') this.captureState = 'starting';
    if (this.role !== 'capture') this.applyState = 'starting';
    this.done = new Promise<void>((resolve, reject) => {
      this.resolveDone = resolve;
      this.rejectDone = reject;
    });
    // Callers that only await start() or stop() must not see an unhandled rejection.
    this.done.catch(() => undefined);
  }

  /**
   * Opens the stream and starts the parts of the role. Resolves once capture streams from
   * the slot (the server accepted START_REPLICATION; or waits as standby for another capture
   * of the slot) and apply consumes; also when stop() is called before that. Rejects with the error when a part fails first (the pipeline has
   * then stopped and closed everything). Call once.
   */
  start(): Promise<void> {
    this.started ??= this.run();
    return this.started;
  }

  /**
   * Drains and stops, as SIGTERM does for `syncline run`: in-flight batches finish and their
   * positions are stored; then the stream, the sink and the monitoring server are closed.
   * Resolves when everything is closed (also when a part had failed).
   */
  async stop(): Promise<void> {
    if (this.state === 'idle') {
      // Never started: start() will resolve at once.
      this.abort.abort();
      this.state = 'stopped';
      this.resolveDone();
      return;
    }
    if (this.state === 'starting' || this.state === 'running') this.state = 'stopping';
    this.abort.abort();
    await this.done.catch(() => undefined);
  }

  /** State and counters (applied, stale, dropped, dead-lettered) since start. */
  status(): PipelineStatus {
    const s: PipelineStatus = { state: this.state, role: this.role, ...this.counts };
    if (this.captureState) s.capture = this.captureState;
    if (this.applyState) s.apply = this.applyState;
    if (this.lastAppliedAt) s.lastAppliedAt = this.lastAppliedAt;
    if (this.server) s.monitoringUrl = this.server.url;
    if (this.failure !== undefined) s.error = errorMessage(this.failure);
    return s;
  }

  /**
   * Replays dead-lettered changes (those matching `filter`, oldest first) through this
   * pipeline's transforms and sink, as `syncline dlq replay` does for the configured sink;
   * the changes the sink accepts leave the queue. Works whether or not the pipeline runs.
   */
  async replayDeadLetters(filter: DeadLetterFilter = {}): Promise<ReplayResult> {
    const { openSink } = await import('../compose/sink.js');
    const { replayDeadLetterQueue } = await import('../ops/replay-dead-letters.js');
    const own = this.options.sink;
    return replayDeadLetterQueue(this.config, filter, new TransformingSink(openSink(this.config, own ? unowned(own) : undefined), this.options.transforms ?? []));
  }

  /** Adds a listener. Listener errors are logged, never thrown into the pipeline. */
  on<E extends keyof PipelineEvents>(event: E, listener: PipelineEvents[E]): this {
    this.listeners[event].add(listener);
    return this;
  }

  /** Removes a listener added with on(). */
  off<E extends keyof PipelineEvents>(event: E, listener: PipelineEvents[E]): this {
    this.listeners[event].delete(listener);
    return this;
  }

  private emit<E extends keyof PipelineEvents>(event: E, ...args: Parameters<PipelineEvents[E]>): void {
    for (const l of this.listeners[event]) {
      try {
        (l as (...a: Parameters<PipelineEvents[E]>) => void)(...args);
      } catch (err) {
        this.log.warn({ err: errorMessage(err), event }, 'a pipeline event listener threw');
      }
    }
  }

  private async run(): Promise<void> {
    if (this.state === 'stopped' && this.abort.signal.aborted && this.stream === undefined) return;
    if (this.state !== 'idle') throw new Error(`pipeline cannot start: it is ${this.state}`);
    this.state = 'starting';
    const { config, role, log, metrics } = this;
    const signal = this.abort.signal;
    const custom = this.options.sink !== undefined;
    const transforms = this.options.transforms ?? [];
    let markCapture!: () => void;
    let markApply!: () => void;
    const captureRunning = new Promise<void>((r) => (markCapture = r));
    const applyRunning = new Promise<void>((r) => (markApply = r));
    const parts: Promise<void>[] = [];
    // The sink adapters and apply are loaded only by the roles that apply: a capture process
    // starts without the sinks' client libraries (see cli/main.ts on start-up).
    let applying: ApplyModules | undefined;
    try {
      if (role !== 'capture') applying = await applyModules();
      const openSink = applying?.openSink;
      if (config.monitoring.enabled) {
        // Dashboard replays go through the same transforms and sink as apply.
        const own = this.options.sink;
        const replaySink = own ? () => new TransformingSink(unowned(own), transforms) : transforms.length > 0 && openSink ? () => new TransformingSink(openSink(config), transforms) : undefined;
        this.server = await startMonitoring(config, role, metrics, log, pipelineReadiness(config, role, metrics, () => this.stream, custom), replaySink);
      }
      // Before capture starts: a source moved to another cluster is refused before anything moves.
      if (applying && !custom && !signal.aborted) await applying.checkSourceServer(config, signal, log);
      if (!signal.aborted) this.stream = await openStream(config, this.options.baseDir);
    } catch (err) {
      await this.finish([], err);
      throw err;
    }
    const stream = this.stream;
    if (signal.aborted || !stream) return this.finish([]);
    const guard = (p: Promise<void>, part: 'capture' | 'apply'): Promise<void> =>
      p.then(
        () => {
          if (part === 'capture') this.captureState = 'stopped';
          else this.applyState = 'stopped';
        },
        (err: unknown) => {
          if (part === 'capture') this.captureState = 'failed';
          else this.applyState = 'failed';
          log.error({ err: errorMessage(err) }, `${part} failed`);
          this.emit('error', asError(err), part);
          this.abort.abort();
          throw err;
        },
      );
    if (role !== 'apply') {
      const onStreaming = (): void => {
        this.captureState = 'streaming';
        markCapture();
      };
      const onStandby = (): void => {
        this.captureState = 'standby';
        markCapture();
      };
      parts.push(guard(captureWithRestarts(config, stream, metrics, log, signal, { onStreaming, onStandby }), 'capture'));
    } else markCapture();
    if (applying) {
      const { openSink, runApply } = applying;
      try {
        const sink = new TransformingSink(openSink(config, this.options.sink, this.options.resolveConflict, log), transforms, { onApplied: (b) => this.applied(b) });
        const observed = watchConsumer(stream, () => {
          this.applyState = 'consuming';
          markApply();
        });
        parts.push(guard(runApply(config, observed, metrics, log, signal, this.options.from, { sink, deadLetters: (q) => observedDeadLetters(q, (letters) => this.deadLettered(letters)) }), 'apply'));
      } catch (err) {
        // The sink or its mapping could not even be made: stop capture too.
        log.error({ err: errorMessage(err) }, 'apply failed');
        this.abort.abort();
        await this.finish(parts, err).catch(() => undefined);
        throw err;
      }
    } else markApply();
    const ended = this.finish(parts);
    const outcome = await Promise.race([
      Promise.all([captureRunning, applyRunning]).then(() => 'running' as const),
      ended.then(
        () => 'ended' as const,
        () => 'failed' as const,
      ),
    ]);
    if (outcome === 'failed') throw this.failure;
    if (outcome === 'running' && this.state === 'starting') this.state = 'running';
  }

  /** Waits for `parts`, closes the stream and the server, and settles `done`. */
  private async finish(parts: Promise<void>[], error?: unknown): Promise<void> {
    const results = await Promise.allSettled(parts);
    const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    const err = error ?? failed?.reason;
    await this.stream?.close().catch((e: unknown) => log(this.log, e, 'closing the stream failed'));
    await this.server?.close().catch((e: unknown) => log(this.log, e, 'closing the monitoring server failed'));
    if (err !== undefined) {
      this.failure = err;
      this.state = 'failed';
      if (error !== undefined) this.emit('error', asError(error), 'pipeline');
      this.rejectDone(err);
      throw err;
    }
    this.state = 'stopped';
    this.resolveDone();
  }

  private deadLettered(letters: readonly DeadLetter[]): void {
    this.counts.deadLettered += letters.length;
    this.emit('deadLettered', letters);
  }

  private applied(batch: AppliedBatch): void {
    this.counts.applied += batch.outcome.applied;
    this.counts.stale += batch.outcome.stale;
    this.counts.dropped += batch.dropped;
    this.lastAppliedAt = new Date();
    this.emit('applied', batch);
  }
}

/** What run and apply load on top of capture's modules. */
interface ApplyModules {
  openSink: typeof import('../compose/sink.js').openSink;
  runApply: typeof import('../compose/apply.js').runApply;
  checkSourceServer: typeof import('../compose/source-server.js').checkSourceServer;
}

async function applyModules(): Promise<ApplyModules> {
  const [{ openSink }, { runApply }, { checkSourceServer }] = await Promise.all([import('../compose/sink.js'), import('../compose/apply.js'), import('../compose/source-server.js')]);
  return { openSink, runApply, checkSourceServer };
}

function asError(err: unknown): Error {
  return err instanceof Error ? err : new Error(String(err));
}

function log(logger: Logger, err: unknown, what: string): void {
  logger.warn({ err: errorMessage(err) }, what);
}
