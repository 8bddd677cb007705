import { describe, expect, it } from 'vitest';
import type { ChangeEvent } from '../../src/core/change.js';
import { Events } from '../../src/core/events.js';
import { silentLogger } from '../../src/log/logger.js';
import { BatchPublisher } from '../../src/pipeline/batch-publisher.js';
import type { OutgoingRecord, StreamProducer } from '../../src/stream/stream.js';

/** A producer whose publishes stay outstanding until `store` is called. */
function heldProducer(): StreamProducer & { store(): void } {
  const waiting: (() => void)[] = [];
  return {
    publish: (_records: readonly OutgoingRecord[]) => new Promise<void>((resolve) => waiting.push(resolve)),
    close: () => Promise.resolve(),
    store: () => {
      for (const resolve of waiting.splice(0)) resolve();
    },
  };
}

const change = (seq: number): ChangeEvent =>
  ({ source: 's', schema: 'public', table: 'hist', op: 'READ', key: {}, payload: { a: String(seq) }, commit_lsn: '0/64', commit_ts: '2026-01-01T00:00:00.000000Z', seq, xid: 1, _version: String((100n << 32n) | BigInt(seq)), _schema_version: 1 }) as unknown as ChangeEvent;

describe('the in-flight window', () => {
  /**
   * Two waiters at once: capture replaying a streamed transaction, and the snapshot runner
   * handing over a keyless table's rows (CaptureSnapshots.keylessRows). The window kept one
   * waiter, the second replaced the first, which never resolved: the replay (and capture,
   * its socket paused) hung for good, or the snapshot did, holding its table's changes.
   */
  it('opens for every waiter, not only the last one', async () => {
    const producer = heldProducer();
    const hooks = { windowFull: () => undefined, confirmed: () => undefined, failed: (err: Error) => { throw err; }, filling: () => false, mayChange: () => false };
    const publisher = new BatchPublisher(producer, new Events(), silentLogger(), { batchSize: 1, batchWaitMs: 1000, maxInFlight: 1, startLsn: 0n }, hooks);
    publisher.add(change(1));
    publisher.flush();
    const opened: string[] = [];
    const replay = publisher.windowOpen().then(() => opened.push('replay'));
    const rows = publisher.windowOpen().then(() => opened.push('rows'));
    producer.store();
    await Promise.race([Promise.all([replay, rows]), new Promise((resolve) => setTimeout(resolve, 500))]);
    expect(opened.sort()).toEqual(['replay', 'rows']);
    publisher.close();
  });
});
