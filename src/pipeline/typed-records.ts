import { partitionKeyOf, type ChangeEvent } from '../core/change.js';
import type { ChangeCodec } from '../schema/change-codec.js';
import type { OutgoingRecord } from '../stream/stream.js';
import type { TableDefinitions } from './table-definitions.js';

/** Stream records of a batch: the changes encoded in a typed format (see BatchPublisher). */
export type RecordEncoder = (events: readonly ChangeEvent[]) => Promise<OutgoingRecord[]>;

/**
 * Encodes with `codec` (avro, json_schema, protobuf), each change with the definition of its
 * `_schema_version`. The partition stays the text key's (same partition as `format: json`);
 * the Kafka message key is the schema-encoded key.
 */
export function typedRecords(codec: ChangeCodec, definitions: TableDefinitions): RecordEncoder {
  return (events) =>
    Promise.all(
      events.map(async (e) => {
        const { key, value } = await codec.encode(e, definitions.of(e));
        return { key: partitionKeyOf(e), keyBytes: key, value, id: recordIdOf(e) };
      }),
    );
}

/** The id lets brokers with publish dedupe (NATS Nats-Msg-Id) drop a resend after a crash. */
export function recordIdOf(e: Pick<ChangeEvent, 'source' | 'commit_lsn' | 'seq'>): string {
  return `${e.source}:${e.commit_lsn}:${e.seq}`;
}
