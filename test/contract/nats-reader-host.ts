import type { JetStreamManager, NatsConnection } from 'nats';
import { PartitionReader, type ReaderHost } from '../../src/stream/nats/partition-reader.js';
import { RecordBuffer } from '../../src/stream/record-buffer.js';

/**
 * A NATS partition reader of partition 0 of stream `name` (group 'g', 100-message pulls, a
 * buffer that never fills), on a host the test controls: its connection, JetStream manager
 * and count of lost connections. Positioned at `startAt` (`explicit` as in positionAt) and started.
 */
export async function startReader(name: string, startAt: bigint, explicit: boolean, conn: { nc: NatsConnection; jsm: JetStreamManager; disconnects: () => number }) {
  const buffer = new RecordBuffer();
  let closed = false;
  let failure: Error | undefined;
  const host: ReaderHost = {
    jsm: conn.jsm,
    nc: conn.nc,
    get disconnects() {
      return conn.disconnects();
    },
    durable: 'g',
    groupId: 'g',
    buffer,
    perPartition: 100_000,
    fetchBatch: 100,
    isClosed: () => closed,
    fail: (e) => {
      failure = e;
    },
    waitForSpace: (ms) => new Promise((r) => setTimeout(r, ms)),
    wakeLoops: () => undefined,
  };
  const reader = new PartitionReader(host, 0, name);
  await reader.positionAt(startAt, explicit);
  reader.start();
  return {
    reader,
    buffer,
    failure: () => failure,
    close: async () => {
      closed = true;
      await reader.stop();
    },
  };
}
