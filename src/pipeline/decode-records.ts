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
 * Records decoded between two turns of the event loop. Apply decodes the next batch while the
 * current one is written: decoding a whole batch at once (tens of milliseconds) held up every
 * sink round trip of the current one (BEGIN, COPY, merge, COMMIT) until it was done, so the
 * two ran one after the other instead of side by side.
 */
const DECODE_SLICE = 200;

/**
 * The change of each record, or why it has none (a permanent failure: the record is
 * dead-lettered, e.g. SCHEMA_UNKNOWN). A retriable failure (the registry unreachable) retries
 * the whole batch, so nothing is dead-lettered for an outage. Without `options.decode`
 * (`format: json`) records are parsed as JSON (scanned, payloads left as text, for a sink
 * with `lazyPayloads`), a slice at a time (see DECODE_SLICE).
 */
export async function decodeRecords(ctx: ApplyContext, records: readonly StreamRecord[], signal: AbortSignal): Promise<(ChangeEvent | Error)[] | typeof STOPPED> {
  const decode = ctx.options.decode;
  if (!decode) {
    const scanner = ctx.sink.lazyPayloads === true ? new ChangeScanner() : undefined;
    const out: (ChangeEvent | Error)[] = [];
    for (let i = 0; i < records.length; i++) {
      if (i > 0 && i % DECODE_SLICE === 0) await new Promise<void>((resolve) => setImmediate(resolve));
      out.push(decodeOrError((records[i] as StreamRecord).value, scanner));
    }
    return out;
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
