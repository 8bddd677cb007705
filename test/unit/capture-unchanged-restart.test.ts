import { describe, expect, it } from 'vitest';
import type { ChangeEvent, Row } from '../../src/core/change.js';
import { skippableWithoutStoredValues } from '../../src/sink/unchanged-values.js';
import { CaptureHarness } from '../helpers/capture-harness.js';
import { pgo, type RelationSpec } from '../helpers/pgoutput-encode.js';
import { waitFor } from '../helpers/wait.js';

const TOAST: RelationSpec = { id: 1, schema: 'public', name: 'toast', columns: [{ name: 'id', key: true }, { name: 'small' }, { name: 'big' }] };

/**
 * Chaos seed 20261204 (kafka->postgres), from its stream: a key change into 255 leaving `big`
 * unchanged (1/B927CF08), UPDATEs of 255 leaving it unchanged (1/B9363B10 ...), a TRUNCATE
 * toast (1/B9598C70). A capture restarted after a kill -9 caught up, read 255 after the
 * truncate: gone, so it marked the insert superseded_at_source (the sink skipped it). It was
 * killed again after publishing the insert, before the UPDATE. The next capture did not know
 * 255 had a key change and published the UPDATE unmarked; the sink, with no row 255 and the
 * truncation not applied yet (later in the stream), refused it: UNCHANGED_VALUE_MISSING.
 */
describe('capture restarted after a key change that left TOASTed values unchanged', () => {
  /** The source after the TRUNCATE: no row 255 (nor any other). */
  const gone = async (): Promise<Row | undefined> => undefined;
  const reads: string[] = [];
  const readSourceRow = async (_s: string, _t: string, key: Row): Promise<Row | undefined> => {
    reads.push(String(key.id));
    return gone();
  };

  it('reads the UPDATEs committed before it started, so a later UPDATE of the key is skipped, not refused', async () => {
    // The first capture: the key change 100 -> 255, acknowledged (the slot's confirmed position passes it).
    const first = new CaptureHarness({ readSourceRow });
    first.feed(10n, pgo.begin(20n, 500));
    first.feed(11n, pgo.relation(TOAST));
    first.feed(12n, pgo.update(1, ['255', '1', undefined], { kind: 'K', tuple: ['100', null, null] }));
    first.feed(20n, pgo.commit(20n, 21n));
    await waitFor('the key change published', () => first.published.length >= 2, 5000, 1);
    const insert = first.published.find((e) => e.op === 'INSERT') as ChangeEvent;
    expect(insert.superseded_at_source).toBe(true);
    await first.close();

    // kill -9, restart: streaming resumes after the key change; the UPDATE of 255 (committed
    // before the restart, decoded after it) leaves `big` unchanged.
    const second = new CaptureHarness({ readSourceRow, startLsn: 21n, walAtStart: 60n });
    second.feed(30n, pgo.begin(40n, 501));
    second.feed(31n, pgo.relation(TOAST));
    second.feed(32n, pgo.update(1, ['255', '2', undefined]));
    second.feed(40n, pgo.commit(40n, 41n));
    // And one committed after the restart, of a key with no key change: published as it is.
    second.feed(70n, pgo.begin(80n, 502));
    second.feed(72n, pgo.update(1, ['7', '3', undefined]));
    second.feed(80n, pgo.commit(80n, 81n));
    await waitFor('both UPDATEs published', () => second.published.length >= 2, 5000, 1);
    await second.close();
    const [update, later] = second.published as [ChangeEvent, ChangeEvent];
    expect(update.superseded_at_source).toBe(true);
    // The sink, with no row 255 (the truncation not applied yet), skips it instead of refusing it.
    expect(skippableWithoutStoredValues([update]).has(update)).toBe(true);
    expect(later.superseded_at_source).toBeUndefined();
    expect(later.unchanged).toEqual(['big']);
    expect(reads).toEqual(['255', '255']);
  });
});
