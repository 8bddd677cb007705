import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import type { ChangeEvent } from '../../src/core/change.js';
import { silentLogger } from '../../src/log/logger.js';
import { Events } from '../../src/core/events.js';
import type { PgoutputMessage } from '../../src/pgoutput/messages.js';
import { Capture } from '../../src/pipeline/capture.js';
import { waitFor } from '../helpers/wait.js';

const spill = mkdtempSync(path.join(os.tmpdir(), 'syncline-holdback-'));
afterAll(() => rmSync(spill, { recursive: true, force: true }));

/** Capture's message handling driven directly (no server): what it publishes and confirms. */
function capture(): { published: ChangeEvent[]; feed: (m: PgoutputMessage, lsn: bigint) => void; flush: () => void; c: Capture } {
  const published: ChangeEvent[] = [];
  const producer = { publish: async (recs: readonly { value: Buffer }[]) => void published.push(...recs.map((r) => JSON.parse(r.value.toString()) as ChangeEvent)), close: async () => undefined };
  const source = { start: () => new Promise<void>(() => undefined), acknowledge: () => undefined, pause: () => undefined, resume: () => undefined, close: async () => undefined };
  const c = new Capture(source, producer, new Events(), silentLogger(), {
    source: 's', startLsn: 0n, batchSize: 1000, batchWaitMs: 5, maxInFlight: 4, statusIntervalMs: 60_000, ignoredSchemas: [], spillDir: spill,
  });
  const internals = c as unknown as { publisher: { flush(): void } };
  return { published, feed: (m, lsn) => c.handleMessage(m, lsn), flush: () => internals.publisher.flush(), c };
}

const relation = { tag: 'relation', xid: undefined, relationId: 1, schema: 'public', name: 't', replicaIdentity: 'd', columns: [{ flags: 1, isKey: true, name: 'id', typeOid: 23, typeMod: -1 }] } as unknown as PgoutputMessage;
const insert = (id: string): PgoutputMessage => ({ tag: 'insert', xid: undefined, relationId: 1, newTuple: [id] }) as unknown as PgoutputMessage;

describe('capture: tx_last marking holds back only the open transaction', () => {
  it('publishes a committed transaction whole, marked, when the next one has begun (nothing confirmed unpublished)', async () => {
    const { published, feed, flush, c } = capture();
    feed(relation, 1n);
    feed({ tag: 'begin', finalLsn: 100n, commitTime: 0n, xid: 1 }, 90n);
    feed(insert('1'), 91n);
    feed(insert('2'), 92n);
    feed({ tag: 'commit', flags: 0, commitLsn: 100n, endLsn: 101n, commitTime: 0n }, 100n);
    // The next transaction begins before the flush timer fires, with no change yet.
    feed({ tag: 'begin', finalLsn: 200n, commitTime: 0n, xid: 2 }, 150n);
    flush();
    await waitFor('the first transaction confirmed', () => c.confirmedLsn === 101n, 5000, 1);
    expect(published.map((e) => `${e.commit_lsn}/${e.seq}${e.tx_last ? ' last' : ''}`)).toEqual(['0/64/1', '0/64/2 last']);
    expect(c.confirmedLsn).toBe(101n);
    // Its first change waits for the commit that may mark it, the position stays behind it.
    feed(insert('3'), 151n);
    flush(); // hands what it publishes to the producer before it returns
    expect(published).toHaveLength(2);
    feed({ tag: 'commit', flags: 0, commitLsn: 200n, endLsn: 201n, commitTime: 0n }, 200n);
    flush();
    await waitFor('the second transaction confirmed', () => c.confirmedLsn === 201n, 5000, 1);
    expect(published.slice(2).map((e) => `${e.commit_lsn}/${e.seq} ${e.tx_last ? 'last' : ''} ${e.tx_prev ?? ''}`)).toEqual(['0/C8/1 last 0/64']);
    expect(c.confirmedLsn).toBe(201n);
  });
});
