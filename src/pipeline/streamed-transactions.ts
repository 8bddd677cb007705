import type { Lsn } from '../core/lsn.js';
import { PgoutputDecoder } from '../pgoutput/decoder.js';
import type { OriginMessage, PgoutputMessage } from '../pgoutput/messages.js';
import { SpillStore } from './spill-store.js';

/**
 * Transactions the server streams before they commit (pgoutput protocol >= 2 with
 * `streaming`), as capture sees them: between `stream_start` and `stream_stop` the changes
 * (and the definitions sent inside the transaction) are spilled to disk; `stream_abort` drops
 * them (a subtransaction's part, or all of it); at `stream_commit` capture replays them in
 * order, now that the commit LSN is known.
 */
export class StreamedTransactions {
  private readonly spill: SpillStore;
  /** Top-level xid of the streamed chunk being received, if any. */
  private streamXid: number | undefined;
  /** Streamed transactions' Origin messages, by top-level xid, until their commit. */
  private readonly origins = new Map<number, OriginMessage>();

  constructor(spillDir: string) {
    this.spill = new SpillStore(spillDir);
  }

  /** Inside a streamed chunk (between stream_start and stream_stop). */
  get receiving(): boolean {
    return this.streamXid !== undefined;
  }

  /**
   * Handles the stream_start/stop/abort markers; true when `msg` was one. A `stream_commit`
   * is left to the caller, which replays the transaction.
   */
  control(msg: PgoutputMessage): boolean {
    switch (msg.tag) {
      case 'stream_start':
        this.streamXid = msg.xid;
        return true;
      case 'stream_stop':
        this.streamXid = undefined;
        return true;
      case 'stream_abort':
        // Aborted before commit: its buffered changes vanish and never reach the stream.
        this.spill.abort(msg.xid, msg.subXid);
        if (msg.xid === msg.subXid) this.origins.delete(msg.xid);
        return true;
      default:
        return false;
    }
  }

  /** Inside a streamed chunk: buffers what belongs to the transaction. True when consumed. */
  buffer(msg: PgoutputMessage, lsn: Lsn, raw: Buffer): boolean {
    const xid = this.streamXid;
    if (xid === undefined) return false;
    switch (msg.tag) {
      case 'insert':
      case 'update':
      case 'delete':
      case 'truncate':
        this.spill.append(xid, msg.xid ?? xid, lsn, raw);
        return true;
      case 'relation':
        this.spill.appendRelation(xid, lsn, raw);
        return true;
      case 'type':
        return true; // values are text: type definitions change nothing here
      case 'origin':
        // Comes with the transaction's first chunk: handed back at its commit (takeOrigin).
        this.origins.set(xid, msg);
        return true;
      default:
        return false;
    }
  }

  /**
   * A committed transaction's messages from disk, in order, decoded with the definitions
   * sent inside it (a decoder of its own: the main flow keeps its definitions until then).
   */
  *replay(xid: number): Generator<{ msg: PgoutputMessage; lsn: Lsn }> {
    const decoder = new PgoutputDecoder();
    for (const record of this.spill.replay(xid)) yield { msg: decoder.decodeInStream(record.subarray(8)), lsn: record.readBigUInt64BE(0) };
  }

  /** The Origin message of a committed streamed transaction, if it had one. */
  takeOrigin(xid: number): OriginMessage | undefined {
    const origin = this.origins.get(xid);
    this.origins.delete(xid);
    return origin;
  }

  close(): void {
    this.spill.close();
  }
}
