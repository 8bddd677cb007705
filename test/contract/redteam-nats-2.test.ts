/**
 * Red-team findings on the NATS partition reader (pull-inbox rewrite, a77a0f3).
 *
 * A reposition that fails before it reaches the server (jsm.streams.info times out: the
 * connection is down, which is exactly when repositions happen) was retried at `position`,
 * the offset of the *previous* reposition, instead of the offset it was asked for: `next`
 * is null during a reposition, so `this.want ??= this.next ?? this.position` fell through
 * to the stale value. Behind the records already read, that hands them out again
 * (duplicates within one consumer session); behind a seek backwards, the reader lands past
 * the offset sought (records lost).
 */
import { randomBytes } from 'node:crypto';
import { ErrorCode, NatsError, StorageType, connect, type JetStreamManager, type NatsConnection } from 'nats';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RecordBuffer } from '../../src/stream/record-buffer.js';
import { requireListening } from './broker-check.js';
import { startReader } from './nats-reader-host.js';

const url = 'nats://127.0.0.1:4222';
let nc: NatsConnection;
const streams: string[] = [];

beforeAll(async () => {
  await requireListening('127.0.0.1', 4222, 'The NATS red-team test needs nats-server with JetStream on 127.0.0.1:4222');
  nc = await connect({ servers: url });
});

afterAll(async () => {
  if (!nc) return;
  const jsm = await nc.jetstreamManager();
  for (const s of streams) await jsm.streams.delete(s).catch(() => undefined);
  await nc.close();
});

/** A manager whose next `failures` streams.info calls time out once armed, as during an outage. */
function flakyInfo(jsm: JetStreamManager): { jsm: JetStreamManager; arm: (failures: number) => void; failed: () => number } {
  let left = 0;
  let failed = 0;
  const info = jsm.streams.info.bind(jsm.streams);
  const streamsApi = Object.assign(Object.create(jsm.streams) as JetStreamManager['streams'], {
    info: (...args: Parameters<JetStreamManager['streams']['info']>) => {
      if (left > 0) {
        left--;
        failed++;
        return Promise.reject(NatsError.errorForCode(ErrorCode.Timeout));
      }
      return info(...args);
    },
  });
  return {
    jsm: Object.assign(Object.create(jsm) as JetStreamManager, { streams: streamsApi }),
    arm: (n) => {
      left = n;
    },
    failed: () => failed,
  };
}

function readerOf(name: string, startAt: bigint, jsm: JetStreamManager) {
  return startReader(name, startAt, true, { nc, jsm, disconnects: () => 0 });
}

async function streamWith(records: number): Promise<string> {
  const name = `redteam_${randomBytes(4).toString('hex')}`;
  streams.push(name);
  const jsm = await nc.jetstreamManager();
  await jsm.streams.add({ name, subjects: [`${name}.>`], storage: StorageType.Memory });
  await publish(name, 0, records);
  return name;
}

async function publish(name: string, from: number, count: number): Promise<void> {
  const js = nc.jetstream();
  for (let i = from; i < from + count; i++) await js.publish(`${name}.0`, Buffer.from(`r${i}`));
}

/** Takes from the buffer until `want` records came out, then for `settleMs` more (to catch extra ones). */
async function drain(buffer: RecordBuffer, want: number, settleMs = 1500): Promise<bigint[]> {
  const got: bigint[] = [];
  const deadline = Date.now() + 15_000;
  while (got.length < want && Date.now() < deadline) {
    for (const r of buffer.take([0], 1000)) got.push(r.offset);
    if (got.length < want) await new Promise((r) => setTimeout(r, 20));
  }
  const settle = Date.now() + settleMs;
  while (Date.now() < settle) {
    for (const r of buffer.take([0], 1000)) got.push(r.offset);
    await new Promise((r) => setTimeout(r, 20));
  }
  return got;
}

const range = (from: number, to: number): bigint[] => Array.from({ length: to - from }, (_, i) => BigInt(from + i));

describe('NATS partition reader: a reposition that fails is retried where it was asked to go', () => {
  it('after its consumer is deleted and the next stream lookup times out, every record is read once', async () => {
    const name = await streamWith(300);
    const flaky = flakyInfo(await nc.jetstreamManager());
    const r = await readerOf(name, 0n, flaky.jsm);
    try {
      expect(await drain(r.buffer, 300, 200)).toEqual(range(0, 300));
      // The reader must reposition (its consumer is gone), and its first lookup fails.
      flaky.arm(1);
      const jsm = await nc.jetstreamManager();
      await jsm.consumers.delete(name, 'g');
      const deadline = Date.now() + 10_000;
      while (flaky.failed() === 0 && Date.now() < deadline) await new Promise((res) => setTimeout(res, 20));
      expect(flaky.failed()).toBe(1);
      await publish(name, 300, 20);
      expect(await drain(r.buffer, 20)).toEqual(range(300, 320));
      expect(r.failure()).toBeUndefined();
    } finally {
      await r.close();
    }
  });

  it('a seek backwards whose reposition fails once still starts at the offset sought', async () => {
    const name = await streamWith(300);
    const flaky = flakyInfo(await nc.jetstreamManager());
    const r = await readerOf(name, 0n, flaky.jsm);
    try {
      r.reader.seek(250n);
      expect(await drain(r.buffer, 50, 200)).toEqual(range(250, 300));
      flaky.arm(1);
      r.reader.seek(100n);
      expect(await drain(r.buffer, 200)).toEqual(range(100, 300));
      expect(flaky.failed()).toBe(1);
      expect(r.failure()).toBeUndefined();
    } finally {
      await r.close();
    }
  });
});
