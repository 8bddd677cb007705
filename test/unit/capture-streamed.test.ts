import { describe, expect, it } from 'vitest';
import { CaptureHarness, tick } from '../helpers/capture-harness.js';
import { waitFor } from '../helpers/wait.js';
import { pgo, type RelationSpec } from '../helpers/pgoutput-encode.js';

const T1: RelationSpec = { id: 1, schema: 'public', name: 't1', columns: [{ name: 'id', key: true }, { name: 'a' }, { name: 'b' }, { name: 'c' }] };
/** t1 after `ALTER TABLE t1 DROP COLUMN b`. */
const T1_DROPPED: RelationSpec = { id: 1, schema: 'public', name: 't1', columns: [{ name: 'id', key: true }, { name: 'a' }, { name: 'c' }] };
const OTHER: RelationSpec = { id: 2, schema: 'public', name: 'other', columns: [{ name: 'id', key: true }] };

const rows = (events: { table: string; op: string; payload: unknown }[]): string[] => events.map((e) => `${e.table} ${e.op} ${JSON.stringify(e.payload)}`);

describe('capture: a transaction streamed before its commit', () => {
  it('decodes each spilled change with the definition it was written with, even after a DDL inside the transaction (F2)', async () => {
    const h = new CaptureHarness();
    h.feed(10n, pgo.begin(20n, 500));
    h.feed(11n, pgo.relation(T1));
    h.feed(12n, pgo.insert(1, ['1', 'a1', 'b1', 'c1']));
    h.feed(20n, pgo.commit(20n, 21n));
    // BEGIN; UPDATE t1 SET a = 'upd'; ALTER TABLE t1 DROP COLUMN b; UPDATE t1 SET a = 'last'; COMMIT;
    h.feed(30n, pgo.streamStart(600, true));
    h.feed(31n, pgo.relation(T1, 600));
    h.feed(32n, pgo.update(1, ['1', 'upd', 'b1', 'c1'], undefined, 600));
    h.feed(33n, pgo.relation(T1_DROPPED, 600));
    h.feed(34n, pgo.update(1, ['1', 'last', 'c1'], undefined, 600));
    h.feed(35n, pgo.streamStop());
    h.feed(40n, pgo.streamCommit(600, 40n, 41n));
    await waitFor('the three changes published', () => h.published.length >= 3, 5000, 1);
    expect(rows(h.published)).toEqual([
      't1 INSERT {"id":"1","a":"a1","b":"b1","c":"c1"}',
      't1 UPDATE {"id":"1","a":"upd","b":"b1","c":"c1"}',
      't1 UPDATE {"id":"1","a":"last","c":"c1"}',
    ]);
    expect(h.published.map((e) => e._schema_version)).toEqual([1, 1, 2]);
    await h.close();
  });

  it('keeps the main flow on its own definitions while a streamed transaction has newer ones, and adopts them at its commit', async () => {
    const h = new CaptureHarness();
    h.feed(10n, pgo.begin(20n, 500));
    h.feed(11n, pgo.relation(T1));
    h.feed(12n, pgo.insert(1, ['1', 'a1', 'b1', 'c1']));
    h.feed(20n, pgo.commit(20n, 21n));
    h.feed(30n, pgo.streamStart(600, true));
    h.feed(33n, pgo.relation(T1_DROPPED, 600));
    h.feed(34n, pgo.update(1, ['1', 'x', 'c1'], undefined, 600));
    h.feed(35n, pgo.streamStop());
    // A transaction committing meanwhile still has column b: pgoutput sends it no new Relation.
    h.feed(36n, pgo.begin(37n, 501));
    h.feed(36n, pgo.insert(1, ['2', 'a2', 'b2', 'c2']));
    h.feed(37n, pgo.commit(37n, 38n));
    h.feed(40n, pgo.streamCommit(600, 40n, 41n));
    // After the commit the server counts the streamed definition as the client's.
    h.feed(50n, pgo.begin(51n, 502));
    h.feed(50n, pgo.insert(1, ['3', 'a3', 'c3']));
    h.feed(51n, pgo.commit(51n, 52n));
    await waitFor('the four changes published', () => h.published.length >= 4, 5000, 1);
    expect(rows(h.published)).toEqual([
      't1 INSERT {"id":"1","a":"a1","b":"b1","c":"c1"}',
      't1 INSERT {"id":"2","a":"a2","b":"b2","c":"c2"}',
      't1 UPDATE {"id":"1","a":"x","c":"c1"}',
      't1 INSERT {"id":"3","a":"a3","c":"c3"}',
    ]);
    await h.close();
  });

  it('keeps a definition first sent inside a subtransaction that rolled back', async () => {
    const g = new CaptureHarness();
    g.feed(30n, pgo.streamStart(600, true));
    g.feed(31n, pgo.relation(OTHER, 600));
    g.feed(32n, pgo.insert(2, ['1'], 600));
    // SAVEPOINT s; first change to t1, which sends its definition; ROLLBACK TO s;
    g.feed(33n, pgo.relation(T1, 601));
    g.feed(34n, pgo.insert(1, ['1', 'a', 'b', 'c'], 601));
    g.feed(35n, pgo.streamAbort(600, 601));
    // The definition is not sent again for this transaction.
    g.feed(36n, pgo.insert(1, ['2', 'a', 'b', 'c'], 600));
    g.feed(37n, pgo.streamStop());
    g.feed(40n, pgo.streamCommit(600, 40n, 41n));
    await waitFor('the two changes published', () => g.published.length >= 2, 5000, 1);
    expect(rows(g.published)).toEqual(['other INSERT {"id":"1"}', 't1 INSERT {"id":"2","a":"a","b":"b","c":"c"}']);
    await g.close();
  });

  it('a stop during the replay confirms nothing past the abandoned transaction, even with later commits already received (F1)', async () => {
    const h = new CaptureHarness({ manual: true });
    h.feed(5n, pgo.begin(6n, 500));
    h.feed(5n, pgo.relation(T1));
    h.feed(5n, pgo.relation(OTHER));
    h.feed(6n, pgo.commit(6n, 7n));
    await waitFor('the first transaction confirmed', () => h.capture.confirmedLsn === 7n, 5000, 1);
    h.feed(10n, pgo.streamStart(600, true));
    for (let i = 1; i <= 300; i++) h.feed(10n + BigInt(i), pgo.insert(1, [String(i), 'a', 'b', 'c'], 600));
    h.feed(400n, pgo.streamStop());
    // The replay starts here and yields to the event loop after 256 changes...
    h.feed(500n, pgo.streamCommit(600, 500n, 501n));
    // ...while the next transaction, which shared a TCP read with the Stream Commit, waits.
    h.feed(510n, pgo.begin(520n, 700));
    h.feed(511n, pgo.insert(2, ['later']));
    h.feed(520n, pgo.commit(520n, 521n));
    // SIGTERM now; every publish is acknowledged, during and after the stop, a little slower
    // than capture's batch deadline (as a broker's fsync would be).
    const releaser = setInterval(() => h.release(), 10);
    await h.close(false);
    await tick(40);
    clearInterval(releaser);
    expect(h.capture.confirmedLsn).toBeLessThan(500n);
    expect(h.acknowledged.every((l) => l < 500n)).toBe(true);
    expect(h.published.some((e) => e.payload?.id === 'later')).toBe(false);
  });
});
