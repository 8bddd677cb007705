import client from 'prom-client';
import { parseLsn } from '../core/lsn.js';
import { tableLabelOf, type ChangeEvent } from '../core/change.js';
import type { AppliedCounts, PipelineEvents } from '../core/events.js';
import { retentionGapCounts } from '../stream/stream.js';
import { LateGauge } from './late-gauge.js';

/**
 * Every metric syncline exports, in one registry per pipeline (so tests and library users
 * can run several pipelines in one process). Names are a contract: see the README.
 */
export class Metrics {
  readonly registry = new client.Registry();

  readonly lagSeconds = new client.Gauge({
    name: 'sync_lag_seconds',
    help: 'Seconds the target is behind the source: age of the oldest change of the batch being applied (growing until it commits), else of the last applied batch, and at least sync_capture_lag_seconds where capture runs in the same process; 0 when caught up',
    labelNames: ['table'],
    registers: [this.registry],
    // Evaluated at scrape time: a batch that is slow, retried or stuck shows a growing lag
    // instead of the value of the last batch that got through. Capture's lag is a floor: while
    // capture reads a backlog apply has nothing to do, and its own lag alone read 0.
    collect: () => {
      const now = this.now();
      const floor = this.captureLag ?? 0;
      for (const [table, secs] of this.applyLag) if (!this.applyingSince.has(table)) this.lagSeconds.set({ table }, Math.max(secs, floor));
      for (const [table, since] of this.applyingSince) this.lagSeconds.set({ table }, Math.max(0, (now - since) / 1000, floor));
      if (this.captureLag === undefined) return;
      if (this.capturedLast) this.capturedTables.add(this.capturedLast.label);
      for (const table of this.capturedTables) if (!this.applyLag.has(table) && !this.applyingSince.has(table)) this.lagSeconds.set({ table }, floor);
    },
  });
  readonly captureLagSeconds = new LateGauge(
    this.registry,
    'sync_capture_lag_seconds',
    'Seconds since the source wrote the oldest WAL capture has not yet stored durably in the stream (to the second; 0 when caught up); absent until this process measured it (capture)',
  );
  readonly duplicateRate = new client.Gauge({
    name: 'sync_duplicate_rate',
    help: 'Share of consumed changes skipped as duplicate or stale over the last 60 s',
    registers: [this.registry],
    // Evaluated at scrape time too: once apply goes idle after a replay, the window empties
    // and the rate returns to 0 instead of staying at the last batch's value.
    collect: () => {
      this.duplicateRate.set(this.window.rate(this.now()));
    },
  });
  readonly deadletterCount = this.gauge('sync_deadletter_count', 'Changes currently in the dead-letter queue');
  readonly tableBlocked = this.gauge('sync_table_blocked', '1 while a table is held: its target does not fit its changes, which wait in the dead-letter queue in order', ['table']);
  readonly deadletterOldestAge = this.gauge('sync_deadletter_oldest_age_seconds', 'Age of the oldest dead-letter entry (0 when empty)');
  readonly captured = new client.Counter({
    name: 'sync_events_captured_total',
    help: 'Changes decoded from the replication slot',
    labelNames: ['table'],
    registers: [this.registry],
    // Counted per change in `capturedPending` (a label lookup per change was a few percent of
    // capture's CPU) and added here, when read.
    collect: () => this.flushCaptured(),
  });
  readonly schemaChanges = this.counter('sync_schema_changes_total', 'New table definitions (a new _schema_version) capture met in the slot: DDL', ['table']);
  readonly published = this.counter('sync_events_published_total', 'Changes durably acknowledged by the stream');
  readonly consumed = this.counter('sync_events_consumed_total', 'Changes read from the stream by apply');
  readonly applied = this.counter('sync_events_applied_total', 'Changes whose effect was written to the sink', ['table']);
  readonly stale = this.counter('sync_events_stale_total', 'Changes skipped by the version gate (not newer than the target row)', ['table']);
  readonly conflicts = this.counter('sync_conflicts_total', 'Writes of one writer to a row another writer wrote last, decided by sink.conflict_strategy', ['table', 'strategy']);
  readonly duplicate = this.counter('sync_events_duplicate_total', 'Changes skipped as already applied (same version as the target)', ['table']);
  readonly retried = this.counter('sync_events_retried_total', 'Apply attempts that failed and were retried');
  readonly deadlettered = this.counter('sync_events_deadlettered_total', 'Changes sent to the dead-letter queue');
  readonly applyBatchSeconds = new client.Histogram({
    name: 'sync_apply_batch_duration_seconds',
    help: 'Time to apply one batch at the sink, including its commit',
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
    registers: [this.registry],
  });
  // Known to one role only: absent from a process until it knows them (see LateGauge), so a
  // capture process exports no sync_apply_lsn and an apply process no sync_capture_lsn.
  readonly captureLsn = new LateGauge(this.registry, 'sync_capture_lsn', 'Slot position confirmed to the source (LSN as a number; exact below 2^53); absent until this process confirmed one (capture)');
  readonly applyLsn = new LateGauge(this.registry, 'sync_apply_lsn', 'Commit LSN of the newest change applied to the sink; absent until this process applied one (apply)');
  readonly slotRetainedWalBytes = new LateGauge(this.registry, 'sync_slot_retained_wal_bytes', 'WAL bytes the source retains for the slot; absent until this process read it (capture)');
  readonly driftRows = this.gauge('sync_drift_rows', 'Rows that differed between source and target at the last verify', ['table']);
  readonly verifyLastSuccess = this.gauge('sync_verify_last_success_timestamp', 'Unix time (s) the last verification of every table finished (drift or not); 0 before the first');
  readonly consumerLag = new LateGauge(this.registry, 'sync_stream_consumer_lag', 'Records in the stream not yet consumed by this group; absent until this process measured it (apply)');
  readonly retentionGaps = new client.Counter({
    name: 'sync_stream_retention_gap_total',
    help: 'Times a consumer was refused because retention had deleted records it had not consumed yet (apply stops: the target misses changes)',
    labelNames: ['partition'],
    registers: [this.registry],
    // The stream adapters raise RetentionGapError and tally it process-wide; each scrape
    // adds what was raised since this registry was made (or last scraped).
    collect: () => {
      for (const [partition, count] of retentionGapCounts()) {
        const seen = this.retentionGapsSeen.get(partition) ?? 0;
        if (count > seen) this.retentionGaps.inc({ partition: String(partition) }, count - seen);
        this.retentionGapsSeen.set(partition, count);
      }
    },
  });

  private readonly window = new SlidingRate(60);
  /** Per partition, the process-wide retention gap count already added to this registry. */
  private readonly retentionGapsSeen = new Map<number, number>(retentionGapCounts());
  /** Changes captured per table label, not yet added to `captured`. */
  private readonly capturedPending = new Map<string, number>();
  /** The table of the last captured change, whose count runs in `capturedLastCount`. */
  private capturedLast: { schema: string; table: string; label: string } | undefined;
  private capturedLastCount = 0;
  /** Per table, commit time (ms) of the oldest change in the batch apply is writing now. */
  private readonly applyingSince = new Map<string, number>();
  /** Per table, apply's lag at its last batch's commit (0 once caught up). */
  private readonly applyLag = new Map<string, number>();
  /** Capture's lag (sync_capture_lag_seconds) when this process captures. */
  private captureLag: number | undefined;
  /** Tables this process captured changes of (their sync_lag_seconds is at least capture's lag). */
  private readonly capturedTables = new Set<string>();

  /** `now` is the wall clock that source commit times are compared with. */
  constructor(private readonly now: () => number = Date.now) {
    client.collectDefaultMetrics({ register: this.registry, prefix: 'sync_process_' });
    this.duplicateRate.set(0);
    this.deadletterCount.set(0);
  }

  /** Feeds `sync_duplicate_rate`: consumed changes and how many of them were skipped. */
  recordConsumed(consumed: number, skipped: number, nowMs = Date.now()): void {
    this.window.add(consumed, skipped, nowMs);
    this.duplicateRate.set(this.window.rate(nowMs));
  }

  /**
   * Feeds `sync_lag_seconds`. A batch holding changes of these tables (oldest commit time
   * per table, in ms) is being applied: until `lagApplied`, each scrape reports its age.
   */
  lagApplying(oldestCommitByTable: ReadonlyMap<string, number>): void {
    for (const [table, since] of oldestCommitByTable) this.applyingSince.set(table, since);
  }

  /** The batch committed: its tables keep the age its oldest change had at that moment. */
  lagApplied(nowMs = this.now()): void {
    for (const [table, since] of this.applyingSince) this.setApplyLag(table, Math.max(0, (nowMs - since) / 1000));
    this.applyingSince.clear();
  }

  /** Nothing left to read: these tables are 0 s behind (as far as apply knows). */
  lagCaughtUp(tables: Iterable<string>): void {
    this.applyingSince.clear();
    for (const table of tables) this.setApplyLag(table, 0);
  }

  /** Feeds `sync_capture_lag_seconds` (see WalClock); a floor of this process's `sync_lag_seconds`. */
  setCaptureLag(seconds: number): void {
    this.captureLag = seconds;
    this.captureLagSeconds.set(seconds);
  }

  /**
   * This process no longer captures (another capture leads the slot, this one is its standby):
   * `sync_capture_lag_seconds` is absent again and no longer a floor of `sync_lag_seconds`.
   * Else the value it had when it lost the slot stayed for as long as the process ran.
   */
  clearCaptureLag(): void {
    if (this.captureLag === undefined) return;
    this.captureLag = undefined;
    this.captureLagSeconds.withdraw();
    for (const [table, secs] of this.applyLag) if (!this.applyingSince.has(table)) this.lagSeconds.set({ table }, secs);
    // Tables only the floor gave a value (captured here, never applied): no value of their own.
    if (this.capturedLast) this.capturedTables.add(this.capturedLast.label);
    for (const table of this.capturedTables) if (!this.applyLag.has(table) && !this.applyingSince.has(table)) this.lagSeconds.remove({ table });
  }

  private setApplyLag(table: string, seconds: number): void {
    this.applyLag.set(table, seconds);
    this.lagSeconds.set({ table }, Math.max(seconds, this.captureLag ?? 0));
  }

  /**
   * Feeds these metrics from a pipeline's events (capture's, apply's, or both); returns the
   * function that stops it. Every table label is `schema.table`. `tables`: the tables apply
   * is configured with, known up front: their applied/stale/duplicate series start at 0 and
   * their `sync_lag_seconds` reads 0 once apply finds nothing to read, even when nothing
   * arrived since the start (else an idle pipeline after a restart had no sample of them).
   */
  subscribe(events: PipelineEvents, tables: Iterable<string> = []): () => void {
    /** Tables apply has written or was configured with, for `lagCaughtUp`. */
    const tablesSeen = new Set<string>(tables);
    for (const table of tablesSeen) {
      this.applied.inc({ table }, 0);
      this.stale.inc({ table }, 0);
      this.duplicate.inc({ table }, 0);
    }
    const written = (outcome: AppliedCounts): void => {
      for (const [table, counts] of outcome.byTable) {
        this.applied.inc({ table }, counts.applied);
        // Also by 0: a table apply has written shows its stale and duplicate series from the
        // start (at 0), so `rate()` and a grep of /metrics find them before the first replay.
        this.stale.inc({ table }, counts.stale);
        this.duplicate.inc({ table }, 0);
      }
      for (const k of outcome.conflicts ?? []) this.conflicts.inc({ table: k.table, strategy: k.strategy }, k.count);
    };
    const off = [
      events.on('capture:change', (e) => this.countCaptured(e.schema, e.table)),
      events.on('capture:batch:published', ({ changes }) => this.published.inc(changes)),
      events.on('capture:confirmed', ({ lsn }) => this.captureLsn.set(Number(lsn))),
      events.on('capture:schema:changed', ({ table }) => this.schemaChanges.inc({ table })),
      events.on('apply:batch:started', ({ records, changes }) => {
        this.consumed.inc(records);
        // Until this batch commits, every scrape reports the age of its oldest change per table:
        // lag grows while apply is slow, retrying or stuck rather than showing the last batch.
        const oldest = new Map<string, number>();
        // A transaction's changes come in runs of one table and one commit time: parsed once a run.
        let last: ChangeEvent | undefined;
        for (const c of changes) {
          if (last && c.commit_ts === last.commit_ts && c.table === last.table && c.schema === last.schema) continue;
          last = c;
          const table = tableLabelOf(c);
          const ts = Date.parse(c.commit_ts);
          if (ts < (oldest.get(table) ?? Infinity)) oldest.set(table, ts); // false for an unparsable time
          tablesSeen.add(table);
        }
        this.lagApplying(oldest);
      }),
      events.on('apply:duplicate', (c) => this.duplicate.inc({ table: tableLabelOf(c) })),
      events.on('apply:batch:applied', ({ changes, outcome, records, duplicates, seconds, at }) => {
        this.applyBatchSeconds.observe(seconds);
        written(outcome);
        // Changes folded into a newer change to the same key never reach the version gate. In a
        // replayed batch they are duplicates as much as the stale row that absorbed them, so they
        // are attributed in the proportion stale / (applied + stale): exact for the usual all-new
        // or all-replayed batch (without it a pure replay showed ~0.6 instead of 1).
        const gated = outcome.applied + outcome.stale;
        const skipped = duplicates + (gated === 0 ? 0 : outcome.stale + (outcome.superseded * outcome.stale) / gated);
        this.recordConsumed(records, skipped, at);
        // The lag of the batch's oldest change at its commit (no longer growing).
        this.lagApplied(at);
        // The highest commit LSN, not the last change's: a batch interleaves partitions.
        let newest = 0n;
        let last: string | undefined;
        for (const c of changes) {
          if (c.commit_lsn === last) continue; // a transaction's changes share it
          last = c.commit_lsn;
          const lsn = parseLsn(c.commit_lsn);
          if (lsn > newest) newest = lsn;
        }
        if (newest > 0n) this.applyLsn.set(Number(newest));
      }),
      events.on('apply:held:applied', ({ outcome }) => written(outcome)),
      events.on('apply:caught-up', () => this.lagCaughtUp(tablesSeen)),
      events.on('apply:retry', () => this.retried.inc()),
      events.on('apply:dead-lettered', ({ letters }) => this.deadlettered.inc(letters.length)),
      events.on('apply:dead-letters', ({ count, oldestAgeSeconds }) => {
        this.deadletterCount.set(count);
        this.deadletterOldestAge.set(oldestAgeSeconds);
      }),
      events.on('apply:table:held', ({ table }) => this.tableBlocked.set({ table }, 1)),
      events.on('apply:table:released', ({ table }) => this.tableBlocked.set({ table }, 0)),
      events.on('apply:consumer-lag', ({ records }) => this.consumerLag.set(records)),
    ];
    return () => {
      for (const stop of off) stop();
    };
  }

  /** Capture's configured tables show their `sync_events_captured_total` series from the start, at 0. */
  captureTables(tables: Iterable<string>): void {
    for (const table of tables) this.captured.inc({ table }, 0);
  }

  /** One captured change of `schema.table`: changes of one table in a row cost a comparison each. */
  private countCaptured(schema: string, table: string): void {
    const last = this.capturedLast;
    if (last !== undefined && last.schema === schema && last.table === table) {
      this.capturedLastCount++;
      return;
    }
    this.parkCapturedCount();
    this.capturedLast = { schema, table, label: tableLabelOf({ schema, table }) };
    this.capturedLastCount = 1;
  }

  private parkCapturedCount(): void {
    if (this.capturedLast === undefined || this.capturedLastCount === 0) return;
    const label = this.capturedLast.label;
    this.capturedPending.set(label, (this.capturedPending.get(label) ?? 0) + this.capturedLastCount);
    this.capturedTables.add(label);
    this.capturedLastCount = 0;
  }

  private flushCaptured(): void {
    this.parkCapturedCount();
    for (const [table, count] of this.capturedPending) this.captured.inc({ table }, count);
    this.capturedPending.clear();
  }

  private gauge<L extends string>(name: string, help: string, labelNames: L[] = []): client.Gauge<L> {
    return new client.Gauge({ name, help, labelNames, registers: [this.registry] });
  }

  private counter<L extends string>(name: string, help: string, labelNames: L[] = []): client.Counter<L> {
    return new client.Counter({ name, help, labelNames, registers: [this.registry] });
  }
}

/** Per-second buckets over a window; rate = skipped / consumed inside the window. */
export class SlidingRate {
  private readonly consumed: number[];
  private readonly skipped: number[];
  private readonly seconds: number[];

  constructor(private readonly windowSeconds: number) {
    this.consumed = new Array<number>(windowSeconds).fill(0);
    this.skipped = new Array<number>(windowSeconds).fill(0);
    this.seconds = new Array<number>(windowSeconds).fill(-1);
  }

  add(consumed: number, skipped: number, nowMs: number): void {
    const s = Math.floor(nowMs / 1000);
    const i = s % this.windowSeconds;
    if (this.seconds[i] !== s) {
      this.seconds[i] = s;
      this.consumed[i] = 0;
      this.skipped[i] = 0;
    }
    this.consumed[i] = (this.consumed[i] ?? 0) + consumed;
    this.skipped[i] = (this.skipped[i] ?? 0) + skipped;
  }

  rate(nowMs: number): number {
    const now = Math.floor(nowMs / 1000);
    let c = 0;
    let k = 0;
    for (let i = 0; i < this.windowSeconds; i++) {
      const s = this.seconds[i] ?? -1;
      if (s > now - this.windowSeconds) {
        c += this.consumed[i] ?? 0;
        k += this.skipped[i] ?? 0;
      }
    }
    return c === 0 ? 0 : k / c;
  }
}
