/**
 * One TCP connection to one Kafka broker for the producer (and the group clean-up): frames requests (the encoder made
 * each a whole frame; this writes its correlation id), reads length-prefixed responses and
 * hands each body to the request with its correlation id. Kafka answers a connection's
 * requests in order. A request that gets no answer within its timeout, or a socket that
 * fails, fails every pending request and ends the connection: the caller opens a new one.
 */
import net from 'node:net';
import { SynclineError } from '../../core/errors.js';
import { CORRELATION_ID_OFFSET } from './protocol/messages.js';

interface Pending {
  resolve: (body: Buffer) => void;
  reject: (err: SynclineError) => void;
  timer: NodeJS.Timeout;
}

export class KafkaConnection {
  private readonly socket: net.Socket;
  private readonly pending = new Map<number, Pending>();
  private nextId = 1;
  private chunks: Buffer[] = [];
  private buffered = 0;
  private failure: SynclineError | null = null;

  private constructor(
    socket: net.Socket,
    /** `host:port`, for messages. */
    readonly address: string,
  ) {
    this.socket = socket;
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    socket.on('error', (err) => this.fail(connectionError(address, `connection failed: ${err.message}`, err)));
    socket.on('close', () => this.fail(connectionError(address, 'connection closed')));
  }

  /** Connects within `timeoutMs`. */
  static connect(host: string, port: number, timeoutMs: number): Promise<KafkaConnection> {
    const address = `${host}:${port}`;
    return new Promise((resolve, reject) => {
      const socket = net.connect({ host, port, noDelay: true });
      const timer = setTimeout(() => {
        socket.destroy();
        reject(connectionError(address, `no connection within ${timeoutMs} ms`));
      }, timeoutMs);
      socket.once('error', (err) => {
        clearTimeout(timer);
        reject(connectionError(address, `cannot connect: ${err.message}`, err));
      });
      socket.once('connect', () => {
        clearTimeout(timer);
        socket.removeAllListeners('error');
        resolve(new KafkaConnection(socket, address));
      });
    });
  }

  get isOpen(): boolean {
    return this.failure === null;
  }

  /** Sends one frame (see protocol/messages.ts) and resolves with its response body. */
  request(frame: Buffer, timeoutMs: number, what: string): Promise<Buffer> {
    if (this.failure !== null) return Promise.reject(this.failure);
    const id = this.nextId;
    this.nextId = id === 0x7fff_ffff ? 1 : id + 1;
    frame.writeInt32BE(id, CORRELATION_ID_OFFSET);
    return new Promise<Buffer>((resolve, reject) => {
      const timer = setTimeout(() => this.fail(new SynclineError('KAFKA_REQUEST_TIMED_OUT', `Kafka: ${what} to ${this.address} got no answer within ${timeoutMs} ms`, { retriable: true })), timeoutMs);
      this.pending.set(id, { resolve, reject, timer });
      this.socket.write(frame);
    });
  }

  close(): void {
    this.fail(connectionError(this.address, 'connection closed by syncline'));
  }

  private onData(chunk: Buffer): void {
    this.chunks.push(chunk);
    this.buffered += chunk.length;
    while (this.buffered >= 4) {
      const head = this.chunks[0] as Buffer;
      const size = head.length >= 4 ? head.readInt32BE(0) : Buffer.concat(this.chunks).readInt32BE(0);
      if (this.buffered < 4 + size) return;
      const all = this.chunks.length === 1 ? head : Buffer.concat(this.chunks);
      const message = all.subarray(4, 4 + size);
      const rest = all.subarray(4 + size);
      this.chunks = rest.length > 0 ? [rest] : [];
      this.buffered = rest.length;
      if (size < 4) {
        this.fail(connectionError(this.address, `a response frame of ${size} bytes`));
        return;
      }
      const id = message.readInt32BE(0);
      const p = this.pending.get(id);
      if (p === undefined) {
        this.fail(connectionError(this.address, `a response to unknown correlation id ${id}`));
        return;
      }
      this.pending.delete(id);
      clearTimeout(p.timer);
      p.resolve(message.subarray(4));
    }
  }

  private fail(err: SynclineError): void {
    if (this.failure !== null) return;
    this.failure = err;
    this.socket.destroy();
    for (const p of this.pending.values()) {
      clearTimeout(p.timer);
      p.reject(err);
    }
    this.pending.clear();
    this.chunks = [];
    this.buffered = 0;
  }
}

function connectionError(address: string, message: string, cause?: unknown): SynclineError {
  return new SynclineError('KAFKA_CONNECTION', `Kafka: ${address}: ${message}`, { retriable: true, cause });
}
