import { describe, expect, it } from 'vitest';
import { CaptureHarness, tick } from '../helpers/capture-harness.js';
import { waitFor } from '../helpers/wait.js';
import { pgo, type RelationSpec } from '../helpers/pgoutput-encode.js';

const ACC: RelationSpec = { id: 1, schema: 'public', name: 'acc', columns: [{ name: 'id', key: true }, { name: 'bal' }] };
const HIST: RelationSpec = { id: 2, schema: 'public', name: 'hist', identity: 'f', columns: [{ name: 'aid', key: true }, { name: 'delta', key: true }] };
const SPEC = { schema: 'public', table: 'hist', columns: ['aid', 'delta'] };

/** `table op commit_lsn` of what capture published. */
const shape = (h: CaptureHarness): string[] => h.published.map((e) => `${e.table} ${e.op} ${e.commit_lsn}`);

/** One pgbench-shaped transaction committed at `commit`: an account moves, its history row is added. */
function transfer(h: CaptureHarness, commit: bigint, xid: number): void {
  h.feed(commit - 3n, pgo.begin(commit, xid));
  h.feed(commit - 2n, pgo.update(1, ['1', String(xid)]));
  h.feed(commit - 1n, pgo.insert(2, ['1', String(xid)]));
  h.feed(commit, pgo.commit(commit, commit + 1n));
}

/** An account-only transaction committed at `commit`. */
function accountOnly(h: CaptureHarness, commit: bigint, xid: number): void {
  h.feed(commit - 2n, pgo.begin(commit, xid));
  h.feed(commit - 1n, pgo.update(1, ['2', String(xid)]));
  h.feed(commit, pgo.commit(commit, commit + 1n));
}

/**
 * Under `sink.consistency: transactional` a keyless snapshot's hold of its table's later
 * changes must not split a transaction across the stream: apply would wait for the held
 * part with every later transaction behind it, in memory, and after incompleteTransactionMs
 * apply the rest without it (torn). So capture reads no transaction committed after the cut
 * until the rows are out, and nothing it has not published is confirmed.
 */
describe('capture: a keyless snapshot under transactional consistency', () => {
  it('holds every transaction committed after the cut whole, behind the rows', async () => {
    const h = new CaptureHarness({ wholeTransactions: true });
    h.feed(1n, pgo.begin(4n, 1));
    h.feed(2n, pgo.relation(ACC));
    h.feed(2n, pgo.relation(HIST));
    h.feed(3n, pgo.update(1, ['1', '0']));
    h.feed(4n, pgo.commit(4n, 5n));
    await waitFor('the first transaction', () => h.published.length === 1, 5000, 1);

    h.capture.snapshots.keylessCut(SPEC, { token: 't', lsn: 30n, xid: 9 });
    // Committed before the cut (capture is behind): goes out, stale behind the reset.
    transfer(h, 20n, 2);
    // Committed after it: waits, whole, with everything after it.
    transfer(h, 40n, 3);
    accountOnly(h, 50n, 4);
    await tick(50);
    expect(shape(h)).toEqual(['acc UPDATE 0/4', 'hist TRUNCATE 0/1E', 'acc UPDATE 0/14', 'hist INSERT 0/14']);
    expect(h.capture.confirmedLsn).toBeLessThanOrEqual(21n);

    await h.capture.snapshots.keylessRows('t', [['7', '7']]);
    await h.capture.snapshots.keylessDone('t');
    await waitFor('the held transactions', () => h.published.length === 8, 5000, 1);
    expect(shape(h).slice(4)).toEqual(['hist READ 0/1E', 'acc UPDATE 0/28', 'hist INSERT 0/28', 'acc UPDATE 0/32']);
    await waitFor('the position past them', () => h.capture.confirmedLsn >= 51n, 5000, 1);
    await h.close();
  });

  it('after a restart with the snapshot running, reads nothing until the job cuts again', async () => {
    const h = new CaptureHarness({ wholeTransactions: true });
    h.capture.snapshots.keylessInterrupted('public.hist');
    h.feed(1n, pgo.relation(ACC));
    h.feed(1n, pgo.relation(HIST));
    transfer(h, 20n, 2);
    accountOnly(h, 25n, 3);
    await tick(50);
    expect(shape(h)).toEqual([]);

    h.capture.snapshots.keylessCut(SPEC, { token: 't', lsn: 30n, xid: 9 });
    transfer(h, 40n, 4);
    await waitFor('what committed before the cut', () => h.published.length === 4, 5000, 1);
    await tick(50);
    expect(shape(h)).toEqual(['hist TRUNCATE 0/1E', 'acc UPDATE 0/14', 'hist INSERT 0/14', 'acc UPDATE 0/19']);

    await h.capture.snapshots.keylessDone('t');
    await waitFor('the transaction after the cut', () => h.published.length === 6, 5000, 1);
    expect(shape(h).slice(4)).toEqual(['acc UPDATE 0/28', 'hist INSERT 0/28']);
    await h.close();
  });

  it('lets a transaction that did not change the keyless table go on meanwhile', async () => {
    const h = new CaptureHarness({ wholeTransactions: true });
    h.feed(1n, pgo.relation(ACC));
    h.feed(1n, pgo.relation(HIST));
    h.capture.snapshots.keylessCut(SPEC, { token: 't', lsn: 30n, xid: 9 });
    accountOnly(h, 40n, 3);
    accountOnly(h, 50n, 4);
    await waitFor('the account-only transactions', () => h.published.length === 3, 5000, 1);
    expect(shape(h)).toEqual(['hist TRUNCATE 0/1E', 'acc UPDATE 0/28', 'acc UPDATE 0/32']);
    await waitFor('their position', () => h.capture.confirmedLsn >= 51n, 5000, 1);
    transfer(h, 60n, 5);
    accountOnly(h, 70n, 6);
    await tick(50);
    expect(h.published).toHaveLength(3);
    await h.capture.snapshots.keylessDone('t');
    await waitFor('the rest', () => h.published.length === 6, 5000, 1);
    expect(shape(h).slice(3)).toEqual(['acc UPDATE 0/3C', 'hist INSERT 0/3C', 'acc UPDATE 0/46']);
    await h.close();
  });

  it('replays a transaction streamed before its commit only once no hold may take part of it', async () => {
    const h = new CaptureHarness({ wholeTransactions: true });
    h.feed(1n, pgo.relation(ACC));
    h.feed(1n, pgo.relation(HIST));
    h.capture.snapshots.keylessCut(SPEC, { token: 't', lsn: 30n, xid: 9 });
    h.feed(31n, pgo.streamStart(600, true));
    h.feed(32n, pgo.update(1, ['1', '5'], undefined, 600));
    h.feed(33n, pgo.insert(2, ['1', '5'], 600));
    h.feed(34n, pgo.streamStop());
    h.feed(40n, pgo.streamCommit(600, 40n, 41n));
    accountOnly(h, 50n, 4);
    await tick(50);
    expect(shape(h)).toEqual(['hist TRUNCATE 0/1E']);
    await h.capture.snapshots.keylessDone('t');
    await waitFor('the streamed transaction and the next', () => h.published.length === 4, 5000, 1);
    expect(shape(h).slice(1)).toEqual(['acc UPDATE 0/28', 'hist INSERT 0/28', 'acc UPDATE 0/32']);
    await h.close();
  });

  it('keeps no more of a large open transaction committed after the cut than its window: reading stops instead', async () => {
    // Not streamed (protocol 1, PostgreSQL 13, or a high logical_decoding_work_mem): a
    // transaction's changes all arrive after its commit. Kept whole in memory until its commit
    // they were 1.6 GB of capture's heap for 1M rows (eventual: 262 MB).
    const h = new CaptureHarness({ wholeTransactions: true, batchSize: 10, maxInFlight: 2 });
    h.feed(1n, pgo.relation(ACC));
    h.feed(1n, pgo.relation(HIST));
    h.capture.snapshots.keylessCut(SPEC, { token: 't', lsn: 30n, xid: 9 });
    // Committed before the cut: nothing of it can be held, it goes on however large.
    h.feed(31n, pgo.begin(20n, 2));
    for (let i = 0; i < 50; i++) h.feed(32n + BigInt(i), pgo.update(1, [String(i), '1']));
    h.feed(90n, pgo.commit(20n, 21n));
    await waitFor('the transaction before the cut', () => h.published.length === 51, 5000, 1);
    expect(h.paused).toBe(false);

    // Committed after it: its tables are unknown until its commit, so reading stops once
    // the window's worth of it is kept.
    let fedWhilePaused = 0;
    h.feed(100n, pgo.begin(1000n, 3));
    for (let i = 0; i < 100; i++) {
      if (h.paused) fedWhilePaused++;
      h.feed(101n + BigInt(i), pgo.update(1, [String(i), '2']));
    }
    h.feed(400n, pgo.insert(2, ['1', '2']));
    h.feed(1000n, pgo.commit(1000n, 1001n));
    await tick(50);
    expect(fedWhilePaused).toBeGreaterThanOrEqual(75);
    expect(h.published).toHaveLength(51);

    await h.capture.snapshots.keylessDone('t');
    await waitFor('the large transaction, whole, after the rows', () => h.published.length === 152, 5000, 1);
    expect(h.paused).toBe(false);
    expect(shape(h).slice(51, 53)).toEqual(['acc UPDATE 0/3E8', 'acc UPDATE 0/3E8']);
    expect(shape(h)[151]).toBe('hist INSERT 0/3E8');
    await waitFor('its position', () => h.capture.confirmedLsn >= 1001n, 5000, 1);
    await h.close();
  });

  it('under eventual consistency, other tables go on while the keyless table waits', async () => {
    const h = new CaptureHarness();
    h.feed(1n, pgo.relation(ACC));
    h.feed(1n, pgo.relation(HIST));
    h.capture.snapshots.keylessCut(SPEC, { token: 't', lsn: 30n, xid: 9 });
    transfer(h, 40n, 3);
    accountOnly(h, 50n, 4);
    await waitFor('the account changes', () => h.published.length === 3, 5000, 1);
    expect(shape(h)).toEqual(['hist TRUNCATE 0/1E', 'acc UPDATE 0/28', 'acc UPDATE 0/32']);
    await h.capture.snapshots.keylessDone('t');
    await waitFor('the held history row', () => h.published.length === 4, 5000, 1);
    expect(shape(h)[3]).toBe('hist INSERT 0/28');
    await h.close();
  });
});
