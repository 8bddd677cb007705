/**
 * The shell every broker's Stream shares: the producers and consumers it handed out (so that
 * close() closes them), its closed state, and the checks of the options they all take.
 */
import { ConfigError } from '../../core/errors.js';
import { emptyGroupIdError, streamClosedError } from './errors.js';

/** `retention.ms` / `max_age` / segment expiry of a stream whose options name none: 7 days. */
export const DEFAULT_RETENTION_HOURS = 168;

interface Closable {
  close(): Promise<void>;
}

/** The options every broker takes. */
export interface CommonStreamOptions {
  /** Kafka and NATS; the embedded stream has a path instead. */
  topic?: string;
  partitions: number;
  retentionHours?: number;
}

/**
 * Throws one ConfigError with every problem: those of the options all brokers share, then
 * the broker's own `issues`. The config schema checks the same values; this guards callers
 * that open a stream directly (tests, the dead-letter topic), for which a partition count
 * that is not a positive integer would hash keys to no partition at all.
 */
export function checkStreamOptions(opts: CommonStreamOptions, issues: string[] = []): void {
  const all: string[] = [];
  if (opts.topic !== undefined && opts.topic.length === 0) all.push('stream.topic: must not be empty');
  if (!Number.isInteger(opts.partitions) || opts.partitions < 1) all.push(`stream.partitions: must be an integer >= 1, got ${opts.partitions}`);
  if (opts.retentionHours !== undefined && !(opts.retentionHours > 0)) all.push(`stream.retention_hours: must be > 0, got ${opts.retentionHours}`);
  all.push(...issues);
  if (all.length > 0) throw new ConfigError(all);
}

/** The producers and consumers a stream handed out and not yet closed. */
export class BrokerClients {
  private readonly open = new Set<Closable>();
  private closed = false;

  /** `broker` names the adapter in error messages. */
  constructor(readonly broker: string) {}

  get isClosed(): boolean {
    return this.closed;
  }

  /** Throws STREAM_CLOSED once the stream is closing. */
  checkOpen(): void {
    if (this.closed) throw streamClosedError(this.broker);
  }

  /** checkOpen, and a group id must not be empty. */
  checkConsumer(groupId: string): void {
    this.checkOpen();
    if (groupId.length === 0) throw emptyGroupIdError();
  }

  add<T extends Closable>(client: T): T {
    this.open.add(client);
    return client;
  }

  /** Registers `client` and runs `start`; if that fails, closes the client again and rethrows. */
  async started<T extends Closable>(client: T, start: () => Promise<void>): Promise<T> {
    this.add(client);
    try {
      await start();
    } catch (err) {
      await client.close().catch(() => undefined);
      throw err;
    }
    return client;
  }

  /** Called by a client's close(). */
  delete(client: Closable): void {
    this.open.delete(client);
  }

  /**
   * The stream's close(): closes every client still open (each, even when another fails),
   * then `release`s the stream's own connection, then throws the first failure. Only the
   * first call does anything.
   */
  async close(release: () => Promise<void> | void): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    const results = await Promise.allSettled([...this.open].map((c) => c.close()));
    await release();
    for (const r of results) if (r.status === 'rejected') throw r.reason;
  }
}
