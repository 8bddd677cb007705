import type { ChangeEvent } from '../core/change.js';
import { isRetriable } from '../core/errors.js';
import { STOPPED } from '../core/retry.js';
import { decodeChange } from '../schema/decode-change.js';
import { ChangeScanner } from '../schema/scan-change.js';
import type { StreamRecord } from '../stream/stream.js';
import type { ApplyContext } from './apply-context.js';

/** A typed `stream.format`'s decoder (ChangeCodec.decode): a record's change, by its schema id. */
export type RecordDecoder = (value: Buffer) => Promise<ChangeEvent>;

/**
 * The change of each record, or why it has none (a permanent failure: the record is
 * dead-lettered, e.g. SCHEMA_UNKNOWN). A retriable failure (the registry unreachable) retries
 * the whole batch, so nothing is dead-lettered for an outage. Without `options.decode`
 * (`format: json`) records are parsed synchronously, as JSON (scanned, payloads left as text,
 * for a sink with `lazyPayloads`).
 */
export async function decodeRecords(ctx: ApplyContext, records: readonly StreamRecord[], signal: AbortSignal): Promise<(ChangeEvent | Error)[] | typeof STOPPED> {
  const decode = ctx.options.decode;
  if (!decode) {
    const scanner = ctx.sink.lazyPayloads === true ? new ChangeScanner() : undefined;
    return records.map((r) => decodeOrError(r.value, scanner));
  }
  return ctx.withRetry(
    () =>
      Promise.all(
        records.map((r) =>
          decode(r.value).catch((err: unknown) => {
            if (isRetriable(err)) throw err;
            return err instanceof Error ? err : new Error(String(err));
          }),
        ),
      ),
    signal,
    'decoding stream records',
  );
}

function decodeOrError(value: Buffer, scanner: ChangeScanner | undefined): ChangeEvent | Error {
  try {
    return decodeChange(value, scanner);
  } catch (err) {
    return err instanceof Error ? err : new Error(String(err));
  }
}

/**
 * What the dead-letter queue keeps of a record that has no change: its text, or for a record
 * in the schema registry wire format (binary, first byte 0) `base64:` and its bytes, so it
 * can be decoded again once its schema is known.
 */
export function rawOf(value: Buffer): string {
  return value[0] === 0 ? `base64:${value.toString('base64')}` : value.toString('utf8');
}
