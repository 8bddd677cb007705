import { createHash } from 'node:crypto';
import { readdirSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { serializeQueries } from '../postgres/serial-queries.js';
import type { Row } from '../core/change.js';
import type { Clock } from '../core/clock.js';
import { PrerequisiteError, SynclineError, errorMessage } from '../core/errors.js';
import { formatLsn, parseLsn, type Lsn } from '../core/lsn.js';
import { quoteIdent, quoteQualified, type TableName } from '../core/sql.js';
import type { Logger } from '../log/logger.js';
import { primaryKeys, publicationTables as readPublicationTables, type PrimaryKeys } from './catalog.js';
import { acquireCaptureLeadership } from './leader-lock.js';
import { protocolVersionFor, requireLogicalReplication } from './prerequisites.js';
import { ensurePublication, publishedRelationsSql, publishesSql, unpublished } from './publication.js';
import { startCheck } from './start-check.js';
import type { StateFacts } from './state-facts.js';
import { OUTPUT_SETTINGS, ReplicationStream } from './replication-stream.js';
import { SourceRowReader } from './row-reader.js';
import { SchemaVersionStore } from './schema-version-store.js';
import { ddlHistorySql, installDdlHistory } from './ddl-history.js';
import { ensureSlot, slotInAnotherDatabase, slotNameTaken, slotState, type SlotState } from './slot.js';
import { SnapshotStore } from './snapshot-store.js';
import { PartitionWatch } from './partition-watch.js';
import { queueUnreadTables } from './unread-tables.js';
import { WAL_POSITION_SQL } from './wal-clock.js';

/** How long a capture waits for a slot still held by a walsender that may be dead (kill -9). */
const SLOT_RELEASE_WAIT_MS = 60_000;
const SLOT_RELEASE_POLL_MS = 250;
/** How often the source's WAL position is read for `sync_capture_lag_seconds` (its resolution). */
const WAL_SAMPLE_MS = 1000;

/** What a PostgreSQL source needs: the slot's settings, already taken from the config. */
export interface PostgresSourceOptions {
  connection: pg.ClientConfig;
  slot: string;
  publication: string;
  /** The configured tables; empty: every table of the publication. */
  tables: readonly TableName[];
  createPublication: boolean;
  /** Schema in the source for syncline's own bookkeeping (snapshot jobs, schema versions). */
  stateSchema: string;
  /** Snapshot every published table when the slot is created (`source.snapshot: initial`). */
  initialSnapshot: boolean;
  /** pgoutput protocol version; default the highest the server supports. */
  protocolVersion?: number;
  /** `source.logical_decoding_work_mem` for the walsender, e.g. `64MB`. */
  logicalDecodingWorkMem?: string;
  /** How often the slot's health is read and a heartbeat message written. */
  heartbeatIntervalMs: number;
  /** Heartbeat messages carry this prefix (capture turns them into position advances, not events). */
  heartbeatPrefix: string;
  /** Snapshot reader connections opened by snapshotReaders(). */
  snapshotParallelism: number;
  /** Where streamed transactions spill; default a folder per server, database and slot. */
  spillDir?: string;
  clock: Clock;
  log: Logger;
  /** Each heartbeat's reading of the WAL the slot retains. */
  onSlotHealth?: (state: SlotState) => void;
  /** The source's WAL position, read every second, and when (see WalClock). */
  onWalPosition?: (lsn: Lsn, atMs: number) => void;
  /** Another capture leads the slot; this one waits as its standby. */
  onStandby?: () => void;
  /** The server accepted START_REPLICATION: changes flow from the slot. */
  onStreaming?: () => void;
  /** `source.skip_origins`: on PostgreSQL 16+ the server leaves out changes that carry a replication origin (15: capture drops them). */
  skipOrigins?: boolean;
}

/**
 * A PostgreSQL logical replication source, as capture sees it (capture's `ReplicationSource`:
 * start, acknowledge, pause, resume, close). `open` does the start-up a capture needs before
 * its first byte: wal_level, the publication, leadership of the slot (one capture per slot,
 * the others wait as standby), the snapshot job and schema version tables, the initial
 * snapshot's request, the slot itself and, after a kill -9, the wait for the server to release
 * it. While open it reads the slot's health and writes heartbeats, so an idle slot advances.
 */
export class PostgresSource {
  private heartbeat: NodeJS.Timeout | undefined;
  private walSampler: NodeJS.Timeout | undefined;
  /** Ends start() with a failure found off the replication connection (checkPublished). */
  private fault: ((err: Error) => void) | undefined;
  private readonly rowReader: SourceRowReader;
  /** Set by open when the snapshot job table exists (see partition-watch.ts). */
  private partitions: PartitionWatch | undefined;
  /** The admin connection ended before start() could be failed with it (see adminEnded). */
  private adminLost: Error | undefined;
  /** release() ends the admin connection: that end is no failure. */
  private released = false;

  private constructor(
    private readonly options: PostgresSourceOptions,
    private readonly admin: pg.Client,
    private readonly replication: ReplicationStream,
    /** The slot's confirmed position at start: where streaming resumes. */
    readonly startLsn: Lsn,
    /** The server's WAL position once the slot was ready (any earlier capture of it gone), see CaptureOptions.walAtStart. */
    readonly walAtStart: Lsn,
    /** Primary keys of the source's tables, and which are DEFERRABLE (see catalog.ts). */
    readonly keys: PrimaryKeys,
    /** Where `_schema_version`s are kept across restarts; undefined: in memory only. */
    readonly schemaVersions: SchemaVersionStore | undefined,
    /** The snapshot job table; undefined when it could not be created (snapshots disabled). */
    readonly snapshots: SnapshotStore | undefined,
    readonly spillDir: string,
    /** The snapshot readers, connecting since open (with a snapshot job table). */
    private readers: Promise<pg.Client[]> | undefined,
  ) {
    this.rowReader = new SourceRowReader(options.connection);
    admin.once('end', () => this.adminEnded());
  }

  /**
   * The admin connection ended while capture ran (pg_terminate_backend, a proxy's or
   * firewall's cut): it holds the slot's leadership lock (a standby may take it now) and
   * carries the snapshot jobs, the heartbeat and the publication check, and nothing connects
   * it again. Before, capture streamed on without them: every snapshot job stayed pending or
   * half read for good. Capture fails with a retriable error and starts again (new
   * connections, leadership taken again or waited for, jobs resumed from their progress).
   */
  private adminEnded(): void {
    if (this.released) return;
    const err = new SynclineError(
      'SOURCE_ADMIN_CONNECTION_ENDED',
      "capture's connection to the source for its leadership lock, snapshots and heartbeats ended (terminated by the server or cut on the way): capture starts again to connect it",
      { retriable: true },
    );
    if (this.fault) this.fault(err);
    else this.adminLost = err;
  }

  /**
   * Prepares the source and the slot. Resolves undefined when `signal` aborted while this
   * capture waited as standby; rejects with a PrerequisiteError that names the fix.
   */
  static async open(options: PostgresSourceOptions, signal: AbortSignal): Promise<PostgresSource | undefined> {
    const { log, slot } = options;
    // Shared by flows that do not wait for each other: their queries are queued (serial-queries.ts).
    const admin = serializeQueries(new pg.Client(options.connection));
    admin.on('error', (err) => log.warn({ err: errorMessage(err) }, 'source admin connection error'));
    await admin.connect();
    // Connected ahead, while the rest is prepared on `admin`; ended here if open fails.
    let replication: ReplicationStream | undefined;
    let readers: Promise<pg.Client[]> | undefined;
    try {
      // One query for the checks, the leadership and what exists of the bookkeeping; each
      // step below acts (through its usual path and messages) only on what is missing.
      const check = await startCheck(admin, { tables: options.tables, publication: options.publication, slot, stateSchema: options.stateSchema, lead: true });
      requireLogicalReplication(check.walLevel);
      const { serverVersion } = check;
      let publicationTables: readonly TableName[] | undefined = check.publicationTables;
      let publicationReady = check.publicationInPlace;
      if (!publicationReady) {
        // Created (or refused) now; configured tables it lacks are added below, by the leader,
        // once the slot's jobs say what the tables already published need (skipMadeOutside).
        await ensurePublication(admin, options.publication, options.tables, options.createPublication, { addMissing: false });
        publicationTables = undefined; // it may have been created or altered: read again when needed
      }
      let state = check.state;
      if (!check.leader) {
        const leader = await acquireCaptureLeadership(admin, slot, signal, () => {
          log.info({ slot }, 'standby: another capture leads this slot; taking over when it stops');
          options.onStandby?.();
        });
        if (!leader) {
          await admin.end().catch(() => undefined);
          return undefined;
        }
        // Waited as standby: what was found before may have changed meanwhile.
        const again = await startCheck(admin, { tables: options.tables, publication: options.publication, slot, stateSchema: options.stateSchema, lead: false });
        state = again.state;
        publicationTables = again.publicationTables;
        publicationReady = again.publicationInPlace;
      }
      log.info({ slot }, 'capture leader for this slot');
      const protocolVersion = options.protocolVersion ?? protocolVersionFor(serverVersion);
      const workMem = options.logicalDecodingWorkMem;
      const conn = options.connection;
      replication = new ReplicationStream({
        connection: workMem ? { ...conn, options: `-c logical_decoding_work_mem=${workMem.replace(/\s+/g, '')}` } : conn,
        slot,
        publication: options.publication,
        protocolVersion,
        messages: true,
        streaming: protocolVersion >= 2,
        // skip_origins: 16+ filters at the server; on 15 capture (the ChangeBuilder) does.
        ...(options.skipOrigins && serverVersion >= 160000 ? { origin: 'none' as const } : {}),
      });
      // A failure to connect is start()'s to report (it awaits the same promise).
      replication.connect().catch(() => undefined);
      const snapshots = await prepareSnapshots(admin, options, state);
      if (snapshots) {
        readers = connectReaders(options);
        // Reported to whoever awaits the readers (snapshotReaders), not as an unhandled rejection meanwhile.
        readers.catch(() => undefined);
      }
      const tables = async (): Promise<readonly TableName[]> => (options.tables.length > 0 ? options.tables : (publicationTables ??= await readPublicationTables(admin, options.publication, options.stateSchema)));
      const schemaVersions = await prepareSchemaVersions(admin, options, state, tables, snapshots !== undefined);
      // Read once for both: the slot is created below, after the snapshot's request.
      const slotBefore = await slotState(admin, slot);
      if (slotBefore === undefined && schemaVersions?.recordedBefore) {
        // Not dropped but taken: another pipeline's slot of this name in another database.
        if (await slotInAnotherDatabase(admin, slot)) throw slotNameTaken(slot);
        throw slotDropped(options);
      }
      // A slot capture never streamed from and never queued a job for: made outside syncline
      // (pg_create_logical_replication_slot), or by a start that ended before its jobs.
      const maybeOutside = snapshots !== undefined && slotBefore !== undefined && schemaVersions?.recordedBefore === false;
      // (Under `never` skipMadeOutside's one statement asks for the jobs itself.)
      const madeOutside = maybeOutside && options.initialSnapshot && !(await snapshots.anyJob());
      if (snapshots && options.initialSnapshot && (slotBefore === undefined || madeOutside)) {
        if (madeOutside) {
          // Read like a slot syncline makes (as Debezium's `initial` does with no offsets):
          // the rows its tables held before it are in no change it will send. Taken for a
          // target the operator loaded by hand instead (3115b99), they were skipped, silently
          // lost where nobody had (red17); that load is what `source.snapshot: never` is for.
          log.warn(
            { slot, fix: 'a target loaded by hand from the slot\'s consistent point needs none: cancel the jobs (syncline snapshot --list, then --cancel ID,...) and set source.snapshot: never' },
            'the slot existed before syncline streamed from it: its tables are read by an initial snapshot (source.snapshot: initial)',
          );
        }
        if (!publicationReady) await ensurePublication(admin, options.publication, options.tables, options.createPublication);
        publicationTables = undefined;
        await requestInitialSnapshot(admin, snapshots, options, await tables());
      } else {
        // Before the configured tables are added to the publication: with their jobs in place
        // the slot would pass for syncline's own, and once added (a start that ended before
        // their jobs) they would pass for tables the operator loaded and be skipped.
        if (snapshots && maybeOutside && !options.initialSnapshot) {
          const missing = publicationReady ? [] : await unpublished(admin, options.publication, await tables());
          const added = new Set(missing.map((t) => `${t.schema}.${t.table}`));
          await skipMadeOutside(snapshots, options, (await tables()).filter((t) => !added.has(`${t.schema}.${t.table}`)));
        }
        if (!publicationReady) await addToPublication(admin, snapshots, options);
        publicationTables = undefined;
      }
      const ready = await readySlot(admin, options, signal, slotBefore);
      log.info({ protocolVersion, streaming: protocolVersion >= 2 }, 'pgoutput protocol negotiated');
      const source = new PostgresSource(
        options,
        admin,
        replication,
        ready.confirmedFlush ?? 0n,
        await walPosition(admin),
        await primaryKeys(admin),
        schemaVersions,
        snapshots,
        options.spillDir ?? spillDirFor(conn, slot),
        readers,
      );
      if (snapshots) {
        source.partitions = await preparePartitionWatch(admin, options, state, schemaVersions?.usesDdlHistory === true);
        // Before the first change is read: an ATTACH made while capture was down is seen now.
        await source.watchPartitions();
      }
      source.startHeartbeat();
      return source;
    } catch (err) {
      await admin.end().catch(() => undefined);
      await replication?.close();
      await endReaders(readers);
      throw err;
    }
  }

  start(onData: (chunk: Buffer) => void): Promise<void> {
    const lost = this.adminLost;
    const faulted = new Promise<never>((_, reject) => {
      this.fault = reject;
      if (lost) reject(lost);
    });
    faulted.catch(() => undefined);
    return Promise.race([this.replication.start(onData, this.options.onStreaming), faulted]);
  }

  acknowledge(lsn: Lsn, replyRequested?: boolean): void {
    this.replication.acknowledge(lsn, replyRequested);
  }

  pause(): void {
    this.replication.pause();
  }

  resume(): void {
    this.replication.resume();
  }

  /** Ends the replication connection (capture calls it when it stops); see release(). */
  close(): Promise<void> {
    return this.replication.close();
  }

  /** Reads a row's `columns` by key at the source, once transaction `xid` is visible there (see SourceRowReader). */
  readRow(schema: string, table: string, key: Row, columns: readonly string[], xid?: number): Promise<Row | undefined> {
    return this.rowReader.read(schema, table, key, columns, xid);
  }

  /** Opens a snapshot reader connection, with the replication connection's output settings. */
  connectSnapshotReader(): Promise<pg.Client> {
    return connectReader(this.options);
  }

  /** The pool of `snapshotParallelism` snapshot readers, connected; release() ends them. */
  snapshotReaders(): Promise<pg.Client[]> {
    this.readers ??= connectReaders(this.options);
    return this.readers;
  }

  /** Stops the heartbeat and ends every connection but the replication one. After capture and snapshots ended. */
  async release(): Promise<void> {
    this.released = true;
    if (this.heartbeat) clearInterval(this.heartbeat);
    if (this.walSampler) clearInterval(this.walSampler);
    await endReaders(this.readers);
    await this.rowReader.close();
    await this.admin.end().catch(() => undefined);
  }

  /**
   * Compares the published partitioned tables' partitions with those last recorded: rows of an
   * attached partition are re-read by a snapshot (source.snapshot: never only warns), rows of
   * a detached one are named for repair. Failures are logged; the next heartbeat tries again.
   */
  private async watchPartitions(): Promise<void> {
    const watch = this.partitions;
    if (!watch) return;
    const { log, initialSnapshot } = this.options;
    try {
      const tables = this.options.tables.length > 0 ? this.options.tables : await readPublicationTables(this.admin, this.options.publication, this.options.stateSchema);
      for (const c of await watch.check(tables, initialSnapshot)) {
        const table = `${c.table.schema}.${c.table.table}`;
        if (c.attached.length > 0) {
          if (c.job !== null) log.warn({ table, attached: c.attached, snapshot: c.job }, 'partitions attached: their rows joined the table without a change in the WAL, so the table is re-read by a snapshot');
          else if (!initialSnapshot) log.warn({ table, attached: c.attached, fix: `syncline snapshot ${quoteQualified(c.table.schema, c.table.table)} -c <config>` }, 'partitions attached: their rows joined the table without a change in the WAL; the target lacks them until a snapshot of the table');
        }
        if (c.detached.length > 0) {
          log.warn(
            { table, detached: c.detached, fix: `syncline repair -c <config> --table ${c.table.schema}.${c.table.table}` },
            'partitions detached: their rows left the table without a change in the WAL, so the target keeps them until a repair deletes them',
          );
        }
      }
    } catch (err) {
      log.warn({ err: errorMessage(err) }, 'partition check failed');
    }
  }

  /**
   * Fails capture (start()) when a configured table that exists is no longer in the
   * publication. `ALTER PUBLICATION ... DROP TABLE` while capture runs makes the slot stop
   * sending the table's changes from that point of the WAL, without an error: its updates and
   * deletes went missing at the target while the process ran on, healthy. Adding it back does
   * not bring them (the WAL between is decoded without it), and the next start's snapshot of
   * the table never removes the rows deleted meanwhile: it needs a person, with the fix. A
   * dropped publication needs no check here: the walsender itself fails on it.
   */
  private async checkPublished(): Promise<void> {
    const { tables, publication } = this.options;
    if (tables.length === 0 || !this.fault) return;
    const { rows } = await this.admin.query<{ name: string }>(
      `WITH published AS MATERIALIZED (${publishedRelationsSql('$1')}),
            configured AS (SELECT u.name, to_regclass(u.name) AS rel FROM unnest($2::text[]) AS u(name))
       SELECT c.name FROM configured c
        WHERE c.rel IS NOT NULL AND EXISTS (SELECT 1 FROM pg_catalog.pg_publication WHERE pubname = $1)
          AND NOT ${publishesSql('published', 'c.rel')}`,
      [publication, tables.map((t) => quoteQualified(t.schema, t.table))],
    );
    const missing = tables.filter((t) => rows.some((r) => r.name === quoteQualified(t.schema, t.table)));
    if (missing.length === 0) return;
    const names = missing.map((t) => `${t.schema}.${t.table}`).join(', ');
    const sqlNames = missing.map((t) => quoteQualified(t.schema, t.table)).join(' ');
    this.fault(
      new PrerequisiteError(
        `${missing.length === 1 ? 'table' : 'tables'} ${names} ${missing.length === 1 ? 'was' : 'were'} removed from publication ${publication} while capture ran: the slot does not send ${missing.length === 1 ? 'its' : 'their'} changes made since then`,
        `start syncline again: it adds ${missing.length === 1 ? 'it' : 'them'} back to the publication and re-reads ${missing.length === 1 ? 'it' : 'them'} by a snapshot (with create_publication: false, ALTER PUBLICATION ${quoteIdent(publication)} ADD TABLE ..., then syncline snapshot ${sqlNames} -c <config>); then syncline repair -c <config> ${missing.map((t) => `--table ${t.schema}.${t.table}`).join(' ')} removes the rows deleted meanwhile`,
      ),
    );
  }

  /**
   * Queues a snapshot of the tables added to the publication by hand that were never written
   * since (see queueUnreadTables), under `source.snapshot: initial`, as the first change of
   * one that is written does (SchemaVersionStore).
   */
  private async snapshotUnreadTables(): Promise<void> {
    const { stateSchema, slot, publication, initialSnapshot, log } = this.options;
    if (!this.snapshots || !this.schemaVersions || !initialSnapshot) return;
    for (const u of await queueUnreadTables(this.admin, stateSchema, slot, publication, this.schemaVersions.usesDdlHistory)) {
      log.warn(
        { table: `${u.table.schema}.${u.table.table}`, snapshot: u.job, fix: 'list it in source.slots[0].tables (syncline then keeps it in the publication)' },
        'table in the publication that this slot never read (added to the publication by hand, not written since): its rows are read by a snapshot',
      );
    }
  }

  private startHeartbeat(): void {
    const { slot, log, heartbeatPrefix } = this.options;
    const tick = async (): Promise<void> => {
      try {
        const s = await slotState(this.admin, slot);
        if (s) this.options.onSlotHealth?.(s);
        await this.admin.query('SELECT pg_logical_emit_message(false, $1, $2)', [heartbeatPrefix, new Date(this.options.clock.now()).toISOString()]);
        await this.checkPublished();
        await this.snapshotUnreadTables();
      } catch (err) {
        log.warn({ err: errorMessage(err) }, 'slot health check or heartbeat failed');
      }
      await this.watchPartitions();
    };
    this.heartbeat = setInterval(() => void tick(), this.options.heartbeatIntervalMs);
    // The slot's retained WAL is known now, not only at the first tick (heartbeat_interval_ms later).
    void slotState(this.admin, slot).then(
      (s) => {
        if (s) this.options.onSlotHealth?.(s);
      },
      (err: unknown) => log.warn({ err: errorMessage(err) }, 'slot health check failed'),
    );
    const onWal = this.options.onWalPosition;
    if (!onWal) return;
    // WAL written while no capture ran has no sample: the last checkpoint's redo position and
    // time are one (WAL before it was written before that time). Superusers and pg_monitor
    // may read it; for others the lag of such a backlog starts from this start.
    let sampling = true;
    void this.admin
      .query<{ lsn: string | null; at: string | null }>('SELECT redo_lsn::text AS lsn, (extract(epoch FROM checkpoint_time) * 1000)::bigint::text AS at FROM pg_control_checkpoint()')
      .then(
        ({ rows }) => {
          const r = rows[0];
          if (r?.lsn && r.at) onWal(parseLsn(r.lsn), Number(r.at));
        },
        () => undefined,
      )
      .finally(() => {
        sampling = false;
      });
    this.walSampler = setInterval(() => {
      if (sampling) return; // a slow answer: the next tick samples
      sampling = true;
      this.admin
        .query<{ lsn: string | null }>(WAL_POSITION_SQL)
        .then(
          ({ rows }) => {
            const lsn = rows[0]?.lsn;
            if (lsn) onWal(parseLsn(lsn), this.options.clock.now());
          },
          () => undefined, // the heartbeat reports a source that does not answer
        )
        .finally(() => {
          sampling = false;
        });
    }, WAL_SAMPLE_MS);
  }
}

/** The partition watch (partition-watch.ts), or undefined (with a warning) when its table cannot be created. */
async function preparePartitionWatch(admin: pg.Client, options: PostgresSourceOptions, facts: StateFacts, ddlHistory: boolean): Promise<PartitionWatch | undefined> {
  const watch = new PartitionWatch(admin, options.stateSchema, options.slot, ddlHistory);
  try {
    await watch.prepare(facts);
    return watch;
  } catch (err) {
    options.log.warn(
      { err: errorMessage(err), fix: `GRANT CREATE ON DATABASE ... TO the syncline role, or create ${options.stateSchema}.partition_sets beforehand` },
      'partitions attached to a published table are not noticed: cannot create the partition table in the source',
    );
    return undefined;
  }
}

/** A snapshot reader connection, with the replication connection's output settings. */
async function connectReader(options: PostgresSourceOptions): Promise<pg.Client> {
  const reader = new pg.Client(options.connection);
  reader.on('error', (err) => options.log.warn({ err: errorMessage(err) }, 'snapshot reader connection error'));
  try {
    await reader.connect();
    await reader.query(OUTPUT_SETTINGS);
    return reader;
  } catch (err) {
    await reader.end().catch(() => undefined);
    throw err;
  }
}

/** `snapshotParallelism` readers, connected together; when one fails, the others are ended. */
async function connectReaders(options: PostgresSourceOptions): Promise<pg.Client[]> {
  const results = await Promise.allSettled(Array.from({ length: options.snapshotParallelism }, () => connectReader(options)));
  const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  const readers = results.flatMap((r) => (r.status === 'fulfilled' ? [r.value] : []));
  if (failed) {
    await Promise.all(readers.map((r) => r.end().catch(() => undefined)));
    throw failed.reason;
  }
  return readers;
}

/** Ends the readers of `pool`, if it connected. */
async function endReaders(pool: Promise<pg.Client[]> | undefined): Promise<void> {
  const readers = await (pool ?? Promise.resolve([])).catch(() => []);
  await Promise.all(readers.map((reader) => reader.end().catch(() => undefined)));
}

/**
 * A slot capture streamed from (its definitions are recorded) is missing: someone dropped it,
 * while capture ran or while it was stopped. Made again it would start at the source's WAL of
 * now, and the changes between the old slot's confirmed position and now would be in no slot:
 * an initial snapshot brings inserts and updates back but never removes a row deleted
 * meanwhile (and `source.snapshot: never` brings nothing), so the target would drift without
 * a word. It needs a person, as a lost slot does (ensureSlot), and the same recovery.
 */
function slotDropped(options: PostgresSourceOptions): PrerequisiteError {
  return new PrerequisiteError(
    `replication slot ${options.slot} was dropped after capture streamed from it (its table definitions are in ${options.stateSchema}.schema_versions): the changes since its last confirmed position are in no slot, and a new slot would skip them`,
    'run: syncline resync -c <config> (new slot + snapshot of every table), then syncline run, then syncline repair (removes rows deleted meanwhile)',
  );
}

/**
 * Requested before the slot exists: a crash in between re-requests (skipping tables that
 * already have an unfinished job), never leaves a slot without its snapshot.
 */
async function requestInitialSnapshot(admin: pg.Client, snapshots: SnapshotStore, options: PostgresSourceOptions, tables: readonly TableName[]): Promise<void> {
  // All or none (requestTables): a slot made outside syncline exists before its jobs, and one
  // with a job is taken as queued at the next start. Tables with an unfinished job (a start
  // of a slot syncline makes that ended before creating it) are not queued twice.
  await snapshots.requestTables(tables);
  options.log.info({ tables: tables.map((t) => `${t.schema}.${t.table}`) }, 'initial snapshot requested');
}

/**
 * A slot that exists at a start before capture ever streamed from it (none of its definitions
 * recorded) was made outside syncline, or by a start that stopped before its first change.
 * Under `source.snapshot: never` (a target loaded by hand from the slot's consistent point;
 * under `initial` such a slot is read whole, see open) each table without a job of the slot
 * is recorded as `skipped`, with the command that reads it: without it, capture's
 * first-definition rule (SchemaVersionStore) took every table for one added to the
 * publication by hand, table by table at its first change, and a table never changed never.
 * Only when the slot has no job at all: a slot with jobs is syncline's (or met before), and a
 * table without one joined the publication while syncline was stopped.
 */
async function skipMadeOutside(snapshots: SnapshotStore, options: PostgresSourceOptions, tables: readonly TableName[]): Promise<void> {
  const command = (t: TableName): string => `syncline snapshot ${quoteQualified(t.schema, t.table)} -c <config>`;
  const skipped = await snapshots.skipLoadedByOperator(
    tables,
    (t) => `not read: slot ${options.slot} existed before syncline streamed from it, so the rows already in the table are taken as at the target; to read them: ${command(t)}`,
  );
  if (skipped.length === 0) return;
  options.log.info(
    { slot: options.slot, tables: skipped.map((t) => `${t.schema}.${t.table}`), fix: `to read a table's existing rows: ${command(skipped[0] as TableName)}` },
    'the slot existed before syncline streamed from it: no initial snapshot (the rows already in its tables are taken as at the target)',
  );
}

/**
 * Adds the configured tables the publication lacks and queues their snapshots (or logs the
 * command) in one transaction: a start that ends between the two cannot leave a table
 * published with no job, which the next start would take for one already published before.
 */
async function addToPublication(admin: pg.Client, snapshots: SnapshotStore | undefined, options: PostgresSourceOptions): Promise<void> {
  await admin.query('BEGIN');
  try {
    const added = await ensurePublication(admin, options.publication, options.tables, options.createPublication);
    if (added.length > 0) await snapshotAddedTables(snapshots, options, added);
    await admin.query('COMMIT');
  } catch (err) {
    await admin.query('ROLLBACK').catch(() => undefined);
    throw err;
  }
}

/**
 * Tables added to the publication of an existing slot (listed in `source.slots[].tables`
 * since the last start): the slot sends their changes from now on only, so their rows from
 * before are read by a snapshot under `source.snapshot: initial`, or the operator is given
 * the command. Before, they were added silently and those rows never reached the target.
 */
async function snapshotAddedTables(snapshots: SnapshotStore | undefined, options: PostgresSourceOptions, added: readonly TableName[]): Promise<void> {
  const names = added.map((t) => `${t.schema}.${t.table}`);
  if (snapshots && options.initialSnapshot) {
    const jobs: string[] = [];
    for (const t of added) jobs.push(await snapshots.request(t));
    options.log.info({ tables: names, snapshots: jobs }, 'tables added to the publication: their existing rows are read by a snapshot');
    return;
  }
  const fix = `syncline snapshot ${added.map((t) => quoteQualified(t.schema, t.table)).join(' ')} -c <config>`;
  options.log.warn({ tables: names, fix }, 'tables added to the publication: the target gets their changes from now on, their existing rows only by a snapshot');
}

/** Creates the slot unless it exists, and waits for a previous capture's walsender to let go of it. */
async function readySlot(admin: pg.Client, options: PostgresSourceOptions, signal: AbortSignal, known: SlotState | undefined): Promise<SlotState> {
  const { slot, log, clock } = options;
  const ensured = await ensureSlot(admin, slot, known);
  let state = ensured.state;
  if (state.active) {
    // After a kill -9 the server may not have noticed the dead walsender yet.
    log.warn({ slot }, 'replication slot is in use by another connection; waiting up to 60 s for it to be released');
    const deadline = clock.now() + SLOT_RELEASE_WAIT_MS;
    while (state.active && clock.now() < deadline && !signal.aborted) {
      await clock.sleep(SLOT_RELEASE_POLL_MS, signal);
      state = (await slotState(admin, slot)) ?? state;
    }
    if (state.active) throw new PrerequisiteError(`replication slot ${slot} is still in use by another process`, 'stop the other syncline capture using this slot, or use another slot name');
  }
  log.info({ slot, created: ensured.created, confirmed: state.confirmedFlush === null ? null : formatLsn(state.confirmedFlush) }, 'replication slot ready');
  return state;
}

/**
 * The server's WAL position now: where it inserts (a commit is visible only once inserted,
 * even with synchronous_commit off), or on a standby what it replayed.
 */
async function walPosition(admin: pg.Client): Promise<Lsn> {
  const { rows } = await admin.query<{ lsn: string }>(
    'SELECT (CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_insert_lsn() END)::text AS lsn',
  );
  return parseLsn(rows[0]?.lsn ?? '0/0');
}

/** The source-side snapshot job table, or undefined (with a warning) when it cannot be created. */
async function prepareSnapshots(admin: pg.Client, options: PostgresSourceOptions, facts: StateFacts): Promise<SnapshotStore | undefined> {
  const store = new SnapshotStore(admin, options.stateSchema, options.slot);
  try {
    await store.prepare(facts);
    return store;
  } catch (err) {
    options.log.warn(
      { err: errorMessage(err), fix: `GRANT CREATE ON DATABASE ... TO the syncline role, or create ${options.stateSchema}.snapshots beforehand` },
      'snapshots disabled: cannot create the snapshot job table in the source',
    );
    return undefined;
  }
}

/**
 * `_schema_version`s recorded in the source, so they survive restarts; when the table cannot
 * be created, versions are kept in memory only (with a warning) and restart at 1.
 */
async function prepareSchemaVersions(
  admin: pg.Client,
  options: PostgresSourceOptions,
  facts: StateFacts,
  tables: () => Promise<readonly TableName[]>,
  snapshots: boolean,
): Promise<SchemaVersionStore | undefined> {
  const store = new SchemaVersionStore(admin, options.stateSchema, options.slot, options.publication);
  try {
    await store.prepare(facts);
    await store.load();
    // Rows that existed before an ADD COLUMN with a default get its value at the source with
    // no change in the WAL: a snapshot of the table brings them (source.snapshot: never
    // means the target takes changes only, so it is left to the operator, with the command).
    const request = snapshots && options.initialSnapshot;
    store.backfillAddedColumns(request, (r) => {
      const table = `${r.schema}.${r.table}`;
      if (r.job !== null) options.log.warn({ table, columns: r.columns, version: r.version, snapshot: r.job }, 'columns added with a value for existing rows (DEFAULT, NOT NULL, identity) or given another type, which the WAL does not carry: the table is re-read by a snapshot');
      else if (!request) options.log.warn({ table, columns: r.columns, version: r.version, fix: `syncline snapshot ${quoteQualified(r.schema, r.table)} -c <config>` }, 'columns added with a value for existing rows (DEFAULT, NOT NULL, identity) or given another type, which the WAL does not carry: the target keeps the old values until a snapshot of the table');
    }, (r) => {
      // The target's table of the old name is no longer written; the config still names it,
      // and capture will not start with a table the source lacks: both are the operator's.
      const table = `${r.schema}.${r.table}`;
      const from = `${r.from.schema}.${r.from.table}`;
      const fix = `replace ${quoteQualified(r.from.schema, r.from.table)} by ${quoteQualified(r.schema, r.table)} in source.slots[0].tables (capture does not start with a table the source lacks), and drop or archive the target's ${from}: it is no longer written`;
      if (r.job !== null) options.log.warn({ table, renamedFrom: from, snapshot: r.job, fix }, `table renamed at the source: ${from} is now ${table}; its changes go to ${table} at the target, which is filled by a snapshot`);
      else if (!request) options.log.warn({ table, renamedFrom: from, fix: `syncline snapshot ${quoteQualified(r.schema, r.table)} -c <config>; then ${fix}` }, `table renamed at the source: ${from} is now ${table}; its changes go to ${table} at the target, which lacks the rows not changed since until a snapshot of the table`);
    }, (r) => {
      options.log.warn(
        { table: `${r.schema}.${r.table}`, snapshot: r.job, fix: `list it in source.slots[0].tables (syncline then keeps it in the publication)` },
        r.recreated
          ? 'table met in the stream as another relation than the one replicated under its name (dropped and created again, then added to the publication by hand?): its rows not changed since are read by a snapshot; the old table\'s rows stay at the target'
          : 'table met in the stream without a snapshot (added to the publication by hand?): its rows not changed since are read by a snapshot',
      );
    }, (r) => {
      // A job already pending (the same ALTER changed a type or added a column with a value) reads the rewritten rows too.
      const table = `${r.schema}.${r.table}`;
      if (r.job !== null) options.log.warn({ table, snapshot: r.job }, 'table rewritten at the source with new values (ALTER COLUMN ... TYPE ... USING, ADD COLUMN with a volatile default), which the WAL does not carry: the table is re-read by a snapshot');
      else if (!request) options.log.warn({ table, fix: `syncline snapshot ${quoteQualified(r.schema, r.table)} -c <config>` }, 'table rewritten at the source with new values (ALTER COLUMN ... TYPE ... USING, ADD COLUMN with a volatile default), which the WAL does not carry: the target keeps the old values until a snapshot of the table');
    });
  } catch (err) {
    options.log.warn(
      { err: errorMessage(err), fix: `GRANT CREATE ON DATABASE ... TO the syncline role, or create ${options.stateSchema}.schema_versions beforehand` },
      '_schema_version is not kept across restarts: cannot create the schema version table in the source',
    );
    return undefined;
  }
  await prepareDdlHistory(admin, options, store, facts, tables);
  return store;
}

/**
 * The DDL history (ddl-history.ts) that gives recorded definitions their exact attnums. The
 * event trigger needs a superuser once; without it definitions are recorded from the catalog
 * as before (with the limit README "Schema evolution at the sink" describes).
 */
async function prepareDdlHistory(admin: pg.Client, options: PostgresSourceOptions, store: SchemaVersionStore, facts: StateFacts, tables: () => Promise<readonly TableName[]>): Promise<void> {
  const { log, stateSchema } = options;
  try {
    const state = await installDdlHistory(admin, stateSchema, await tables(), facts);
    store.useDdlHistory();
    if (state === 'no_rewrite_trigger') {
      log.warn(
        { fix: `run capture once as a superuser, or create the event trigger by hand as a superuser: ${ddlHistorySql(stateSchema).rewriteTrigger} (README "Schema evolution at the sink")` },
        'no table_rewrite trigger: a table rewritten with new values of the same type (ALTER COLUMN c TYPE <its type> USING ...) is not re-read, and the target keeps the old values',
      );
    }
    if (state === 'no_trigger') {
      log.warn(
        { fix: `run capture once as a superuser, or create the event trigger by hand as a superuser: ${ddlHistorySql(stateSchema).trigger.replace(/\s+/g, ' ')} (README "Schema evolution at the sink")` },
        'no DDL history: the event trigger is missing or disabled, so a definition recorded after later DDL may get a wrong attnum',
      );
    }
  } catch (err) {
    log.warn(
      { err: errorMessage(err), fix: `run capture once as a superuser, or create ${stateSchema}.ddl_history, its function and event trigger by hand (README "Schema evolution at the sink")` },
      'no DDL history: cannot create it in the source, so a definition recorded after later DDL may get a wrong attnum',
    );
  }
}

/**
 * The spill folder of a slot's capture: one per source server, database and slot, reused by
 * the next capture after a kill -9 (a new Capture empties it), so crashes leave nothing
 * behind. Folders of the per-process naming used before are removed once their process is gone.
 */
function spillDirFor(conn: pg.ClientConfig, slot: string): string {
  const identity = createHash('sha256').update(JSON.stringify([conn.connectionString ?? '', conn.host ?? '', conn.port ?? '', conn.database ?? '', slot])).digest('hex').slice(0, 12);
  const prefix = `syncline-spill-${slot.replace(/[^A-Za-z0-9_-]/g, '_')}-`;
  try {
    for (const name of readdirSync(os.tmpdir())) {
      const rest = name.startsWith(prefix) ? name.slice(prefix.length) : '';
      const pid = /^\d{1,7}$/.test(rest) ? Number(rest) : 0;
      if (pid > 0 && !processAlive(pid)) rmSync(path.join(os.tmpdir(), name), { recursive: true, force: true });
    }
  } catch {
    // Cleaning up after older versions is best effort.
  }
  return path.join(os.tmpdir(), `${prefix}${identity}`);
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as { code?: string }).code === 'EPERM';
  }
}
