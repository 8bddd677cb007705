/**
 * Hands pre-framed publishes (see publish-frames.ts) to a nats.js connection in one call.
 * nats.js has no public API for bytes it did not frame itself, so this reaches into nats.js
 * 2.29's internals: `NatsConnectionImpl.protocol` (its ProtocolHandler), whose
 * `sendCommand(bytes)` appends to the outbound buffer that `nc.publish` appends to (flushed
 * to the socket in a microtask, or at once past 32 KiB), and whose `noMorePublishing`,
 * `outMsgs` and `outBytes` nc.publish reads and counts. When the connection does not have
 * that shape (another nats.js), FrameWriter.of returns undefined and the producer publishes
 * each record with `nc.publish` as before. Before writing, it refuses what nc.publish
 * refuses, with nats.js's own errors: a closed or draining connection, a server without
 * headers.
 */
import { ErrorCode, NatsError, type NatsConnection } from 'nats';

/** The parts of nats.js 2.29's ProtocolHandler this uses, all unknown until checked. */
interface ProtocolShape {
  connected?: unknown;
  sendCommand?: unknown;
  noMorePublishing?: unknown;
  outMsgs?: unknown;
  outBytes?: unknown;
}

interface Protocol {
  sendCommand(cmd: Uint8Array): void;
  noMorePublishing: boolean;
  outMsgs: number;
  outBytes: number;
}

export class FrameWriter {
  private constructor(
    private readonly nc: NatsConnection,
    private readonly protocol: Protocol,
  ) {}

  /** The writer of `nc`, or undefined when nats.js does not have the expected shape. */
  static of(nc: NatsConnection): FrameWriter | undefined {
    // nats.js assigns `protocol` once, before connect() resolves, and keeps it across reconnects.
    const p = (nc as unknown as { protocol?: ProtocolShape | null }).protocol;
    if (p === undefined || p === null || typeof p !== 'object') return undefined;
    if (typeof p.sendCommand !== 'function' || typeof p.noMorePublishing !== 'boolean') return undefined;
    if (typeof p.outMsgs !== 'number' || typeof p.outBytes !== 'number') return undefined;
    return new FrameWriter(nc, p as Protocol);
  }

  /**
   * The largest header block + payload the server takes per message (Infinity before its
   * INFO, where nats.js does not check either). Throws what `nc.publish` throws when the
   * connection cannot publish now.
   */
  maxPayload(): number {
    // The checks of nats.js's NatsConnectionImpl._check and ProtocolHandler.publish, in order.
    if (this.nc.isClosed()) throw NatsError.errorForCode(ErrorCode.ConnectionClosed);
    if (this.protocol.noMorePublishing) throw NatsError.errorForCode(ErrorCode.ConnectionDraining);
    const info = this.nc.info;
    if (info === undefined) return Infinity;
    if (!info.headers) throw new NatsError('headers', ErrorCode.ServerOptionNotAvailable);
    return info.max_payload;
  }

  /** Queues `frames`, `messages` publishes of `messageBytes` header and payload bytes. */
  write(frames: Uint8Array, messages: number, messageBytes: number): void {
    this.protocol.sendCommand(frames);
    this.protocol.outMsgs += messages;
    this.protocol.outBytes += messageBytes;
  }
}

/**
 * Whether `nc` has a live connection to a server now: nats.js 2.29's `protocol.connected`,
 * false from the moment the socket closed until a reconnect's handshake is done (a public
 * Disconnect/Reconnect status comes later, in a microtask). What nats.js is given meanwhile
 * goes into an outbound buffer that it empties at the next dial: lost without a trace. True
 * where nats.js lacks that field (as before this was read).
 */
export function clientConnected(nc: NatsConnection): boolean {
  const p = (nc as unknown as { protocol?: ProtocolShape | null }).protocol;
  if (p !== undefined && p !== null && typeof p === 'object' && typeof p.connected === 'boolean') return p.connected;
  return true;
}
