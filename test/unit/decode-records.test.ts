/**
 * Apply decodes the next batch while the current one is written: decoding must let the event
 * loop turn (the current batch's sink round trips) instead of holding it for a whole batch.
 */
import { describe, expect, it } from 'vitest';
import type { ChangeEvent } from '../../src/core/change.js';
import type { ApplyContext } from '../../src/pipeline/apply-context.js';
import { decodeRecords } from '../../src/pipeline/decode-records.js';
import type { StreamRecord } from '../../src/stream/stream.js';

function record(i: number): StreamRecord {
  const e: ChangeEvent = {
    source: 's', schema: 'public', table: 't', op: 'INSERT', lsn: '0/1', commit_lsn: '0/1', xid: 1, seq: i,
    commit_ts: '2026-01-01T00:00:00Z', key: { id: String(i) }, payload: { id: String(i), v: 'x' }, _version: String(i), _schema_version: 1,
  };
  return { partition: 0, offset: BigInt(i), key: `public.t:["${i}"]`, value: Buffer.from(JSON.stringify(e)), timestamp: 0 };
}

describe('decodeRecords', () => {
  for (const lazyPayloads of [false, true]) {
    it(`decodes a batch a slice at a time, letting other callbacks run in between (lazyPayloads: ${lazyPayloads})`, async () => {
      const ctx = { sink: { lazyPayloads }, options: {} } as unknown as ApplyContext;
      const records = Array.from({ length: 1000 }, (_, i) => record(i + 1));
      let ranMeanwhile = false;
      setImmediate(() => {
        ranMeanwhile = true;
      });
      const decoded = await decodeRecords(ctx, [...records, { ...record(0), value: Buffer.from('not json') }], new AbortController().signal);
      expect(ranMeanwhile).toBe(true);
      expect(Array.isArray(decoded) && decoded.length).toBe(1001);
      const changes = decoded as (ChangeEvent | Error)[];
      expect(changes.slice(0, 1000).map((c) => (c as ChangeEvent).seq)).toEqual(records.map((_, i) => i + 1));
      expect(changes[1000]).toBeInstanceOf(Error);
    });
  }
});
