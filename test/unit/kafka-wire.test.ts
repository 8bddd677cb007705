import { randomBytes } from 'node:crypto';
import { createRequire } from 'node:module';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { crc32c } from '../../src/stream/kafka/protocol/crc32c.js';
import {
  decodeFindCoordinatorResponse,
  decodeLeaveGroupResponse,
  decodeProduceResponse,
  encodeFindCoordinatorRequest,
  encodeLeaveGroupRequest,
  encodeProduceRequest,
  type ProduceRecord,
} from '../../src/stream/kafka/protocol/messages.js';

// kafkajs's own protocol modules (not its public API) are the reference: its decoder has read
// Kafka's record batches for years, and its CRC-32C is the byte-at-a-time definition.
const require = createRequire(import.meta.url);
const kafkajsCrc32c = require('kafkajs/src/protocol/recordBatch/crc32C/crc32C.js') as (b: Buffer) => number;
const RecordBatchDecoder = require('kafkajs/src/protocol/recordBatch/v0/decoder.js') as (d: unknown) => Promise<{
  producerId: string;
  producerEpoch: number;
  firstSequence: number;
  lastOffsetDelta: number;
  records: { key: Buffer | null; value: Buffer | null; offset: string; headers: Record<string, unknown> }[];
}>;
const Decoder = require('kafkajs/src/protocol/decoder.js') as new (b: Buffer) => unknown;

describe('CRC-32C', () => {
  it('gives the check value and agrees with the byte-at-a-time definition at every length and offset', () => {
    expect(crc32c(Buffer.from('123456789'))).toBe(0xe3069283);
    const buf = randomBytes(300);
    for (let start = 0; start < 9; start++) {
      for (let end = start; end <= buf.length; end += 7) expect(crc32c(buf, start, end)).toBe(kafkajsCrc32c(buf.subarray(start, end)));
    }
  });
});

/** Splits an encoded Produce v3 frame into its per-partition record batches. */
function batchesOf(frame: Buffer, topic: string): { partition: number; batch: Buffer }[] {
  let o = 4 + 2 + 2 + 4;
  o += 2 + frame.readInt16BE(o); // client id
  expect(frame.readInt16BE(o)).toBe(-1); // no transactional id
  expect(frame.readInt16BE(o + 2)).toBe(-1); // acks=all
  o += 2 + 2 + 4;
  expect(frame.readInt32BE(o)).toBe(1);
  o += 4;
  const n = frame.readInt16BE(o);
  expect(frame.toString('utf8', o + 2, o + 2 + n)).toBe(topic);
  o += 2 + n;
  const out: { partition: number; batch: Buffer }[] = [];
  for (let p = frame.readInt32BE(o), i = 0, at = o + 4; i < p; i++) {
    const partition = frame.readInt32BE(at);
    const size = frame.readInt32BE(at + 4);
    out.push({ partition, batch: frame.subarray(at + 8, at + 8 + size) });
    at += 8 + size;
    if (i === p - 1) expect(at).toBe(frame.length);
  }
  expect(frame.readInt32BE(0)).toBe(frame.length - 4);
  return out;
}

describe('Produce v3 request encoding', () => {
  const record = fc.record({
    key: fc.oneof(fc.string({ unit: 'binary', maxLength: 200 }), fc.uint8Array({ maxLength: 50 }).map((a) => Buffer.from(a))),
    value: fc.option(fc.uint8Array({ maxLength: 3000 }).map((a) => Buffer.from(a)), { nil: null, freq: 8 }),
  }) as fc.Arbitrary<ProduceRecord>;

  it('writes record batches that kafkajs decodes to the same records, with a valid CRC and the producer identity', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(fc.array(record, { minLength: 1, maxLength: 150 }), { minLength: 1, maxLength: 4 }), fc.integer({ min: 0, max: 0x7fff_ffff }), async (parts, seq) => {
        const batches = parts.map((records, i) => ({ partition: i * 3, baseSequence: seq, records }));
        const frame = encodeProduceRequest({ clientId: 'test', topic: 'tópic', acks: -1, timeoutMs: 30_000, identity: { producerId: 123456789012n, epoch: 7 }, batches });
        const split = batchesOf(frame, 'tópic');
        expect(split.map((s) => s.partition)).toEqual(batches.map((b) => b.partition));
        for (let i = 0; i < split.length; i++) {
          const { batch } = split[i] as { batch: Buffer };
          const records = (parts[i] as ProduceRecord[]);
          expect(batch.readInt32BE(8)).toBe(batch.length - 12);
          expect(batch.readInt8(16)).toBe(2);
          expect(batch.readUInt32BE(17)).toBe(kafkajsCrc32c(batch.subarray(21)));
          const decoded = await RecordBatchDecoder(new Decoder(batch));
          expect(decoded.producerId).toBe('123456789012');
          expect(decoded.producerEpoch).toBe(7);
          expect(decoded.firstSequence).toBe(seq);
          expect(decoded.lastOffsetDelta).toBe(records.length - 1);
          expect(decoded.records.map((r) => [r.offset, r.key, r.value, r.headers])).toEqual(
            records.map((r, j) => [String(j), typeof r.key === 'string' ? Buffer.from(r.key) : r.key, r.value, {}]),
          );
        }
      }),
      { numRuns: 60 },
    );
  });

  it('reads the per-partition error codes of a Produce v3 response', () => {
    const topic = 't';
    const body = Buffer.alloc(4 + 2 + 1 + 4 + 2 * (4 + 2 + 8 + 8) + 4);
    let o = body.writeInt32BE(1, 0);
    o = body.writeInt16BE(1, o);
    o = body.write(topic, o) + o;
    o = body.writeInt32BE(2, o);
    for (const [p, err] of [[0, 0], [5, 6]] as const) {
      o = body.writeInt32BE(p, o);
      o = body.writeInt16BE(err, o);
      o = body.writeBigInt64BE(10n, o);
      o = body.writeBigInt64BE(-1n, o);
    }
    body.writeInt32BE(0, o);
    expect(decodeProduceResponse(body, topic)).toEqual([{ partition: 0, error: 0, baseOffset: 10n }, { partition: 5, error: 6, baseOffset: 10n }]);
    expect(() => decodeProduceResponse(body.subarray(0, 20), topic)).toThrow(/Produce response ends/);
  });
});

/** A kafkajs request module's body (its encoder, without the frame header). */
type KafkajsRequest = (args: Record<string, unknown>) => { apiKey: number; apiVersion: number; encode: () => Promise<{ buffer: Buffer }> };
const kafkajsFindCoordinatorV2 = require('kafkajs/src/protocol/requests/findCoordinator/v2/request.js') as KafkajsRequest;
const kafkajsLeaveGroupV3 = require('kafkajs/src/protocol/requests/leaveGroup/v3/request.js') as KafkajsRequest;

/** Checks the frame header and returns the body after it. */
function bodyOf(frame: Buffer, apiKey: number, version: number, clientId: string): Buffer {
  expect(frame.readInt32BE(0)).toBe(frame.length - 4);
  expect(frame.readInt16BE(4)).toBe(apiKey);
  expect(frame.readInt16BE(6)).toBe(version);
  expect(frame.readInt16BE(12)).toBe(Buffer.byteLength(clientId));
  expect(frame.toString('utf8', 14, 14 + Buffer.byteLength(clientId))).toBe(clientId);
  return frame.subarray(14 + Buffer.byteLength(clientId));
}

describe('consumer group requests (removing dead members)', () => {
  it('encodes FindCoordinator v2 and LeaveGroup v3 as kafkajs does', async () => {
    const fc2 = kafkajsFindCoordinatorV2({ coordinatorKey: 'grüppe', coordinatorType: 0 });
    expect(bodyOf(encodeFindCoordinatorRequest('syncline', 'grüppe'), fc2.apiKey, fc2.apiVersion, 'syncline')).toEqual((await fc2.encode()).buffer);
    for (const members of [['syncline-1f2e'], ['a', 'syncline-ünï-3', '']]) {
      const lg3 = kafkajsLeaveGroupV3({ groupId: 'g', members: members.map((memberId) => ({ memberId })) });
      expect(bodyOf(encodeLeaveGroupRequest('c', 'g', members), lg3.apiKey, lg3.apiVersion, 'c')).toEqual((await lg3.encode()).buffer);
    }
  });

  it('reads FindCoordinator v2 and LeaveGroup v3 responses', () => {
    const host = 'broker-1.example';
    const fcBody = Buffer.alloc(4 + 2 + 2 + 4 + 2 + host.length + 4);
    let o = fcBody.writeInt32BE(0, 0);
    o = fcBody.writeInt16BE(0, o);
    o = fcBody.writeInt16BE(-1, o); // no error message
    o = fcBody.writeInt32BE(3, o);
    o = fcBody.writeInt16BE(host.length, o);
    o += fcBody.write(host, o);
    fcBody.writeInt32BE(9092, o);
    expect(decodeFindCoordinatorResponse(fcBody)).toEqual({ error: 0, nodeId: 3, host, port: 9092 });
    expect(() => decodeFindCoordinatorResponse(fcBody.subarray(0, 10))).toThrow(/FindCoordinator response ends/);

    const members: [string, number][] = [['m-1', 0], ['m-2', 25]];
    const lgBody = Buffer.alloc(4 + 2 + 4 + members.reduce((n, [m]) => n + 2 + m.length + 2 + 2, 0));
    o = lgBody.writeInt32BE(0, 0);
    o = lgBody.writeInt16BE(0, o);
    o = lgBody.writeInt32BE(members.length, o);
    for (const [m, err] of members) {
      o = lgBody.writeInt16BE(m.length, o);
      o += lgBody.write(m, o);
      o = lgBody.writeInt16BE(-1, o);
      o = lgBody.writeInt16BE(err, o);
    }
    expect(decodeLeaveGroupResponse(lgBody)).toEqual({ error: 0, members: new Map(members) });
  });
});
