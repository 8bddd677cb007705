import pg from 'pg';
import { PrerequisiteError, SynclineError } from '../core/errors.js';
import { isRetriablePgError } from '../core/sqlstate.js';
import type { Lsn } from '../core/lsn.js';
import { quoteIdent, quoteLiteral } from '../core/sql.js';
import { standbyStatusUpdate } from '../pgoutput/replication-frames.js';

export interface ReplicationOptions {
  connection: pg.ClientConfig;
  slot: string;
  publication: string;
  protocolVersion: number;
  /** Ask the server to send logical messages (pg_logical_emit_message), used for heartbeats. */
  messages: boolean;
  /** Let the server stream large in-progress transactions (protocol >= 2). */
  streaming: boolean;
  /** PostgreSQL 16+: `none` sends only transactions without a replication origin (`source.skip_origins`). */
  origin?: 'none';
}

/**
 * pgoutput values are the walsender's type output functions, so its session settings fix
 * their text: without these the source database's defaults leak into every event (SQL/DMY
 * dates with zone abbreviations, sql_standard intervals, floats rounded by
 * extra_float_digits=0) and a target with other defaults misreads or rejects them.
 * PostgreSQL's own subscriber sets the first three; UTC and hex make events canonical.
 */
export const OUTPUT_SETTINGS =
  "SELECT set_config('datestyle', 'ISO', false), set_config('intervalstyle', 'postgres', false), " +
  "set_config('extra_float_digits', '3', false), set_config('timezone', 'UTC', false), set_config('bytea_output', 'hex', false)";

/**
 * A walsender connection in logical replication mode (CopyBoth). It hands every CopyData
 * payload to `onData` and never acknowledges anything by itself: the owner calls
 * `acknowledge(lsn)` only for positions the stream stored durably.
 */
export class ReplicationStream {
  private readonly client: pg.Client;
  private ended = false;
  private connecting: Promise<void> | undefined;

  constructor(private readonly options: ReplicationOptions) {
    this.client = new pg.Client({ ...options.connection, replication: 'database' } as pg.ClientConfig);
    // A lost connection rejects START_REPLICATION (handled in start); pg also emits it as an
    // 'error' event, which must not crash the process.
    this.client.on('error', () => undefined);
  }

  /**
   * Starts streaming from the slot's confirmed position. Resolves when the stream ends
   * (close() or server end); rejects on a server or connection error. `onStreaming` is
   * called when the server accepted START_REPLICATION (its CopyBothResponse): the slot is
   * then held by this connection and changes flow.
   */
  async start(onData: (chunk: Buffer) => void, onStreaming?: () => void): Promise<void> {
    await this.connect();
    const con = (this.client as unknown as { connection: PgConnection }).connection;
    con.on('copyData', (msg: { chunk: Buffer }) => onData(msg.chunk));
    if (onStreaming) con.once('replicationStart', () => onStreaming());
    const o = this.options;
    const params = [
      `proto_version ${quoteLiteral(String(o.protocolVersion))}`,
      // publication_names is a list of identifiers inside a string literal.
      `publication_names ${quoteLiteral(quoteIdent(o.publication))}`,
    ];
    if (o.messages) params.push(`messages 'true'`);
    if (o.streaming) params.push(`streaming 'on'`);
    if (o.origin) params.push(`origin ${quoteLiteral(o.origin)}`);
    const sql = `START_REPLICATION SLOT ${quoteIdent(o.slot)} LOGICAL 0/0 (${params.join(', ')})`;
    try {
      await this.client.query(sql);
    } catch (err) {
      if (this.ended) return;
      const e = err as { code?: string; message?: string };
      // 42704 undefined_object: the walsender decodes with the catalog as of each change, so
      // a publication dropped while the slot had WAL after that point fails every start, also
      // once the publication is created again (capture does at start). Only a new slot gets
      // past it; the bare server message sent operators looking at a publication that exists.
      if (e.code === '42704' && /publication/.test(e.message ?? '')) {
        throw new PrerequisiteError(
          `replication from slot ${o.slot} failed: ${e.message ?? String(err)} (it was dropped while the slot had changes to send after that point, which the slot cannot decode past, even with the publication created again)`,
          'run: syncline resync --force -c <config> (the slot is healthy, so --force: publication, new slot and a snapshot of every table), then syncline run, then syncline repair (removes rows deleted meanwhile)',
        );
      }
      // 22021 character_not_in_repertoire / 22P05 untranslatable_character: a value the
      // walsender cannot convert to the UTF-8 capture reads (bytes that are not UTF-8 in a
      // SQL_ASCII database). Every start stops at the same change: the slot has not passed it.
      if (e.code === '22021' || e.code === '22P05') {
        throw new PrerequisiteError(
          `replication from slot ${o.slot} failed: ${e.message ?? String(err)} (a changed value at the source cannot be sent as UTF-8, which capture reads every value as; the slot stays before that change, nothing after it is lost)`,
          'correct the value at the source (valid UTF-8), then syncline resync --force -c <config> (the slot cannot decode past the change already in the WAL) and syncline repair',
        );
      }
      // 55006 object_in_use: another process streams this slot. A connection lost otherwise
      // passes too (classifyPgError: 57P01 and the rest of class 57 and 08, and the socket's
      // ECONNRESET, EPIPE, ETIMEDOUT...): a reset by the network ended capture for good.
      const retriable = e.code === '55006' || e.code === undefined || isRetriablePgError(err);
      throw new SynclineError('REPLICATION_FAILED', `replication from slot ${o.slot} failed: ${e.message ?? String(err)}`, { retriable, cause: err });
    }
  }

  /**
   * Connects and applies the output settings, once: start() does it unless it was done
   * before. Connecting ahead (while the slot and the bookkeeping tables are prepared) takes
   * its round trips off the time to the first change; nothing is streamed until start().
   */
  connect(): Promise<void> {
    this.connecting ??= (async () => {
      await this.client.connect();
      await this.client.query(OUTPUT_SETTINGS);
    })();
    return this.connecting;
  }

  /** Reports `lsn` as written and flushed: the server may then discard WAL before it. */
  acknowledge(lsn: Lsn, replyRequested = false): void {
    if (this.ended) return;
    const con = (this.client as unknown as { connection: PgConnection }).connection;
    con.sendCopyFromChunk(standbyStatusUpdate(lsn, lsn, lsn, Date.now(), replyRequested));
  }

  /** Backpressure: stop reading the socket (the server blocks once its send buffer fills). */
  pause(): void {
    (this.client as unknown as { connection: PgConnection }).connection.stream.pause();
  }

  resume(): void {
    (this.client as unknown as { connection: PgConnection }).connection.stream.resume();
  }

  async close(): Promise<void> {
    if (this.ended) return;
    this.ended = true;
    // Ending the connection mid-COPY is how a walsender client stops; the server keeps the
    // slot at the last acknowledged position. A connection still starting up may never
    // answer the Terminate message, so the socket is destroyed after a grace period.
    const con = (this.client as unknown as { connection: PgConnection }).connection;
    const timer = setTimeout(() => con.stream.destroy(), 2000);
    await this.client.end().catch(() => undefined);
    clearTimeout(timer);
  }
}

/** The parts of pg's internal connection used for CopyBoth (not in @types/pg). */
interface PgConnection {
  on(event: 'copyData', listener: (msg: { chunk: Buffer }) => void): void;
  once(event: 'replicationStart', listener: () => void): void;
  sendCopyFromChunk(chunk: Buffer): void;
  stream: { pause(): void; resume(): void; destroy(): void };
}
