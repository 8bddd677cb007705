import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { ChangeEvent } from '../../src/core/change.js';
import { silentLogger } from '../../src/log/logger.js';
import { Events } from '../../src/core/events.js';
import { Capture, type CaptureOptions } from '../../src/pipeline/capture.js';
import type { OutgoingRecord } from '../../src/stream/stream.js';
import { xlog } from './pgoutput-encode.js';

/**
 * Capture driven without a server: frames are fed as the replication connection would
 * deliver them; the producer stores what it is given and acknowledges at once, or only when
 * `release()` is called with `manual` on. `acknowledged` is every position sent to the slot.
 */
export class CaptureHarness {
  readonly published: ChangeEvent[] = [];
  readonly acknowledged: bigint[] = [];
  /** Capture has paused reading the replication connection (its socket, in production). */
  paused = false;
  readonly capture: Capture;
  private onData: ((chunk: Buffer) => void) | undefined;
  private readonly waiting: (() => void)[] = [];
  private readonly stop = new AbortController();
  private readonly spill: string;
  readonly running: Promise<void>;

  constructor(options: Partial<CaptureOptions> & { manual?: boolean } = {}) {
    this.spill = mkdtempSync(path.join(os.tmpdir(), 'syncline-capture-test-'));
    const producer = {
      publish: (records: readonly OutgoingRecord[]): Promise<void> => {
        const events = records.map((r) => JSON.parse(r.value.toString()) as ChangeEvent);
        return new Promise<void>((resolve) => {
          const done = (): void => {
            this.published.push(...events);
            resolve();
          };
          if (options.manual) this.waiting.push(done);
          else done();
        });
      },
      close: async () => undefined,
    };
    const source = {
      start: (onData: (chunk: Buffer) => void) => {
        this.onData = onData;
        return new Promise<void>(() => undefined);
      },
      acknowledge: (lsn: bigint) => void this.acknowledged.push(lsn),
      pause: () => void (this.paused = true),
      resume: () => void (this.paused = false),
      close: async () => undefined,
    };
    this.capture = new Capture(source, producer, new Events(), silentLogger(), {
      source: 's', startLsn: 0n, batchSize: 1000, batchWaitMs: 1, maxInFlight: 4, statusIntervalMs: 60_000, ignoredSchemas: [], spillDir: this.spill,
      ...options,
    });
    this.running = this.capture.run(this.stop.signal);
  }

  /** Feeds one pgoutput message at WAL position `lsn`. */
  feed(lsn: bigint, message: Buffer): void {
    if (!this.onData) throw new Error('capture has not started streaming');
    this.onData(xlog(lsn, message));
  }

  /** Acknowledges every publish waiting (manual mode); returns how many. */
  release(): number {
    const n = this.waiting.length;
    for (const done of this.waiting.splice(0)) done();
    return n;
  }

  get waitingPublishes(): number {
    return this.waiting.length;
  }

  /** Stops capture as SIGTERM does (drain), releasing publishes meanwhile in manual mode unless told not to. */
  async close(release = true): Promise<void> {
    this.stop.abort();
    const releaser = setInterval(() => release && this.release(), 1);
    try {
      await this.running;
    } finally {
      clearInterval(releaser);
      rmSync(this.spill, { recursive: true, force: true });
    }
  }
}

export const tick = (ms = 5): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));
