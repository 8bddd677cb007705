/**
 * The Kafka requests syncline sends itself (the producer's three, and the two that remove a
 * consumer group's dead members: see group-cleanup.ts), each a whole frame in one buffer sized
 * up front, and their responses. Versions: the oldest ones Kafka 4 still accepts (KIP-896),
 * all with the classic (non-flexible) encoding.
 *
 *   Frame          => Size:int32 ApiKey:int16 ApiVersion:int16 CorrelationId:int32 ClientId:string Body
 *   Response frame => Size:int32 CorrelationId:int32 Body
 *
 *   Metadata v4 (key 3)        => [Topic:string] AllowAutoTopicCreation:bool
 *     response                 => ThrottleMs:int32 [NodeId:int32 Host:string Port:int32 Rack:string?]
 *                                 ClusterId:string? ControllerId:int32
 *                                 [Error:int16 Name:string Internal:bool
 *                                   [Error:int16 Partition:int32 Leader:int32 [Replica:int32] [Isr:int32]]]
 *   InitProducerId v0 (key 22) => TransactionalId:string? TransactionTimeoutMs:int32
 *     response                 => ThrottleMs:int32 Error:int16 ProducerId:int64 ProducerEpoch:int16
 *   Produce v3 (key 0)         => TransactionalId:string? Acks:int16 TimeoutMs:int32
 *                                 [Topic:string [Partition:int32 Records:bytes(RecordBatch)]]
 *     response                 => [Topic:string [Partition:int32 Error:int16 BaseOffset:int64 LogAppendTimeMs:int64]]
 *                                 ThrottleMs:int32
 *
 *   FindCoordinator v2 (key 10) => Key:string KeyType:int8 (0: group)
 *     response                 => ThrottleMs:int32 Error:int16 ErrorMessage:string? NodeId:int32
 *                                 Host:string Port:int32
 *   LeaveGroup v3 (key 13)     => GroupId:string [MemberId:string GroupInstanceId:string?]
 *     response                 => ThrottleMs:int32 Error:int16 [MemberId:string GroupInstanceId:string? Error:int16]
 *
 *   RecordBatch v2 => BaseOffset:int64 Length:int32 PartitionLeaderEpoch:int32 Magic:int8(2)
 *                     Crc:uint32 (CRC-32C of everything after it) Attributes:int16
 *                     LastOffsetDelta:int32 BaseTimestamp:int64 MaxTimestamp:int64
 *                     ProducerId:int64 ProducerEpoch:int16 BaseSequence:int32 [Record]
 *   Record         => Length:varint Attributes:int8 TimestampDelta:varlong OffsetDelta:varint
 *                     Key:varint-bytes Value:varint-bytes (-1 = null) [Header] (varint count)
 */
import { ByteReader, ByteWriter, stringSize, varintSize } from './bytes.js';
import { crc32c } from './crc32c.js';

export const API_PRODUCE = 0;
export const API_METADATA = 3;
export const API_FIND_COORDINATOR = 10;
export const API_LEAVE_GROUP = 13;
export const API_INIT_PRODUCER_ID = 22;

/** Where the connection writes the correlation id of a frame. */
export const CORRELATION_ID_OFFSET = 8;

function frame(apiKey: number, version: number, clientId: string, bodySize: number): ByteWriter {
  const w = new ByteWriter(4 + 2 + 2 + 4 + stringSize(clientId) + bodySize);
  return w
    .int32(w.buf.length - 4)
    .int16(apiKey)
    .int16(version)
    .int32(0)
    .string(clientId);
}

function finished(w: ByteWriter): Buffer {
  if (w.offset !== w.buf.length) throw new Error(`Kafka request measured ${w.buf.length} bytes but wrote ${w.offset}`);
  return w.buf;
}

export interface BrokerAddress {
  nodeId: number;
  host: string;
  port: number;
}

export interface TopicMetadata {
  brokers: BrokerAddress[];
  /** The topic's error code (0: none). */
  error: number;
  /** Per partition: leader node id (-1: none) and error code. */
  partitions: Map<number, { leader: number; error: number }>;
}

export function encodeMetadataRequest(clientId: string, topic: string): Buffer {
  return finished(frame(API_METADATA, 4, clientId, 4 + stringSize(topic) + 1).int32(1).string(topic).int8(0));
}

export function decodeMetadataResponse(body: Buffer, topic: string): TopicMetadata {
  const r = new ByteReader(body, 'Metadata response');
  r.int32(); // throttle
  const brokers: BrokerAddress[] = [];
  for (let n = r.count(); n > 0; n--) {
    const nodeId = r.int32();
    const host = r.string() ?? '';
    const port = r.int32();
    r.string(); // rack
    brokers.push({ nodeId, host, port });
  }
  r.string(); // cluster id
  r.int32(); // controller
  const out: TopicMetadata = { brokers, error: 3 /* UNKNOWN_TOPIC_OR_PARTITION until listed */, partitions: new Map() };
  for (let t = r.count(); t > 0; t--) {
    const error = r.int16();
    const name = r.string();
    r.boolean(); // internal
    const partitions = new Map<number, { leader: number; error: number }>();
    for (let p = r.count(); p > 0; p--) {
      const perror = r.int16();
      const partition = r.int32();
      const leader = r.int32();
      for (let k = r.count(); k > 0; k--) r.int32(); // replicas
      for (let k = r.count(); k > 0; k--) r.int32(); // isr
      partitions.set(partition, { leader, error: perror });
    }
    if (name === topic) {
      out.error = error;
      out.partitions = partitions;
    }
  }
  return out;
}

export function encodeInitProducerIdRequest(clientId: string): Buffer {
  // No transactional id: an idempotent producer; the timeout is unused then but must be valid.
  return finished(frame(API_INIT_PRODUCER_ID, 0, clientId, 2 + 4).string(null).int32(60_000));
}

export interface ProducerIdentity {
  producerId: bigint;
  epoch: number;
}

export function decodeInitProducerIdResponse(body: Buffer): ProducerIdentity & { error: number } {
  const r = new ByteReader(body, 'InitProducerId response');
  r.int32(); // throttle
  const error = r.int16();
  const producerId = r.int64();
  const epoch = r.int16();
  return { error, producerId, epoch };
}

/** One record: the key as text or bytes, the value (null: a tombstone). */
export interface ProduceRecord {
  key: string | Buffer;
  value: Buffer | null;
}

/** One partition's share of a produce request: its records in order, the first one's sequence. */
export interface PartitionBatch {
  partition: number;
  baseSequence: number;
  records: readonly ProduceRecord[];
}

const BATCH_HEADER_BYTES = 61;
/** Bytes from the start of a batch to the first byte the CRC covers (attributes). */
const CRC_START = 21;

export interface ProduceRequest {
  clientId: string;
  topic: string;
  acks: number;
  timeoutMs: number;
  identity: ProducerIdentity;
  batches: readonly PartitionBatch[];
}

/**
 * Encodes a Produce v3 request with one uncompressed v2 record batch per partition, straight
 * into one buffer: records are measured first (their key lengths kept), then written, then
 * each batch's CRC is taken over the bytes in place.
 */
export function encodeProduceRequest(req: ProduceRequest): Buffer {
  let total = 0;
  for (const b of req.batches) total += b.records.length;
  const keyBytes = new Int32Array(total);
  const bodyBytes = new Int32Array(total);
  const batchBytes: number[] = [];
  let size = 2 + 2 + 4 + 4 + stringSize(req.topic) + 4;
  let k = 0;
  for (const b of req.batches) {
    let bytes = BATCH_HEADER_BYTES;
    for (let i = 0; i < b.records.length; i++, k++) {
      const rec = b.records[i] as ProduceRecord;
      const key = rec.key;
      const kb = typeof key === 'string' ? Buffer.byteLength(key, 'utf8') : key.length;
      const v = rec.value;
      // attributes, timestamp delta (always 0), offset delta, key, value, header count (0)
      const body = 1 + 1 + varintSize(i) + varintSize(kb) + kb + (v === null ? 1 : varintSize(v.length) + v.length) + 1;
      keyBytes[k] = kb;
      bodyBytes[k] = body;
      bytes += varintSize(body) + body;
    }
    batchBytes.push(bytes);
    size += 4 + 4 + bytes;
  }
  const w = frame(API_PRODUCE, 3, req.clientId, size);
  w.string(null).int16(req.acks).int32(req.timeoutMs).int32(1).string(req.topic).int32(req.batches.length);
  const now = Date.now();
  k = 0;
  for (let bi = 0; bi < req.batches.length; bi++) {
    const b = req.batches[bi] as PartitionBatch;
    const bytes = batchBytes[bi] as number;
    w.int32(b.partition).int32(bytes);
    const start = w.offset;
    w.int64(0) // base offset: the broker assigns
      .int32(bytes - 12) // length: after this field
      .int32(-1) // partition leader epoch: the broker's
      .int8(2) // magic
      .uint32(0) // CRC, below
      .int16(0) // attributes: no compression, create time, not transactional
      .int32(b.records.length - 1)
      .int64(now)
      .int64(now)
      .int64n(req.identity.producerId)
      .int16(req.identity.epoch)
      .int32(b.baseSequence)
      .int32(b.records.length);
    for (let i = 0; i < b.records.length; i++, k++) {
      const rec = b.records[i] as ProduceRecord;
      const kb = keyBytes[k] as number;
      w.varint(bodyBytes[k] as number)
        .int8(0)
        .varint(0)
        .varint(i)
        .varint(kb);
      if (typeof rec.key === 'string') w.utf8(rec.key, kb);
      else w.raw(rec.key);
      if (rec.value === null) w.varint(-1);
      else w.varint(rec.value.length).raw(rec.value);
      w.varint(0);
    }
    if (w.offset - start !== bytes) throw new Error(`Kafka record batch measured ${bytes} bytes but wrote ${w.offset - start}`);
    w.buf.writeUInt32BE(crc32c(w.buf, start + CRC_START, w.offset), start + CRC_START - 4);
  }
  return finished(w);
}

export interface PartitionResult {
  partition: number;
  error: number;
  /** Offset of the batch's first record (-1 when the broker does not say, as with an error). */
  baseOffset: bigint;
}

export function decodeProduceResponse(body: Buffer, topic: string): PartitionResult[] {
  const r = new ByteReader(body, 'Produce response');
  const out: PartitionResult[] = [];
  for (let t = r.count(); t > 0; t--) {
    const name = r.string();
    for (let p = r.count(); p > 0; p--) {
      const partition = r.int32();
      const error = r.int16();
      const baseOffset = r.int64();
      r.int64(); // log append time
      if (name === topic) out.push({ partition, error, baseOffset });
    }
  }
  return out;
}

export function encodeFindCoordinatorRequest(clientId: string, groupId: string): Buffer {
  return finished(frame(API_FIND_COORDINATOR, 2, clientId, stringSize(groupId) + 1).string(groupId).int8(0));
}

export interface Coordinator extends BrokerAddress {
  error: number;
}

export function decodeFindCoordinatorResponse(body: Buffer): Coordinator {
  const r = new ByteReader(body, 'FindCoordinator response');
  r.int32(); // throttle
  const error = r.int16();
  r.string(); // error message
  const nodeId = r.int32();
  const host = r.string() ?? '';
  const port = r.int32();
  return { error, nodeId, host, port };
}

/** LeaveGroup on behalf of `memberIds` (dynamic members: no group instance id). */
export function encodeLeaveGroupRequest(clientId: string, groupId: string, memberIds: readonly string[]): Buffer {
  let size = stringSize(groupId) + 4;
  for (const m of memberIds) size += stringSize(m) + 2;
  const w = frame(API_LEAVE_GROUP, 3, clientId, size).string(groupId).int32(memberIds.length);
  for (const m of memberIds) w.string(m).string(null);
  return finished(w);
}

export interface LeaveGroupResult {
  /** The request's error code (0: none). */
  error: number;
  /** Per member: its error code (UNKNOWN_MEMBER_ID when it was gone already). */
  members: Map<string, number>;
}

export function decodeLeaveGroupResponse(body: Buffer): LeaveGroupResult {
  const r = new ByteReader(body, 'LeaveGroup response');
  r.int32(); // throttle
  const error = r.int16();
  const members = new Map<string, number>();
  for (let n = r.count(); n > 0; n--) {
    const memberId = r.string() ?? '';
    r.string(); // group instance id
    members.set(memberId, r.int16());
  }
  return { error, members };
}
