/**
 * The bytes of one publish() call's records, in one buffer: for each record what nats.js
 * 2.29 writes for `nc.publish(subject, value, { headers, reply })` with the plan's subject,
 * reply and headers (publish-chains.ts), `HPUB <subject> [<reply>] <header bytes> <header +
 * payload bytes>\r\n`, the header block,
 * the payload, `\r\n` (protocol.js publish() and sendCommand()). nats.js builds and encodes
 * a protocol string per message and queues four buffers that its flush copies together
 * again; here the strings are measured first and every frame is written once into a buffer
 * sized up front. Pure: FrameWriter hands the bytes to the connection.
 */
import { ErrorCode, NatsError } from 'nats';
import type { OutgoingRecord } from '../stream.js';
import type { PublishPlan } from './publish-chains.js';
import { recordHeaderBlock } from './record-headers.js';

export interface PublishFrames {
  /** The frames of all records, in record order. */
  bytes: Buffer;
  /** Header and payload bytes of all records: what nats.js counts in its `outBytes`. */
  messageBytes: number;
}

const CR = 13;
const LF = 10;

/**
 * `extraLines[i]`: more header lines of record i (a claim check's, see claim-check.ts).
 * Throws nats.js's own MAX_PAYLOAD_EXCEEDED, as its publish does, when a record's header
 * block and payload together exceed `maxPayload` (the server's `max_payload`); then nothing
 * of the call is written.
 */
export function publishFrames(records: readonly OutgoingRecord[], plan: PublishPlan, maxPayload: number, extraLines?: readonly (string | undefined)[]): PublishFrames {
  const heads = new Array<string>(records.length);
  let total = 0;
  let messageBytes = 0;
  for (let i = 0; i < records.length; i++) {
    const r = records[i] as OutgoingRecord;
    const block = recordHeaderBlock(r.key, plan.msgIds[i], plan.expected[i], extraLines?.[i]);
    const headerBytes = Buffer.byteLength(block, 'utf8');
    const length = headerBytes + r.value.length;
    if (length > maxPayload) throw NatsError.errorForCode(ErrorCode.MaxPayloadExceeded);
    const reply = plan.replies[i];
    const line = reply === undefined ? `HPUB ${plan.subjects[i] as string} ${headerBytes} ${length}\r\n` : `HPUB ${plan.subjects[i] as string} ${reply} ${headerBytes} ${length}\r\n`;
    const head = line + block;
    heads[i] = head;
    // Measuring the head flattens it once, for the write below.
    total += Buffer.byteLength(head, 'utf8') + r.value.length + 2;
    messageBytes += length;
  }
  // Every byte is written below, so the buffer need not be zeroed first.
  const bytes = Buffer.allocUnsafe(total);
  let at = 0;
  for (let i = 0; i < records.length; i++) {
    const value = (records[i] as OutgoingRecord).value;
    at += bytes.write(heads[i] as string, at, 'utf8');
    bytes.set(value, at);
    at += value.length;
    bytes[at++] = CR;
    bytes[at++] = LF;
  }
  if (at !== total) throw new Error(`NATS publish frames: wrote ${at} of ${total} bytes`);
  return { bytes, messageBytes };
}
