import { partitionKeyOf, type ChangeEvent } from '../core/change.js';
import { SynclineError } from '../core/errors.js';
import type { ChangeCodec, EncodedChange } from './change-codec.js';
import { decodeChange } from './decode-change.js';
import { isFramed, schemaIdOf } from './wire-format.js';

/** `stream.format: json`: byte-for-byte what capture publishes today. */
export class JsonChangeCodec implements ChangeCodec {
  readonly format = 'json';

  encode(change: ChangeEvent): Promise<EncodedChange> {
    return Promise.resolve({ key: Buffer.from(partitionKeyOf(change)), value: Buffer.from(JSON.stringify(change)) });
  }

  decode(value: Buffer): Promise<ChangeEvent> {
    if (isFramed(value)) {
      return Promise.reject(
        new SynclineError(
          'SCHEMA_UNKNOWN',
          `stream record is in the schema registry wire format (schema id ${schemaIdOf(value)}) but no schema store is configured.\n  fix: set stream.format and stream.schema_registry (with stream.schema_registry_url) as the producer had them`,
          { retriable: false },
        ),
      );
    }
    try {
      return Promise.resolve(decodeChange(value));
    } catch (err) {
      return Promise.reject(err);
    }
  }
}
